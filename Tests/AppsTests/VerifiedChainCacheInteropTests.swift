import Foundation
import Testing
import TestSupport

/// The verified-chain cache (VerifiedChainCache) from the wire, with Go crypto/tls as the client:
/// a chain our hello-server has verified skips chain verification when it comes again, and nothing
/// else. An impostor presenting that very chain, but signing its CertificateVerify with another key,
/// reaches the cached chain and is still refused: possession of the key is checked every time.
@Suite("Verified-chain cache, outside client",
       .enabled(if: OutsidePeers.go.isAvailable, "go is not on the PATH (scripts/install-deps installs golang-go)"))
struct VerifiedChainCacheInteropTests {
    @Test("Go reconnects with the same chain and gets in; the same chain signed with another key is refused",
          arguments: ["openssl", "gnutls"], ["1.3", "1.2"])
    func impostorWithCachedChain(backend: String, version: String) throws {
        let pki = try MatrixPKI.get("ecdsa-p256")
        let server = try ServerProcess(try mtlsExecutable(), ["hello-server", "--backend", backend, "--pki", pki.path,
                                                              "--listen", "127.0.0.1:0", "--loops", "1"])
        defer { server.stop() }
        let client = ["client", "-port", "\(server.port)", "-tls", version, "-ca", pki.file("ca.pem"),
                      "-name", "localhost", "-cert", pki.file("client.pem"), "-key", pki.file("client.key")]
        for attempt in 1...2 {
            let result = try OutsidePeers.go.run(client)
            #expect(result.status == 0 && result.output.contains("hello, client"), "attempt \(attempt): \(result)")
        }
        // The server's key: a real key of the same type, just not the one the client certificate names.
        let impostor = try OutsidePeers.go.run(client + ["-sign-with", pki.file("server.key")])
        #expect(impostor.status != 0, "\(impostor)")
        #expect(!impostor.output.contains("hello"), "the impostor got an answer: \(impostor)")
        for _ in 0..<40 where !server.log.contains("handshake failed") { usleep(25_000) }
        #expect(server.log.contains("handshake failed"), "\(server.log)")
        // The refusal cached nothing: the real client still gets in.
        let after = try OutsidePeers.go.run(client)
        #expect(after.status == 0 && after.output.contains("hello, client"), "\(after)")
    }
}
