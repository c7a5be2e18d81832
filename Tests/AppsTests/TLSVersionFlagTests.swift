import Foundation
import Testing
import TestSupport

/// `--tls-max` on our servers and clients, seen from both ends and from curl.
@Suite("TLS version flags", .serialized)
struct TLSVersionFlagTests {
    static let backends = ["openssl", "gnutls"]

    static func waitForLog(_ server: ServerProcess, _ text: String) -> Bool {
        for _ in 0..<40 where !server.log.contains(text) { usleep(50_000) }
        return server.log.contains(text)
    }

    @Test("--tls-max 1.2 on either side forces TLS 1.2, on both backends", arguments: backends)
    func tlsMax(backend: String) throws {
        let pki = try PKIFixture()
        let other = backend == "openssl" ? "gnutls" : "openssl"
        // Server limited to 1.2; our client (the other backend) and curl offer 1.3.
        let limited = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1",
            "--tls-max", "1.2"])
        defer { limited.stop() }
        let toLimited = try runTool(try mtlsExecutable(), ["hello-client", "--backend", other, "--pki", pki.path,
                                                          "--url", "https://localhost:\(limited.port)/hello"])
        #expect(toLimited.status == 0 && toLimited.output.contains("tls: TLS 1.2,"), "\(toLimited.output)")
        let curl = try runTool("/usr/bin/curl", ["-sSv", "--max-time", "10", "--cacert", pki.file("ca.pem"),
                                                 "--cert", pki.file("client.pem"), "--key", pki.file("client.key"),
                                                 "--resolve", "localhost:\(limited.port):127.0.0.1",
                                                 "https://localhost:\(limited.port)/hello"])
        #expect(curl.status == 0 && curl.output.contains("hello, client"), "\(curl.output)")
        #expect(curl.output.contains("SSL connection using TLSv1.2"), "\(curl.output)")
        #expect(Self.waitForLog(limited, "version=TLS 1.2"), "\(limited.log)")
        #expect(!limited.log.contains("version=TLS 1.3"), "\(limited.log)")
        // A client that insists on 1.3 finds nothing in common.
        let tooNew = try runTool(try mtlsExecutable(), ["hello-client", "--backend", other, "--pki", pki.path,
                                                       "--tls-min", "1.3", "--url", "https://localhost:\(limited.port)/hello"])
        #expect(tooNew.status == 1 && !tooNew.output.contains("hello, client"), "\(tooNew.output)")

        // Client limited to 1.2 against a server that prefers 1.3.
        let open = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", other, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1"])
        defer { open.stop() }
        let limitedClient = try runTool(try mtlsExecutable(), ["hello-client", "--backend", backend, "--pki", pki.path,
                                                              "--tls-max", "1.2", "--url", "https://localhost:\(open.port)/hello"])
        #expect(limitedClient.status == 0 && limitedClient.output.contains("tls: TLS 1.2,"), "\(limitedClient.output)")
        let unlimited = try runTool(try mtlsExecutable(), ["hello-client", "--backend", backend, "--pki", pki.path,
                                                          "--url", "https://localhost:\(open.port)/hello"])
        #expect(unlimited.output.contains("tls: TLS 1.3,"), "\(unlimited.output)")
        let echoServer = try ServerProcess(try mtlsExecutable(), [
            "echo-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1", "--tls-max", "1.2"])
        defer { echoServer.stop() }
        let echo = try runTool(try mtlsExecutable(), ["echo-client", "--backend", other, "--pki", pki.path, "--bytes", "100",
                                                     "--connect", "127.0.0.1:\(echoServer.port)", "--server-name", "localhost"])
        #expect(echo.status == 0 && echo.output.contains("tls: TLS 1.2,"), "\(echo.output)")
    }

    @Test("--tls-min above --tls-max, or a version other than 1.2 and 1.3, is a usage error", arguments: [
        (["hello-server", "--tls-min", "1.3", "--tls-max", "1.2"], "--tls-min 1.3 is above --tls-max 1.2"),
        (["hello-client", "--tls-min", "1.3", "--tls-max", "1.2"], "no TLS version is left to negotiate"),
        (["echo-client", "--tls-max", "1.4"], "--tls-max takes 1.2 or 1.3"),
    ])
    func usageErrors(arguments: [String], message: String) throws {
        let result = try runTool(try mtlsExecutable(), arguments)
        #expect(result.status == 64, "\(arguments): \(result.output)")
        #expect(result.output.contains(message), "\(arguments): \(result.output)")
    }

    @Test("Every server and client lists --tls-max in its help")
    func help() throws {
        for command in ["hello-server", "hello-client", "echo-server", "echo-client"] {
            let result = try runTool(try mtlsExecutable(), [command, "--help"])
            #expect(result.output.contains("--tls-max"), "\(command): \(result.output)")
        }
    }
}
