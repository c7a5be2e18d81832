import Foundation
import Testing
import TestSupport
import TLSContract

/// TLS 1.3 KeyUpdates from an outside client (OpenSSL's, Tests/Peers/c/key_update_client.c) against our
/// echo-server: a peer may update its keys, asking for ours or not, up to the contract's limit
/// (`PeerKeyUpdateLimit`: 8 in a second); the ninth ends its connection with the same error from both
/// backends, GnuTLS applying the limit inside the library and the OpenSSL backend counting for itself.
@Suite("Key updates from an outside peer",
       .enabled(if: OutsidePeers.keyUpdateClient.isAvailable, "clang is not on the PATH"))
struct KeyUpdatePeerTests {
    @Test("Key updates within the limit keep the connection; the ninth in a second ends it, in the same words on both backends",
          arguments: ["openssl", "gnutls"])
    func keyUpdateLimit(backend: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), ["echo-server", "--backend", backend, "--pki", pki.path,
                                                            "--listen", "127.0.0.1:0", "--loops", "1"])
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
}
