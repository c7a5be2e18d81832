/*
 * A TLS 1.2 client on the system's GnuTLS that sends warning alerts after the handshake, for the
 * warning-alert tests (Tests/AppsTests/PostHandshakePeerTests.swift). No other peer here can send a
 * warning alert of its choosing; gnutls_alert_send can.
 *
 * Usage: warning_alert_client PORT CA CERT KEY BURSTS ALERT
 *   BURSTS: comma-separated counts, e.g. "4,4": each burst's warnings go out back to back, then
 *   "ping\n", whose echo is read before the next burst. ALERT: the alert's number (112:
 *   unrecognized_name, 100: no_renegotiation).
 * Prints "echoed N times" and exits 0, or "closed by the server after N warnings: ALERT NAME" and
 * exits 3 when the server ends the connection instead. Other failures: 1.
 */
#include <gnutls/gnutls.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what, int rc) {
    printf("failed: %s: %s\n", what, gnutls_strerror(rc));
    return 1;
}

static int closed(gnutls_session_t session, int total, int rc) {
    const char *alert = rc == GNUTLS_E_FATAL_ALERT_RECEIVED ? gnutls_alert_get_name(gnutls_alert_get(session)) : gnutls_strerror(rc);
    printf("closed by the server after %d warnings: %s\n", total, alert ? alert : "?");
    return 3;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: warning_alert_client PORT CA CERT KEY BURSTS ALERT\n");
        return 64;
    }
    gnutls_certificate_credentials_t credentials;
    gnutls_session_t session;
    int rc;
    if ((rc = gnutls_certificate_allocate_credentials(&credentials)) < 0) return fail("credentials", rc);
    if ((rc = gnutls_certificate_set_x509_trust_file(credentials, argv[2], GNUTLS_X509_FMT_PEM)) <= 0) return fail("CA", rc);
    if ((rc = gnutls_certificate_set_x509_key_file(credentials, argv[3], argv[4], GNUTLS_X509_FMT_PEM)) < 0) return fail("key", rc);
    if ((rc = gnutls_init(&session, GNUTLS_CLIENT)) < 0) return fail("init", rc);
    if ((rc = gnutls_priority_set_direct(session, "NORMAL:-VERS-ALL:+VERS-TLS1.2", NULL)) < 0) return fail("priority", rc);
    gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, credentials);
    gnutls_server_name_set(session, GNUTLS_NAME_DNS, "localhost", strlen("localhost"));
    gnutls_session_set_verify_cert(session, "localhost", 0);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0) return fail("connect", 0);
    gnutls_transport_set_int(session, fd);
    do { rc = gnutls_handshake(session); } while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc < 0) return fail("handshake", rc);

    char *bursts = strdup(argv[5]);
    int alert = atoi(argv[6]), total = 0, echoes = 0;
    for (char *count = strtok(bursts, ","); count; count = strtok(NULL, ",")) {
        for (int i = 0; i < atoi(count); i++) {
            if ((rc = gnutls_alert_send(session, GNUTLS_AL_WARNING, (gnutls_alert_description_t)alert)) < 0)
                return closed(session, total, rc);
            total++;
        }
        if ((rc = gnutls_record_send(session, "ping\n", 5)) != 5) return closed(session, total, rc);
        char reply[64];
        do { rc = (int)gnutls_record_recv(session, reply, sizeof reply); } while (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED);
        if (rc <= 0) return closed(session, total, rc);
        echoes++;
    }
    free(bursts);
    printf("echoed %d times\n", echoes);
    gnutls_bye(session, GNUTLS_SHUT_WR);
    return 0;
}
