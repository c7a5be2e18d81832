/*
 * The cryptography a TLS 1.3 mTLS server does per full handshake, timed in each library we link:
 * one ECDSA P-256 signature (its CertificateVerify), one ECDSA P-256 verification (the client's
 * CertificateVerify, never skipped), one X25519 key pair and one X25519 shared secret (the key share).
 * GnuTLS is timed through its own API where it has one (gnutls_privkey_sign_data2,
 * gnutls_pubkey_verify_data2) and through Nettle's curve25519 functions for X25519, which is what
 * GnuTLS 3.7 calls for its key share; OpenSSL through EVP. Same key (the PEM file given), same
 * 130-byte message (the size of a TLS 1.3 CertificateVerify input), rounds interleaved.
 *
 * Built and run by Benchmarks/library-floor.sh; prints one line per operation and library, in µs.
 */
#include <gnutls/gnutls.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <nettle/curve25519.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define OPERATIONS 6
static const char *names[OPERATIONS] = {
    "GnuTLS/Nettle ECDSA P-256 sign", "GnuTLS/Nettle ECDSA P-256 verify", "GnuTLS/Nettle X25519 key pair + shared secret",
    "OpenSSL ECDSA P-256 sign", "OpenSSL ECDSA P-256 verify", "OpenSSL X25519 key pair + shared secret",
};

static void fail(const char *what) {
    fprintf(stderr, "library-floor: %s failed\n", what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: floor KEY.pem [ROUNDS] [ITERATIONS]\n"); return 64; }
    int rounds = argc > 2 ? atoi(argv[2]) : 7, iterations = argc > 3 ? atoi(argv[3]) : 500;
    unsigned char message[130];
    memset(message, 0x20, sizeof message);

    /* GnuTLS: the key through gnutls_privkey, its public half through gnutls_pubkey. */
    gnutls_datum_t pem, data = {message, sizeof message}, gnutlsSignature;
    if (gnutls_load_file(argv[1], &pem) < 0) fail("gnutls_load_file");
    gnutls_privkey_t gnutlsKey;
    gnutls_pubkey_t gnutlsPublic;
    if (gnutls_privkey_init(&gnutlsKey) < 0 || gnutls_privkey_import_x509_raw(gnutlsKey, &pem, GNUTLS_X509_FMT_PEM, NULL, 0) < 0)
        fail("gnutls_privkey_import_x509_raw (an ECDSA P-256 key is needed)");
    if (gnutls_pubkey_init(&gnutlsPublic) < 0 || gnutls_pubkey_import_privkey(gnutlsPublic, gnutlsKey, 0, 0) < 0)
        fail("gnutls_pubkey_import_privkey");
    if (gnutls_privkey_sign_data2(gnutlsKey, GNUTLS_SIGN_ECDSA_SECP256R1_SHA256, 0, &data, &gnutlsSignature) < 0)
        fail("gnutls_privkey_sign_data2");

    /* OpenSSL: the same key through EVP. */
    FILE *file = fopen(argv[1], "r");
    if (!file) fail("fopen");
    EVP_PKEY *opensslKey = PEM_read_PrivateKey(file, NULL, NULL, NULL);
    fclose(file);
    if (!opensslKey) fail("PEM_read_PrivateKey");
    unsigned char opensslSignature[128];
    size_t opensslSignatureLength = sizeof opensslSignature;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, opensslKey) != 1 ||
        EVP_DigestSign(md, opensslSignature, &opensslSignatureLength, message, sizeof message) != 1)
        fail("EVP_DigestSign");
    EVP_PKEY *peerX25519 = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    uint8_t peerPublic[32], scalar[32], point[32], secret[32];
    size_t peerPublicLength = sizeof peerPublic;
    if (!peerX25519 || EVP_PKEY_get_raw_public_key(peerX25519, peerPublic, &peerPublicLength) != 1) fail("X25519 peer");

    double samples[OPERATIONS][64];
    if (rounds > 64) rounds = 64;
    for (int round = 0; round < rounds; round++) {
        for (int operation = 0; operation < OPERATIONS; operation++) {
            double start = now();
            for (int i = 0; i < iterations; i++) {
                switch (operation) {
                case 0: {
                    gnutls_datum_t signature;
                    if (gnutls_privkey_sign_data2(gnutlsKey, GNUTLS_SIGN_ECDSA_SECP256R1_SHA256, 0, &data, &signature) < 0) fail("sign");
                    gnutls_free(signature.data);
                    break;
                }
                case 1:
                    if (gnutls_pubkey_verify_data2(gnutlsPublic, GNUTLS_SIGN_ECDSA_SECP256R1_SHA256, 0, &data, &gnutlsSignature) < 0) fail("verify");
                    break;
                case 2:
                    /* What GnuTLS 3.7 does for an X25519 key share: a fresh scalar, its public point, the shared secret. */
                    if (gnutls_rnd(GNUTLS_RND_KEY, scalar, sizeof scalar) < 0) fail("gnutls_rnd");
                    curve25519_mul_g(point, scalar);
                    curve25519_mul(secret, scalar, peerPublic);
                    break;
                case 3: {
                    size_t length = sizeof opensslSignature;
                    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, opensslKey) != 1 ||
                        EVP_DigestSign(md, opensslSignature, &length, message, sizeof message) != 1) fail("EVP_DigestSign");
                    opensslSignatureLength = length;
                    break;
                }
                case 4:
                    if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, opensslKey) != 1 ||
                        EVP_DigestVerify(md, opensslSignature, opensslSignatureLength, message, sizeof message) != 1) fail("EVP_DigestVerify");
                    break;
                case 5: {
                    EVP_PKEY *ours = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
                    EVP_PKEY_CTX *derive = EVP_PKEY_CTX_new(ours, NULL);
                    size_t length = sizeof secret;
                    if (!ours || !derive || EVP_PKEY_derive_init(derive) != 1 || EVP_PKEY_derive_set_peer(derive, peerX25519) != 1 ||
                        EVP_PKEY_derive(derive, secret, &length) != 1) fail("X25519 derive");
                    EVP_PKEY_CTX_free(derive);
                    EVP_PKEY_free(ours);
                    break;
                }
                }
            }
            samples[operation][round] = (now() - start) / iterations * 1e6;
        }
    }
    for (int operation = 0; operation < OPERATIONS; operation++) {
        qsort(samples[operation], rounds, sizeof(double), compare);
        printf("%-58s %7.1f µs (%.1f-%.1f)\n", names[operation], samples[operation][rounds / 2],
               samples[operation][0], samples[operation][rounds - 1]);
    }
    gnutls_free(gnutlsSignature.data);
    gnutls_free(pem.data);
    gnutls_pubkey_deinit(gnutlsPublic);
    gnutls_privkey_deinit(gnutlsKey);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(opensslKey);
    EVP_PKEY_free(peerX25519);
    return 0;
}
