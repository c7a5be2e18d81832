import Foundation
import Testing
import TestSupport

/// The key-size and signature floors of the verification policy (RSA ≥ 2048 bits, no SHA-1),
/// against peers that present such certificates: `openssl s_server` / `s_client` at security
/// level 0. Fixtures are made at test time with the openssl CLI, signed by a `pki init` CA.
@Suite("Certificate floors")
struct CertificateFloorTests {
    static let backends = ["openssl", "gnutls"]

    /// A leaf signed by the fixture's CA: `keyArguments` for `openssl req -newkey`, `digest` for the signature.
    private func weakLeaf(_ pki: PKIFixture, name: String, keyArguments: [String], digest: String,
                          purpose: String, subjectAltName: String) throws -> (cert: String, key: String) {
        let key = pki.file("\(name).key"), csr = pki.file("\(name).csr"), cert = pki.file("\(name).pem")
        let extensions = try pki.directory.write("\(name).ext", "subjectAltName=\(subjectAltName)\nextendedKeyUsage=\(purpose)\n")
        let request = try runTool("/usr/bin/openssl", ["req", "-new", "-newkey"] + keyArguments + [
            "-nodes", "-keyout", key, "-subj", "/CN=\(name)", "-out", csr])
        try #require(request.succeeded, "\(request.output)")
        let signed = try runTool("/usr/bin/openssl", [
            "x509", "-req", "-in", csr, "-CA", pki.file("ca.pem"), "-CAkey", pki.file("ca.key"), "-CAcreateserial",
            "-days", "2", "-\(digest)", "-extfile", extensions, "-out", cert])
        try #require(signed.succeeded, "\(signed.output)")
        return (cert, key)
    }

    private func weakLeaves(_ pki: PKIFixture, purpose: String, subjectAltName: String) throws -> [(label: String, cert: String, key: String)] {
        let rsa1024 = try weakLeaf(pki, name: "rsa1024-\(purpose)", keyArguments: ["rsa:1024"], digest: "sha256",
                                   purpose: purpose, subjectAltName: subjectAltName)
        let sha1 = try weakLeaf(pki, name: "sha1-\(purpose)", keyArguments: ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                                digest: "sha1", purpose: purpose, subjectAltName: subjectAltName)
        return [("an RSA-1024 key", rsa1024.cert, rsa1024.key), ("a SHA-1 signature", sha1.cert, sha1.key)]
    }

    @Test("Our server refuses a client certificate below the floor, with the same reason on both backends",
          arguments: backends)
    func serverRefusesWeakClient(backend: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1"])
        defer { server.stop() }
        for leaf in try weakLeaves(pki, purpose: "clientAuth", subjectAltName: "DNS:weak-client") {
            let client = try runTool("/usr/bin/openssl", [
                "s_client", "-connect", "127.0.0.1:\(server.port)", "-servername", "localhost", "-CAfile", pki.file("ca.pem"),
                "-cert", leaf.cert, "-key", leaf.key, "-cipher", "DEFAULT:@SECLEVEL=0", "-quiet"], input: helloRequest)
            #expect(!client.output.contains("hello,"), "\(leaf.label): \(client.output)")
        }
        usleep(300_000)
        let refusals = server.log.components(separatedBy: "\n").filter { $0.contains("below the floor") }
        #expect(refusals.count == 2, "\(server.log.suffix(3000))")
    }

    @Test("Our client refuses a server certificate below the floor, with the same message on both backends",
          arguments: backends)
    func clientRefusesWeakServer(backend: String) throws {
        let pki = try PKIFixture()
        for leaf in try weakLeaves(pki, purpose: "serverAuth", subjectAltName: "DNS:localhost,IP:127.0.0.1") {
            let port = freePort()
            let server = try ServerProcess("/usr/bin/openssl", [
                "s_server", "-accept", "127.0.0.1:\(port)", "-cert", leaf.cert, "-key", leaf.key, "-CAfile", pki.file("ca.pem"),
                "-Verify", "1", "-cipher", "DEFAULT:@SECLEVEL=0", "-www"], port: port)
            defer { server.stop() }
            let client = try runTool(try mtlsExecutable(), [
                "hello-client", "--backend", backend, "--pki", pki.path, "--url", "https://localhost:\(port)/hello"])
            #expect(client.status == 1, "\(leaf.label): \(client.output)")
            #expect(client.output.contains("below the floor"), "\(leaf.label): \(client.output)")
        }
    }
}
