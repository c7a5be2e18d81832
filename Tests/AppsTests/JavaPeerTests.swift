import Foundation
import Testing
import TestSupport

/// Java's own TLS stack (JSSE), limited to TLS 1.3, against our hello-server and hello-client. JSSE
/// differs from OpenSSL and GnuTLS peers in two ways that broke the GnuTLS backend: its TLS 1.3-only
/// ClientHello carries neither renegotiation_info nor its SCSV, and on close() it sends user_canceled
/// before close_notify. The peer's source is Tests/Peers/java/TLSPeer.java, compiled once per run (OutsidePeers.java).
@Suite("Java peer", .serialized, .enabled(if: OutsidePeers.java.isAvailable, "no JDK: javac and java are not on the PATH"))
struct JavaPeerTests {
    static let backends = ["openssl", "gnutls"]
    static let password = "java-peer"

    @Test("A Java client limited to TLS 1.3 reaches our hello-server", arguments: backends)
    func javaClient(backend: String) throws {
        let pki = try PKIFixture()
        let bundle = try pkcs12(pki, "client")
        let server = try ServerProcess(try mtlsExecutable(), ["hello-server", "--backend", backend, "--pki", pki.path,
                                                          "--listen", "127.0.0.1:0", "--loops", "1"])
        defer { server.stop() }
        let client = try OutsidePeers.java.run(["client", "localhost", "\(server.port)", bundle, Self.password, pki.file("ca.pem")])
        #expect(client.status == 0, "java client: \(client.output)\nserver: \(server.log)")
        #expect(client.output.contains("protocol: TLSv1.3"), "\(client.output)")
        #expect(client.output.contains("hello, client"), "\(client.output)")
    }

    @Test("Our hello-client takes the whole answer of a Java server that closes with user_canceled", arguments: backends)
    func javaServer(backend: String) throws {
        let pki = try PKIFixture()
        let bundle = try pkcs12(pki, "server")
        let server = try OutsidePeers.java.start(["server", "0", bundle, Self.password, pki.file("ca.pem")])
        defer { server.stop() }
        let client = try mtls("hello-client", "--backend", backend, "--pki", pki.path,
                              "--url", "https://localhost:\(server.port)/hello")
        #expect(client.status == 0, "hello-client: \(client.output)\njava server: \(server.log)")
        #expect(client.output.contains("hello from java, CN=client"), "\(client.output)")
        #expect(client.output.contains("TLS 1.3"), "\(client.output)")
        #expect(server.log.contains("answered TLSv1.3 request"), "java server: \(server.log)")
    }

    /// `NAME.pem` and `NAME.key` of `pki` as a PKCS#12 bundle (what JSSE loads most simply).
    private func pkcs12(_ pki: PKIFixture, _ name: String) throws -> String {
        let bundle = pki.file("\(name).p12")
        let result = try mtls("pki", "pkcs12", "--cert", pki.file("\(name).pem"), "--key", pki.file("\(name).key"),
                              "--out", bundle, "--password", Self.password)
        guard result.status == 0 else { throw ToolError("pki pkcs12 failed: \(result.output)") }
        return bundle
    }
}
