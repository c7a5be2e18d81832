import Foundation
import TLSContract
import Testing
import TestSupport

/// Renewal and revocation through the `mtls` binary: SIGHUP, the file watch, --crl, the
/// long-running hello-client, and `pki inspect`.
@Suite("Reloading servers and clients", .serialized)
struct ReloadCommandTests {
    static let backends = ["openssl", "gnutls"]

    /// Writes `bytes` next to `path` and renames it into place, as deployment tools do.
    static func replace(_ path: String, _ bytes: [UInt8]) throws {
        let temporary = path + ".new"
        try Data(bytes).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else { throw ToolError("rename to \(path) failed") }
    }

    static func contents(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    static func serial(of path: String) throws -> String {
        try CertificateSummary.certificates(in: try contents(path), name: path)[0].serialHex
    }

    /// A new server certificate from the fixture's CA, renamed over server.pem and server.key
    /// (certificate first). Returns its serial.
    static func renewServer(_ pki: PKIFixture) throws -> String {
        let prefix = pki.file("renewed-\(UUID().uuidString.prefix(8))")
        let issued = try mtls("pki", "issue", "--ca-dir", pki.path, "--server", "--name", "localhost", "127.0.0.1", "--out", prefix)
        guard issued.status == 0 else { throw ToolError("pki issue failed: \(issued.output)") }
        guard rename(prefix + ".pem", pki.file("server.pem")) == 0, rename(prefix + ".key", pki.file("server.key")) == 0 else {
            throw ToolError("rename failed")
        }
        return try serial(of: pki.file("server.pem"))
    }

    /// The serial hello-client reports for the server (nil when the request failed).
    static func servedSerial(_ pki: PKIFixture, port: Int, backend: String = "openssl") throws -> String? {
        let result = try mtls("hello-client", "--pki", pki.path, "--backend", backend, "--url", "https://127.0.0.1:\(port)/hello")
        guard result.status == 0, let line = result.output.split(separator: "\n").first(where: { $0.hasPrefix("server serial: ") })
        else { return nil }
        return String(line.dropFirst("server serial: ".count).prefix { $0 != "," })
    }

    /// Polls until the server presents `serial`; the seconds it took, or nil after `seconds`.
    static func waitForSerial(_ serial: String, _ pki: PKIFixture, port: Int, seconds: Double = 10) throws -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            if try servedSerial(pki, port: port) == serial { return Date().timeIntervalSince(start) }
            usleep(50_000)
        }
        return nil
    }

    static func countLines(_ log: String, containing text: String) -> Int {
        log.split(separator: "\n").filter { $0.contains(text) }.count
    }

    @Test("hello-server --no-watch reloads on SIGHUP only; garbage and SIGHUP keep it serving with one error naming the file",
          arguments: backends)
    func sighup(backend: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), ["hello-server", "--pki", pki.path, "--backend", backend,
                                                              "--listen", "127.0.0.1:0", "--no-watch"])
        defer { server.stop() }
        let original = try Self.serial(of: pki.file("server.pem"))
        #expect(try Self.servedSerial(pki, port: server.port) == original)

        let renewed = try Self.renewServer(pki)
        usleep(800_000)  // a watch would have fired by now
        #expect(try Self.servedSerial(pki, port: server.port) == original, "reloaded without SIGHUP under --no-watch")
        kill(server.pid, SIGHUP)
        #expect(try Self.waitForSerial(renewed, pki, port: server.port) != nil, "SIGHUP was not acted on: \(server.log)")
        #expect(server.log.contains("reloaded (SIGHUP): now serving subject=CN=localhost"), "\(server.log)")

        let good = try Self.contents(pki.file("server.pem"))
        try Self.replace(pki.file("server.pem"), Array("garbage\n".utf8))
        kill(server.pid, SIGHUP)
        #expect(AuthorizationTests.waitForLog(server, "reload (SIGHUP) failed"), "\(server.log)")
        #expect(Self.countLines(server.log, containing: " error ") == 1, "\(server.log)")
        #expect(Self.countLines(server.log, containing: "\(pki.file("server.pem")): no certificate found") == 1, "\(server.log)")
        #expect(try Self.servedSerial(pki, port: server.port) == renewed, "the broken file changed what is served")

        try Self.replace(pki.file("server.pem"), good)
        kill(server.pid, SIGHUP)
        #expect(AuthorizationTests.waitForLog(server, "reload (SIGHUP): the files are unchanged"), "\(server.log)")
        #expect(try Self.servedSerial(pki, port: server.port) == renewed)
        #expect(server.isRunning)
    }

    @Test("hello-server picks up a certificate renamed into place, and a CRL that revokes a client, without SIGHUP",
          arguments: backends)
    func watch(backend: String) throws {
        let pki = try PKIFixture()
        let caPEM = String(decoding: try Self.contents(pki.file("ca.pem")), as: UTF8.self)
        let caKey = String(decoding: try Self.contents(pki.file("ca.key")), as: UTF8.self)
        try Self.replace(pki.file("crl.pem"), try CRLFactory.make(caCertificatePEM: caPEM, caKeyPEM: caKey, revokingSerials: []))
        let server = try ServerProcess(try mtlsExecutable(), ["hello-server", "--pki", pki.path, "--backend", backend,
                                                              "--listen", "127.0.0.1:0", "--crl", pki.file("crl.pem")])
        defer { server.stop() }
        let renewed = try Self.renewServer(pki)
        let seconds = try #require(try Self.waitForSerial(renewed, pki, port: server.port), "the renewal was not seen: \(server.log)")
        print("\(backend) hello-server: renewal picked up by the watch \(String(format: "%.2f", seconds)) s after the rename")
        #expect(server.log.contains("reloaded (file change)"), "\(server.log)")

        let clientSerial = try Self.serial(of: pki.file("client.pem"))
        try Self.replace(pki.file("crl.pem"), try CRLFactory.make(caCertificatePEM: caPEM, caKeyPEM: caKey, revokingSerials: [clientSerial]))
        let start = Date()
        var refused: ToolResult?
        while Date().timeIntervalSince(start) < 10 {
            let attempt = try mtls("hello-client", "--pki", pki.path, "--url", "https://127.0.0.1:\(server.port)/hello")
            if attempt.status != 0 { refused = attempt; break }
            usleep(50_000)
        }
        let refusal = try #require(refused, "the revoked client still got in: \(server.log)")
        #expect(refusal.output.contains("certificate_revoked"), "\(refusal.output)")
        #expect(AuthorizationTests.waitForLog(server, clientSerial), "the server's log does not name the serial: \(server.log)")
        #expect(server.log.contains("CRL entries=1"), "\(server.log)")
    }

    @Test("--crl on clients: a revoked server is refused with a message naming its serial", arguments: backends)
    func clientCRL(backend: String) throws {
        let pki = try PKIFixture()
        let caPEM = String(decoding: try Self.contents(pki.file("ca.pem")), as: UTF8.self)
        let caKey = String(decoding: try Self.contents(pki.file("ca.key")), as: UTF8.self)
        let serverSerial = try Self.serial(of: pki.file("server.pem"))
        try Self.replace(pki.file("crl.der"),
                         try CRLFactory.make(caCertificatePEM: caPEM, caKeyPEM: caKey, revokingSerials: [serverSerial], der: true))
        let server = try ServerProcess(try mtlsExecutable(), ["hello-server", "--pki", pki.path, "--listen", "127.0.0.1:0"])
        defer { server.stop() }
        let result = try mtls("hello-client", "--pki", pki.path, "--backend", backend, "--crl", pki.file("crl.der"),
                              "--url", "https://127.0.0.1:\(server.port)/hello")
        #expect(result.status == 1)
        #expect(result.output.contains("the server's certificate has been revoked"), "\(result.output)")
        #expect(result.output.contains(serverSerial), "\(result.output)")

        let echo = try ServerProcess(try mtlsExecutable(), ["echo-server", "--pki", pki.path, "--listen", "127.0.0.1:0"])
        defer { echo.stop() }
        let echoed = try runTool(try mtlsExecutable(), ["echo-client", "--pki", pki.path, "--backend", backend, "--crl", pki.file("crl.der"),
                                                        "--connect", "127.0.0.1:\(echo.port)", "--server-name", "localhost"],
                                 input: "hello")
        #expect(echoed.status == 1 && echoed.output.contains("revoked"), "\(echoed.output)")

        let garbage = pki.file("garbage.crl")
        try Self.replace(garbage, Array("garbage".utf8))
        let misconfigured = try mtls("hello-client", "--pki", pki.path, "--backend", backend, "--crl", garbage,
                                     "--url", "https://127.0.0.1:\(server.port)/hello")
        #expect(misconfigured.status == 1 && misconfigured.output.contains("\(garbage): not a CRL"), "\(misconfigured.output)")
    }

    @Test("hello-client --count --interval makes a connection per request and picks up its own renewed certificate",
          arguments: backends)
    func longRunningClient(backend: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), ["hello-server", "--pki", pki.path, "--listen", "127.0.0.1:0"])
        defer { server.stop() }
        let client = try ChildProcess(try mtlsExecutable(), ["hello-client", "--pki", pki.path, "--backend", backend,
                                                             "--url", "https://127.0.0.1:\(server.port)/hello",
                                                             "--count", "8", "--interval", "0.4"])
        defer { client.terminate() }
        for _ in 0..<100 where !client.output.contains("[2/8]") { usleep(50_000) }
        let prefix = pki.file("renewed-client")
        let issued = try mtls("pki", "issue", "--ca-dir", pki.path, "--client", "--name", "client", "--out", prefix)
        #expect(issued.status == 0, "\(issued.output)")
        let renewedSerial = try Self.serial(of: prefix + ".pem")
        _ = rename(prefix + ".pem", pki.file("client.pem"))
        _ = rename(prefix + ".key", pki.file("client.key"))
        let status = client.wait(seconds: 30)
        #expect(status == 0, "\(client.output)")
        for index in 1...8 { #expect(client.output.contains("[\(index)/8] hello, client"), "\(client.output)") }
        #expect(client.output.contains("reloaded (file change): now using subject=CN=client"), "\(client.output)")
        #expect(client.output.contains("serial=\(renewedSerial)"), "\(client.output)")
        #expect(!client.output.contains("failed"), "\(client.output)")
    }

    @Test("pki inspect shows each certificate of a chain and a CRL's revoked serials; nothing to show is exit 1")
    func inspect() throws {
        let pki = try PKIFixture(intermediate: true)
        let result = try mtls("pki", "inspect", pki.file("server.pem"))
        #expect(result.status == 0, "\(result.output)")
        let serial = try runTool("openssl", ["x509", "-in", pki.file("server.pem"), "-serial", "-noout"])
        let opensslSerial = serial.output.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
        for text in ["certificate 1 of 2", "certificate 2 of 2 (CA)", "subject:   CN=localhost", "SANs:      DNS:localhost, IP:127.0.0.1",
                     "issuer:    CN=swift-mtls Intermediate CA", "serial:    \(opensslSerial)", "validity:  ", "time left: 36", "% of its 365d 1h lifetime"] {
            #expect(result.output.contains(text), "'\(text)' missing from:\n\(result.output)")
        }

        let caPEM = String(decoding: try Self.contents(pki.file("ca.pem")), as: UTF8.self)
        let caKey = String(decoding: try Self.contents(pki.file("ca.key")), as: UTF8.self)
        try Self.replace(pki.file("crl.pem"), try CRLFactory.make(caCertificatePEM: caPEM, caKeyPEM: caKey, revokingSerials: ["1A2B3C"]))
        let crl = try mtls("pki", "inspect", pki.file("crl.pem"))
        #expect(crl.status == 0 && crl.output.contains("CRL 1 of 1") && crl.output.contains("revoked:     1A2B3C"), "\(crl.output)")
        #expect(crl.output.contains("next update:"), "\(crl.output)")

        let nothing = try mtls("pki", "inspect", pki.file("server.key"))
        #expect(nothing.status == 1, "\(nothing.output)")
    }
}
