/*
 * A TLS 1.3 client on the system's OpenSSL that updates its keys in bursts, for the key-update tests
 * (Tests/AppsTests/PostHandshakePeerTests.swift). Neither Python's ssl, Go, Node nor the JDK lets a program
 * send KeyUpdate messages when it wants; OpenSSL's SSL_key_update does.
 *
 * Usage: key_update_client PORT CA CERT KEY BURSTS [requested|not-requested]
 *   BURSTS: comma-separated counts, e.g. "8,8": each burst's KeyUpdates go out back to back, each in
 *   its own record and flushed, with 1.2 s between bursts (longer than the limit's 1 s window).
 * After the last burst it writes "ping\n" and reads the echo. Prints "echoed: ping" and exits 0, or
 * "closed by the server" and exits 3 when the server ends the connection instead. Other failures: 1.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what) {
    printf("failed: %s\n", what);
    ERR_print_errors_fp(stdout);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: key_update_client PORT CA CERT KEY BURSTS [requested|not-requested]\n");
        return 64;
    }
    int type = (argc > 6 && strcmp(argv[6], "not-requested") == 0) ? SSL_KEY_UPDATE_NOT_REQUESTED
                                                                  : SSL_KEY_UPDATE_REQUESTED;
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    if (!context || !SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION)) return fail("context");
    if (SSL_CTX_load_verify_locations(context, argv[2], NULL) != 1) return fail("CA");
    if (SSL_CTX_use_certificate_chain_file(context, argv[3]) != 1) return fail("certificate");
    if (SSL_CTX_use_PrivateKey_file(context, argv[4], SSL_FILETYPE_PEM) != 1) return fail("key");
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, NULL);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0) return fail("connect");
    SSL *ssl = SSL_new(context);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (!SSL_set1_host(ssl, "localhost")) return fail("host");
    if (SSL_connect(ssl) != 1) return fail("handshake");

    char *bursts = strdup(argv[5]);
    int total = 0, first = 1;
    for (char *count = strtok(bursts, ","); count; count = strtok(NULL, ",")) {
        if (!first) usleep(1200 * 1000);
        first = 0;
        for (int i = 0; i < atoi(count); i++) {
            /* SSL_key_update only schedules the message; SSL_do_handshake sends it now. */
            if (SSL_key_update(ssl, type) != 1 || SSL_do_handshake(ssl) != 1) {
                printf("closed by the server after %d key updates\n", total);
                return 3;
            }
            total++;
        }
    }
    free(bursts);
    char reply[64];
    if (SSL_write(ssl, "ping\n", 5) != 5) {
        printf("closed by the server after %d key updates\n", total);
        return 3;
    }
    int received = SSL_read(ssl, reply, sizeof reply - 1);
    if (received <= 0) {
        printf("closed by the server after %d key updates (read: SSL error %d)\n", total, SSL_get_error(ssl, received));
        return 3;
    }
    reply[received] = 0;
    printf("echoed: %s", reply);
    SSL_shutdown(ssl);
    return 0;
}
