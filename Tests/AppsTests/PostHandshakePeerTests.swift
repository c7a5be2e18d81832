import Foundation
import Testing
import TestSupport
import TLSContract

/// What a peer may send after the handshake besides data, from outside clients in C against our
/// echo-server, each backend: TLS 1.3 KeyUpdates (OpenSSL's client, Tests/Peers/c/key_update_client.c)
/// up to the contract's limit (`PeerKeyUpdateLimit`: 8 in a second, GnuTLS applying it inside the library
/// and the OpenSSL backend counting for itself), and TLS 1.2 warning alerts (GnuTLS's client,
/// Tests/Peers/c/warning_alert_client.c) within `PeerWarningAlerts` (4 in a row; OpenSSL's own rule,
/// counted by the GnuTLS backend). Past either, the same error from both backends, in the same words.
@Suite("Post-handshake messages from outside peers",
       .enabled(if: OutsidePeers.keyUpdateClient.isAvailable, "clang is not on the PATH"))
struct PostHandshakePeerTests {
    /// A fresh PKI and our echo-server on `backend`, one loop, on a free port.
    private func echoServer(_ backend: String) throws -> (PKIFixture, ServerProcess) {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), ["echo-server", "--backend", backend, "--pki", pki.path,
                                                            "--listen", "127.0.0.1:0", "--loops", "1"])
        return (pki, server)
    }

    @Test("Key updates within the limit keep the connection; the ninth in a second ends it, in the same words on both backends",
          arguments: ["openssl", "gnutls"])
    func keyUpdateLimit(backend: String) throws {
        let (pki, server) = try echoServer(backend)
        defer { server.stop() }
        func client(_ bursts: String, _ type: String) throws -> BoundedResult {
            try OutsidePeers.keyUpdateClient.run(["\(server.port)", pki.file("ca.pem"), pki.file("client.pem"),
                                                  pki.file("client.key"), bursts, type])
        }

        // Eight, then eight more once the window has passed: every one answered, the echo intact.
        for type in ["requested", "not-requested"] {
            let within = try client("8,8", type)
            #expect(within.status == 0 && within.output.contains("echoed: ping"),
                    "8 + 8 key updates (\(type)): \(within.output)\nserver: \(server.log)")
        }
        // Nine back to back: the server ends the connection instead of echoing.
        for type in ["requested", "not-requested"] {
            let flood = try client("9", type)
            #expect(flood.status == 3, "9 key updates (\(type)) were not refused: \(flood.output)")
            #expect(!flood.output.contains("echoed"), "\(flood.output)")
        }
        let refusal = "the peer sent data that is not valid TLS [" + PeerKeyUpdateLimit.refusal
        #expect(eventually(seconds: 5) { server.log.components(separatedBy: refusal).count - 1 == 2 },
                "the server did not log both refusals as \"\(refusal)\": \(server.log)")
        // The refusals cost the flooding peers only: the next client is served.
        let after = try client("1", "requested")
        #expect(after.status == 0 && after.output.contains("echoed: ping"), "\(after.output)\nserver: \(server.log)")
    }

    @Test("Four TLS 1.2 warnings in a row pass; the fifth, or a no_renegotiation, ends the connection with OpenSSL's alert on both backends",
          arguments: ["openssl", "gnutls"])
    func warningAlerts(backend: String) throws {
        let (pki, server) = try echoServer(backend)
        defer { server.stop() }
        func client(_ bursts: String, alert: TLSAlert) throws -> BoundedResult {
            try OutsidePeers.warningAlertClient.run(["\(server.port)", pki.file("ca.pem"), pki.file("client.pem"),
                                                     pki.file("client.key"), bursts, "\(alert.code)"])
        }

        let within = try client("4,4,4", alert: .unrecognizedName)
        #expect(within.status == 0 && within.output.contains("echoed 3 times"), "\(within.output)\nserver: \(server.log)")
        let flood = try client("5", alert: .unrecognizedName)
        #expect(flood.status == 3 && flood.output.contains("after 5 warnings: Unexpected message"), "\(flood.output)")
        let noRenegotiation = try client("1", alert: .noRenegotiation)
        #expect(noRenegotiation.status == 3 && noRenegotiation.output.contains("after 1 warnings: Handshake failed"),
                "\(noRenegotiation.output)")
        for refusal in [PeerWarningAlerts.floodRefusal, PeerWarningAlerts.noRenegotiationRefusal] {
            let line = "the peer sent data that is not valid TLS [" + refusal
            #expect(eventually(seconds: 5) { server.log.contains(line) }, "no \"\(line)\" in the server's log: \(server.log)")
        }
    }
}
