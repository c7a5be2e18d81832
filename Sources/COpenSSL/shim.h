#ifndef SWIFT_MTLS_COPENSSL_SHIM_H
#define SWIFT_MTLS_COPENSSL_SHIM_H
// OpenSSL 3 through Swift. The static-inline functions below wrap macros (and macro-built
// stack accessors) that Swift cannot call directly.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/objects.h>
#include <openssl/opensslv.h>

static inline int mtls_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}
static inline int mtls_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long mtls_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
static inline int mtls_SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *list) {
    return (int)SSL_CTX_set1_groups_list(ctx, list);
}
static inline int mtls_SSL_CTX_add1_chain_cert(SSL_CTX *ctx, X509 *cert) {
    return (int)SSL_CTX_add1_chain_cert(ctx, cert);
}
static inline int mtls_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}
static inline int mtls_SSL_get_negotiated_group(SSL *ssl) { return (int)SSL_get_negotiated_group(ssl); }
/* The session's own BIO (OpenSSLSessionBIO.swift). */
static inline int mtls_BIO_TYPE_SOURCE_SINK(void) { return BIO_TYPE_SOURCE_SINK; }
static inline void mtls_BIO_clear_retry_flags(BIO *bio) { BIO_clear_retry_flags(bio); }
static inline void mtls_BIO_set_retry_read(BIO *bio) { BIO_set_retry_read(bio); }
static inline long mtls_SSL_CTX_sess_set_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}

// Session resumption (see OpenSSLContext.configureResumption).
static inline long mtls_SSL_SESS_CACHE_OFF(void) { return SSL_SESS_CACHE_OFF; }
static inline long mtls_SSL_SESS_CACHE_CLIENT_ONLY_EXTERNAL(void) {
    return SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE;
}
/* Server sessions through the new/get callbacks only; no internal store to flush either. */
static inline long mtls_SSL_SESS_CACHE_SERVER_EXTERNAL(void) {
    return SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL | SSL_SESS_CACHE_NO_AUTO_CLEAR;
}

static inline uint64_t mtls_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t mtls_SSL_OP_NO_COMPRESSION(void) { return SSL_OP_NO_COMPRESSION; }
static inline uint64_t mtls_SSL_OP_CIPHER_SERVER_PREFERENCE(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
static inline uint64_t mtls_SSL_OP_NO_TICKET(void) { return SSL_OP_NO_TICKET; }
static inline long mtls_SSL_MODE_RELEASE_BUFFERS(void) { return SSL_MODE_RELEASE_BUFFERS; }
static inline long mtls_SSL_MODE_NO_AUTO_CHAIN(void) { return SSL_MODE_NO_AUTO_CHAIN; }

static inline int mtls_sk_X509_num(const STACK_OF(X509) *stack) { return sk_X509_num(stack); }
static inline X509 *mtls_sk_X509_value(const STACK_OF(X509) *stack, int index) { return sk_X509_value(stack, index); }
static inline void mtls_sk_X509_pop_free(STACK_OF(X509) *stack) { sk_X509_pop_free(stack, X509_free); }

static inline int mtls_ERR_GET_LIB(unsigned long error) { return ERR_GET_LIB(error); }
static inline int mtls_ERR_GET_REASON(unsigned long error) { return ERR_GET_REASON(error); }

static inline int mtls_SSL_set_app_data(SSL *ssl, void *data) { return SSL_set_app_data(ssl, data); }
static inline void *mtls_SSL_get_app_data(const SSL *ssl) { return SSL_get_app_data(ssl); }

#include <openssl/rand.h>
#include <openssl/core_names.h>
#include <string.h>
#include <time.h>

/* Session-ticket keys for one server context, rotated by age. OpenSSL 3.0 draws one random key per
 * SSL_CTX and never changes it; with this callback a long-lived server moves to a fresh key every
 * `rotate_seconds`, and still accepts tickets sealed under the previous key (renewing them).
 * The AES cipher is fetched once here instead of once per ticket. Owned by the Swift context, which
 * frees it with mtls_ticket_keys_free after SSL_CTX_free. */
typedef struct {
    unsigned char name[16];
    unsigned char aes_key[32];
    unsigned char hmac_key[32];
    time_t created;
} mtls_ticket_key;

typedef struct {
    mtls_ticket_key current;
    mtls_ticket_key previous;
    int has_previous;
    long rotate_seconds;
    EVP_CIPHER *cipher;
    CRYPTO_RWLOCK *lock;
} mtls_ticket_keys;

static inline int mtls_ticket_key_generate(mtls_ticket_key *key) {
    key->created = time(NULL);
    return RAND_bytes(key->name, sizeof key->name) == 1 && RAND_bytes(key->aes_key, sizeof key->aes_key) == 1
        && RAND_bytes(key->hmac_key, sizeof key->hmac_key) == 1;
}

static inline void mtls_ticket_keys_free(mtls_ticket_keys *keys) {
    if (keys == NULL) return;
    EVP_CIPHER_free(keys->cipher);
    CRYPTO_THREAD_lock_free(keys->lock);
    OPENSSL_clear_free(keys, sizeof *keys);
}

static inline mtls_ticket_keys *mtls_ticket_keys_new(long rotate_seconds) {
    mtls_ticket_keys *keys = OPENSSL_zalloc(sizeof *keys);
    if (keys == NULL) return NULL;
    keys->rotate_seconds = rotate_seconds;
    keys->cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    keys->lock = CRYPTO_THREAD_lock_new();
    if (keys->cipher == NULL || keys->lock == NULL || !mtls_ticket_key_generate(&keys->current)) {
        mtls_ticket_keys_free(keys);
        return NULL;
    }
    return keys;
}

/* Ages the keys: the current one becomes the previous one once it is older than rotate_seconds. */
static inline void mtls_ticket_keys_rotate_if_due(mtls_ticket_keys *keys) {
    if (time(NULL) - keys->current.created < keys->rotate_seconds) return;
    mtls_ticket_key fresh;
    if (!mtls_ticket_key_generate(&fresh)) return;
    keys->previous = keys->current;
    keys->has_previous = 1;
    keys->current = fresh;
    OPENSSL_cleanse(&fresh, sizeof fresh);
}

static inline int mtls_ticket_mac_init(EVP_MAC_CTX *hctx, unsigned char *hmac_key) {
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, hmac_key, 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* OpenSSL's ticket callback: 1 = use (encrypt) or accept (decrypt), 2 = accept and renew,
 * 0 = unknown key (full handshake), -1 = error.
 * Our servers seal only TLS 1.2 tickets (TLS 1.3 ones are stateful, see OpenSSLServerSessionStore),
 * and a TLS 1.2 ticket under the current key stays in use. Should a TLS 1.3 ticket come here, it
 * is renewed: a TLS 1.3 server issues a ticket on a resumed handshake only if the callback asks for
 * renewal, and a TLS 1.3 client uses each ticket once (RFC 8446, C.4), so without renewal every
 * other reconnect of such a client would be a full handshake (OpenSSL renews them itself when no
 * callback is set). */
static inline int mtls_ticket_key_callback(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                                           EVP_CIPHER_CTX *cipher_ctx, EVP_MAC_CTX *hctx, int encrypt) {
    mtls_ticket_keys *keys = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (keys == NULL) return -1;
    mtls_ticket_key key;
    int result = 0;
    if (!CRYPTO_THREAD_write_lock(keys->lock)) return -1;
    mtls_ticket_keys_rotate_if_due(keys);
    if (encrypt) {
        key = keys->current;
        result = 1;
    } else if (memcmp(key_name, keys->current.name, 16) == 0) {
        key = keys->current;
        result = SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
    } else if (keys->has_previous && memcmp(key_name, keys->previous.name, 16) == 0) {
        key = keys->previous;
        result = 2;
    }
    CRYPTO_THREAD_unlock(keys->lock);
    if (result == 0) return 0;
    if (encrypt) {
        memcpy(key_name, key.name, 16);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(keys->cipher)) != 1
            || EVP_EncryptInit_ex(cipher_ctx, keys->cipher, NULL, key.aes_key, iv) != 1) result = -1;
    } else if (EVP_DecryptInit_ex(cipher_ctx, keys->cipher, NULL, key.aes_key, iv) != 1) {
        result = -1;
    }
    if (result > 0 && mtls_ticket_mac_init(hctx, key.hmac_key) != 1) result = -1;
    OPENSSL_cleanse(&key, sizeof key);
    return result;
}

/* Makes the current key due for rotation at the next ticket (for tests and for operators). */
static inline void mtls_ticket_keys_expire(mtls_ticket_keys *keys) {
    if (CRYPTO_THREAD_write_lock(keys->lock)) {
        keys->current.created = 0;
        CRYPTO_THREAD_unlock(keys->lock);
    }
}

static inline int mtls_SSL_CTX_use_ticket_keys(SSL_CTX *ctx, mtls_ticket_keys *keys) {
    if (SSL_CTX_set_app_data(ctx, keys) != 1) return 0;
    return (int)SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, mtls_ticket_key_callback);
}

#endif
