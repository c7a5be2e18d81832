import Foundation
import Testing
import TestSupport

/// Typed authorization (`--allow-*`, `--verify-*`), from the outside: our servers
/// against curl, our clients against a Python ssl server that reports every byte it received.
@Suite("Authorization", .serialized)
struct AuthorizationTests {
    static let backends = ["openssl", "gnutls"]

    /// A `pki init` directory plus two more clients from the same CA: "billing" (the one the rules
    /// admit) and "other" (a different DNS name, URI and key).
    final class Clients: @unchecked Sendable {
        let pki: PKIFixture
        let billing: String
        let other: String

        init() throws {
            pki = try PKIFixture()
            billing = pki.file("billing")
            other = pki.file("other")
            for (prefix, names) in [(billing, ["billing.svc.example.test", "spiffe://prod.example/ns/billing/sa/api"]),
                                    (other, ["other.example.test", "spiffe://prod.example/ns/billingX/sa/api"])] {
                var arguments = ["pki", "issue", "--ca-dir", pki.path, "--client", "--out", prefix]
                for name in names { arguments += ["--name", name] }
                let issued = try runTool(try mtlsExecutable(), arguments)
                guard issued.status == 0 else { throw ToolError("pki issue failed: \(issued.output)") }
            }
        }
    }

    /// The SHA-256 of a certificate's SubjectPublicKeyInfo, computed by openssl (not by us).
    static func spkiPin(_ certificate: String) throws -> String {
        let result = try runTool("/bin/bash", ["-c",
            "openssl x509 -in '\(certificate)' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -r"])
        guard result.status == 0, let hex = result.output.split(separator: " ").first, hex.count == 64 else {
            throw ToolError("cannot compute the SPKI pin of \(certificate): \(result.output)")
        }
        return String(hex)
    }

    static func curl(_ port: Int, _ pki: PKIFixture, client prefix: String, extra: [String] = []) throws -> ToolResult {
        try runTool("/usr/bin/curl", ["-sS", "--max-time", "10", "--cacert", pki.file("ca.pem"),
                                      "--cert", prefix + ".pem", "--key", prefix + ".key",
                                      "--resolve", "localhost:\(port):127.0.0.1", "https://localhost:\(port)/hello"] + extra)
    }

    /// Waits up to two seconds for `text` to appear in the server's log.
    static func waitForLog(_ server: ServerProcess, _ text: String) -> Bool {
        for _ in 0..<40 {
            if server.log.contains(text) { return true }
            usleep(50_000)
        }
        return server.log.contains(text)
    }

    // MARK: Servers: --allow-*

    @Test("hello-server --allow-dns / --allow-uri / --allow-spki admits the matching curl client and refuses another, logging why",
          arguments: backends, ["dns", "uri", "spki"])
    func serverAllowRules(backend: String, kind: String) throws {
        let clients = try Clients()
        let pki = clients.pki
        let value: String
        switch kind {
        case "dns": value = "*.SVC.example.test"
        case "uri": value = "spiffe://prod.example/ns/billing/*"
        default: value = try Self.spkiPin(clients.billing + ".pem").uppercased()
        }
        let server = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1",
            "--allow-\(kind)", value])
        defer { server.stop() }

        let admitted = try Self.curl(server.port, pki, client: clients.billing)
        #expect(admitted.status == 0 && admitted.output.contains("hello, billing.svc.example.test"),
                "\(kind): \(admitted.output)\nserver: \(server.log)")

        let refused = try Self.curl(server.port, pki, client: clients.other)
        #expect(refused.status != 0 && !refused.output.contains("hello"), "\(kind): \(refused.output)")
        let normalized = kind == "dns" ? value.lowercased() : kind == "spki" ? value.lowercased() : value
        let expectedLine = "refused the client subject \"CN=other.example.test,O=swift-mtls\""
        #expect(Self.waitForLog(server, expectedLine), "no refusal line: \(server.log)")
        let line = server.log.split(separator: "\n").first { $0.contains(expectedLine) } ?? ""
        #expect(line.contains("DNS [other.example.test]") && line.contains("URI [spiffe://prod.example/ns/billingX/sa/api]"),
                "\(line)")
        #expect(line.contains("matches none of --allow-\(kind) \(normalized)"), "\(line)")
        // One line per refusal: the generic close line is not repeated at the default level.
        #expect(!server.log.contains("not on the allow list"), "\(server.log)")
        #expect(!server.log.contains("refused the client subject \"CN=billing"), "\(server.log)")
    }

    @Test("Several --allow-* flags combine as OR; a client without a certificate is refused when client auth is optional",
          arguments: backends)
    func serverOrAndAnonymous(backend: String) throws {
        let clients = try Clients()
        let pki = clients.pki
        let server = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1",
            "--client-auth", "optional", "--allow-cn", "client", "--allow-uri", "spiffe://prod.example/ns/billing/sa/api"])
        defer { server.stop() }
        for (prefix, name) in [(pki.file("client"), "client"), (clients.billing, "billing.svc.example.test")] {
            let result = try Self.curl(server.port, pki, client: prefix)
            #expect(result.status == 0 && result.output.contains("hello, \(name)"), "\(name): \(result.output)")
        }
        let other = try Self.curl(server.port, pki, client: clients.other)
        #expect(other.status != 0, "\(other.output)")
        let anonymous = try runTool("/usr/bin/curl", ["-sS", "--max-time", "10", "--cacert", pki.file("ca.pem"),
                                                      "--resolve", "localhost:\(server.port):127.0.0.1",
                                                      "https://localhost:\(server.port)/hello"])
        #expect(anonymous.status != 0 && !anonymous.output.contains("hello"), "\(anonymous.output)")
        #expect(Self.waitForLog(server, "refused the client: it presented no certificate"), "\(server.log)")
    }

    @Test("echo-server --allow-cn admits the named client and refuses another", arguments: backends)
    func echoServerAllow(backend: String) throws {
        let clients = try Clients()
        let pki = clients.pki
        let server = try ServerProcess(try mtlsExecutable(), [
            "echo-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1",
            "--allow-cn", "billing.svc.example.test"])
        defer { server.stop() }
        let base = ["echo-client", "--backend", backend, "--ca", pki.file("ca.pem"), "--connect", "127.0.0.1:\(server.port)",
                    "--server-name", "localhost", "--bytes", "1000"]
        let admitted = try runTool(try mtlsExecutable(), base + ["--cert", clients.billing + ".pem", "--key", clients.billing + ".key"])
        #expect(admitted.status == 0 && admitted.output.contains("echoed 1000 bytes intact"), "\(admitted.output)")
        let refused = try runTool(try mtlsExecutable(), base + ["--cert", clients.other + ".pem", "--key", clients.other + ".key"])
        #expect(refused.status == 1, "\(refused.output)")
        #expect(Self.waitForLog(server, "matches none of --allow-cn billing.svc.example.test"), "\(server.log)")
    }

    @Test("Resumed handshakes are authorized too: a client the policy admits keeps being admitted when it resumes",
          arguments: backends, ["1.2", "1.3"])
    func resumedHandshakesAuthorized(backend: String, version: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1",
            "--allow-cn", "client"])
        defer { server.stop() }
        let bench = try runTool(try mtlsExecutable(), [
            "bench", "handshakes", "--backend", backend, "--pki", pki.path, "--target", "127.0.0.1:\(server.port)",
            "--resume", "--count", "20", "--concurrency", "1", "--loops", "1", "--tls", version])
        #expect(bench.status == 0 && bench.output.contains("20 in") && !bench.output.contains("errors:"), "\(bench.output)")
        let resumed = bench.output.range(of: #"\((\d+) resumed\)"#, options: .regularExpression)
            .flatMap { Int(bench.output[$0].dropFirst().prefix { $0.isNumber }) } ?? 0
        #expect(resumed > 0, "\(bench.output)")
        #expect(!server.log.contains("refused"), "\(server.log)")
    }

    // MARK: Clients: --verify-*

    @Test("hello-client --verify-spki with a wrong pin refuses the server before sending a byte; the right pin sends",
          arguments: backends)
    func clientVerifySPKI(backend: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess("/usr/bin/env", ["python3", "-c", RecordingServer.script, pki.file("ca.pem"),
                                                        pki.file("server.pem"), pki.file("server.key")])
        defer { server.stop() }
        let rightPin = try Self.spkiPin(pki.file("server.pem"))
        let wrongPin = try Self.spkiPin(pki.file("client.pem"))
        let base = ["hello-client", "--backend", backend, "--pki", pki.path, "--url", "https://localhost:\(server.port)/hello"]

        let refused = try runTool(try mtlsExecutable(), base + ["--verify-spki", wrongPin])
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("refused the server subject \"CN=localhost,O=swift-mtls\""), "\(refused.output)")
        #expect(refused.output.contains("SPKI sha256 \(rightPin)"), "\(refused.output)")
        #expect(refused.output.contains("matches none of --verify-spki \(wrongPin)"), "\(refused.output)")
        #expect(refused.output.contains("no request was sent"), "\(refused.output)")
        #expect(Self.waitForLog(server, "handshake done, received 0 bytes"), "python server: \(server.log)")
        #expect(!server.log.contains("GET"), "python server: \(server.log)")

        let admitted = try runTool(try mtlsExecutable(), base + ["--verify-spki", rightPin.uppercased()])
        #expect(admitted.status == 0 && admitted.output.contains("hello from python"), "\(admitted.output)")
        #expect(admitted.output.contains("server spki-sha256: \(rightPin)"), "\(admitted.output)")
        #expect(Self.waitForLog(server, "b'GET /hello"), "python server: \(server.log)")
    }

    @Test("hello-client --verify-cn / --verify-uri against our server, on both backends", arguments: backends)
    func clientVerifyNames(backend: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", backend == "openssl" ? "gnutls" : "openssl", "--pki", pki.path,
            "--listen", "127.0.0.1:0", "--loops", "1"])
        defer { server.stop() }
        let base = ["hello-client", "--backend", backend, "--pki", pki.path, "--url", "https://localhost:\(server.port)/hello"]
        let admitted = try runTool(try mtlsExecutable(), base + ["--verify-uri", "spiffe://nowhere/x", "--verify-cn", "localhost"])
        #expect(admitted.status == 0 && admitted.output.contains("hello, client"), "\(admitted.output)")
        let refused = try runTool(try mtlsExecutable(), base + ["--verify-cn", "Localhost", "--verify-uri", "spiffe://nowhere/*"])
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("matches none of --verify-cn Localhost, --verify-uri spiffe://nowhere/*"),
                "\(refused.output)")
        // The server saw the client's certificate verify, then a close before any request.
        #expect(!server.log.contains("bad request"), "\(server.log)")
    }

    // MARK: Usage errors

    @Test("Bad rules, the removed --allow and rules without client certificates are usage errors",
          arguments: [
            (["hello-server", "--allow-spki", "abc"], "--allow-spki 'abc': a SHA-256 pin is 64 hex digits, not 3 characters"),
            (["hello-server", "--allow-spki", String(repeating: "x", count: 64)], "hex digits only"),
            (["hello-server", "--allow-uri", "spiffe://prod.example/*/x"], "'*' may appear only once, as a final '/*'"),
            (["hello-server", "--allow-dns", "a.*.example.test"], "--allow-dns 'a.*.example.test'"),
            (["hello-server", "--allow-issuer", "Nobody=x"], "unknown attribute type 'Nobody'"),
            (["hello-server", "--allow", "client", "spiffe://x/y"],
             "use --allow-cn client (subject CN) or --allow-dns client (DNS SAN); --allow-uri spiffe://x/y"),
            (["hello-server", "--mode", "tls", "--allow-cn", "client"], "this server asks for none"),
            (["echo-server", "--mode", "plain", "--allow-cn", "client"], "this server asks for none"),
            (["hello-client", "--verify-spki", "00"], "--verify-spki '00'"),
            (["hello-client", "--url", "http://127.0.0.1:1/hello", "--verify-cn", "x"], "they need an https:// URL"),
            (["echo-client", "--plain", "--verify-cn", "x"], "they cannot apply with --plain"),
          ])
    func usageErrors(arguments: [String], message: String) throws {
        let result = try runTool(try mtlsExecutable(), arguments)
        #expect(result.status == 64, "\(arguments): \(result.output)")
        #expect(result.output.contains(message), "\(arguments): \(result.output)")
        #expect(!result.output.contains("listening on"), "\(result.output)")
    }

    @Test("hello-server --help documents the typed rules and why --allow is gone")
    func help() throws {
        let result = try runTool(try mtlsExecutable(), ["hello-server", "--help"])
        for text in ["--allow-cn", "--allow-dns", "--allow-uri", "--allow-ip", "--allow-spki", "--allow-issuer",
                     "--allow is gone"] {
            #expect(result.output.contains(text), "\(text) missing: \(result.output)")
        }
        let client = try runTool(try mtlsExecutable(), ["hello-client", "--help"])
        for text in ["--verify-cn", "--verify-uri", "--verify-spki"] {
            #expect(client.output.contains(text), "\(text) missing: \(client.output)")
        }
    }
}

/// A TLS server (Python's ssl) that requires a client certificate, reports how many bytes each
/// client sent after the handshake, and answers a request with "hello from python".
enum RecordingServer {
    static let script = """
    import socket, ssl, sys
    ca, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    print("listening on 127.0.0.1:%d" % listener.getsockname()[1], flush=True)
    while True:
        raw, _ = listener.accept()
        raw.settimeout(10)
        try:
            tls = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as error:
            print("handshake failed:", error, flush=True)
            raw.close()
            continue
        data = b""
        try:
            while b"\\r\\n\\r\\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ssl.SSLError, OSError) as error:
            print("read failed:", error, flush=True)
        print("handshake done, received %d bytes: %r" % (len(data), data[:16]), flush=True)
        if data:
            try:
                tls.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 17\\r\\nConnection: close\\r\\n\\r\\nhello from python")
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
        tls.close()
    """
}
