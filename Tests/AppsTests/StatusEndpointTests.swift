import Foundation
import TLSContract
import Testing
import TestSupport

/// `--status` on hello-server, echo-server and proxy server, through the `mtls` binary and curl:
/// `/_status` parses as JSON and names what is served, `/metrics` parses as Prometheus text (with
/// the strict parser below) and counts what the test did.
@Suite("Status and metrics endpoints")
struct StatusEndpointTests {
    // MARK: Fixtures

    /// A server started with `--status 127.0.0.1:0`, and the status port it printed.
    struct StatusServer {
        let process: ServerProcess
        let statusPort: Int
        var port: Int { process.port }

        init(_ arguments: [String]) throws {
            process = try ServerProcess(try mtlsExecutable(), arguments + ["--status", "127.0.0.1:0"])
            var found: Int?
            for _ in 0..<100 where found == nil {
                if let range = process.log.range(of: #"status on http://127\.0\.0\.1:\d+"#, options: .regularExpression) {
                    found = Int(process.log[range].split(separator: ":").last ?? "")
                } else {
                    usleep(50_000)
                }
            }
            guard let found else {
                process.stop()
                throw ToolError("no status line: \(process.log)")
            }
            statusPort = found
        }

        func stop() { process.stop() }

        /// GET `path` with curl: the status code and the body.
        func get(_ path: String, method: String = "GET") throws -> (status: Int, body: String) {
            let result = try runTool("/usr/bin/curl", ["-sS", "--max-time", "10", "-X", method, "-w", "\n%{http_code}",
                                                       "http://127.0.0.1:\(statusPort)\(path)"])
            guard result.status == 0, let newline = result.output.lastIndex(of: "\n"),
                  let code = Int(result.output[result.output.index(after: newline)...])
            else { throw ToolError("curl \(path) failed: \(result.output)") }
            return (code, String(result.output[..<newline]))
        }

        func status() throws -> [String: Any] {
            let (code, body) = try get("/_status")
            guard code == 200, let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
                throw ToolError("/_status answered \(code): \(body)")
            }
            return object
        }

        func metrics() throws -> PrometheusText {
            let (code, body) = try get("/metrics")
            guard code == 200 else { throw ToolError("/metrics answered \(code): \(body)") }
            return try PrometheusText(body)
        }

        /// Polls /metrics until `condition` holds (a bound, not a measurement); the last scrape.
        func metrics(until condition: (PrometheusText) -> Bool) throws -> PrometheusText {
            var last = try metrics()
            for _ in 0..<100 where !condition(last) {
                usleep(50_000)
                last = try metrics()
            }
            return last
        }
    }

    static func certificate(_ path: String) throws -> CertificateSummary {
        try CertificateSummary.certificates(in: ReloadCommandTests.contents(path), name: path)[0]
    }

    static func curlTLS(_ port: Int, _ arguments: [String]) throws -> ToolResult {
        try runTool("/usr/bin/curl", ["-sS", "--max-time", "10"] + arguments + ["https://localhost:\(port)/hello"])
    }

    /// One client without a certificate and one whose certificate comes from a CA the server does not trust.
    static func refuseTwo(port: Int, _ pki: PKIFixture) throws {
        let stranger = try PKIFixture()
        let anonymous = try curlTLS(port, ["--cacert", pki.file("ca.pem")])
        let untrusted = try curlTLS(port, ["--cacert", pki.file("ca.pem"), "--cert", stranger.file("client.pem"),
                                           "--key", stranger.file("client.key")])
        #expect(anonymous.status != 0 && untrusted.status != 0, "a refused client got through: \(anonymous.output) \(untrusted.output)")
    }

    static func echo(port: Int, _ pki: PKIFixture, backend: String, bytes: Int) throws {
        let result = try mtls("echo-client", "--pki", pki.path, "--backend", backend, "--connect", "127.0.0.1:\(port)",
                              "--bytes", "\(bytes)")
        #expect(result.status == 0, "\(result.output)")
    }

    // MARK: Tests

    @Test("echo-server: /_status names backend, certificate and serial; /metrics counts 3 handshakes, 2 refusals, bytes and open connections",
          arguments: ReloadCommandTests.backends)
    func echoServer(backend: String) throws {
        let pki = try PKIFixture()
        let server = try StatusServer(["echo-server", "--pki", pki.path, "--backend", backend, "--listen", "127.0.0.1:0",
                                       "--loops", "1", "--no-watch"])
        defer { server.stop() }

        let status = try server.status()
        let served = try Self.certificate(pki.file("server.pem"))
        #expect(status["ok"] as? Bool == true)
        let backendInfo = status["backend"] as? [String: Any]
        #expect(backendInfo?["name"] as? String == backend)
        let version = backendInfo?["version"] as? String ?? ""
        #expect(version.contains(backend == "openssl" ? "OpenSSL 3" : "3."), "version: \(version)")
        let certificate = status["certificate"] as? [String: Any]
        #expect(certificate?["serial"] as? String == served.serialHex)
        // The same serial as OpenSSL reads it from the PEM.
        let openssl = try runTool("/usr/bin/openssl", ["x509", "-noout", "-serial", "-in", pki.file("server.pem")])
        #expect(openssl.output.trimmingCharacters(in: .whitespacesAndNewlines) == "serial=\(certificate?["serial"] as? String ?? "?")")
        #expect(certificate?["subject"] as? String == served.subject)
        #expect(certificate?["notAfter"] as? String == DateText.format(served.notValidAfter))
        #expect(status["lastReload"] is NSNull, "\(status)")
        #expect(status["target"] == nil)

        let before = try server.metrics()
        #expect(before.value("mtls_handshakes_total", ["result": "ok"]) == 0)
        #expect(before.value("mtls_connections_open") == 0)

        for size in [1000, 2000, 3000] { try Self.echo(port: server.port, pki, backend: backend, bytes: size) }
        try Self.refuseTwo(port: server.port, pki)

        let after = try server.metrics { $0.value("mtls_connections_open") == 0 && $0.sum("mtls_handshakes_total") == 5 }
        #expect(after.value("mtls_handshakes_total", ["result": "ok"]) == 3)
        let refusals = after.samples.filter { $0.name == "mtls_handshakes_total" && $0.labels["result"] != "ok" }
        #expect(refusals.reduce(0) { $0 + $1.value } == 2, "\(refusals)")
        #expect(Set(refusals.map { $0.labels["result"] ?? "" })
                == ["certificate_rejected_missing", "certificate_rejected_untrusted_issuer"], "\(refusals)")
        #expect(after.value("mtls_handshake_duration_seconds_count") == 3)
        #expect(after.value("mtls_handshake_duration_seconds_bucket", ["le": "+Inf"]) == 3)
        #expect(after.value("mtls_bytes_total", ["direction": "in"]) == 6000)
        #expect(after.value("mtls_bytes_total", ["direction": "out"]) == 6000)
        #expect(after.value("mtls_connections_open") == 0)
        #expect(after.value("mtls_certificate_expiry_timestamp_seconds", ["which": "served"])
                == served.notValidAfter.timeIntervalSince1970.rounded())
        let ca = try Self.certificate(pki.file("ca.pem"))
        #expect(after.value("mtls_certificate_expiry_timestamp_seconds", ["which": "ca"])
                == ca.notValidAfter.timeIntervalSince1970.rounded())
        #expect(after.types["mtls_handshake_duration_seconds"] == "histogram")
        #expect(after.types["mtls_connections_open"] == "gauge")
        #expect(after.types["mtls_handshakes_total"] == "counter")
    }

    @Test("mtls_connections_open counts a connection while it is open and returns to 0 when it closes")
    func openConnections() throws {
        let pki = try PKIFixture()
        let server = try StatusServer(["echo-server", "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1"])
        defer { server.stop() }
        // Python's ssl module holds one established connection until it is killed.
        let script = """
            import socket, ssl, sys, time
            context = ssl.create_default_context(cafile=sys.argv[1])
            context.load_cert_chain(sys.argv[2], sys.argv[3])
            connection = context.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[4]))), server_hostname="localhost")
            connection.sendall(b"ping")
            connection.recv(4)
            print("connected", flush=True)
            time.sleep(60)
            """
        let client = try ChildProcess("/usr/bin/python3", ["-c", script, pki.file("ca.pem"), pki.file("client.pem"),
                                                           pki.file("client.key"), "\(server.port)"])
        defer { client.terminate() }
        let open = try server.metrics { $0.value("mtls_connections_open") == 1 }
        #expect(open.value("mtls_connections_open") == 1, "python: \(client.output)")
        #expect(open.value("mtls_bytes_total", ["direction": "in"]) == 4)
        client.terminate()
        let closed = try server.metrics { $0.value("mtls_connections_open") == 0 }
        #expect(closed.value("mtls_connections_open") == 0)
        #expect(closed.value("mtls_handshakes_total", ["result": "ok"]) == 1)
    }

    @Test("hello-server: after a SIGHUP reload, mtls_reloads_total{result=\"ok\"} is 1 and /_status shows the new serial and reload")
    func reload() throws {
        let pki = try PKIFixture()
        let server = try StatusServer(["hello-server", "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1", "--no-watch"])
        defer { server.stop() }
        let original = try ReloadCommandTests.serial(of: pki.file("server.pem"))
        #expect((try server.status()["certificate"] as? [String: Any])?["serial"] as? String == original)
        let hello = try Self.curlTLS(server.port, ["--cacert", pki.file("ca.pem"), "--cert", pki.file("client.pem"),
                                                  "--key", pki.file("client.key")])
        #expect(hello.output.hasPrefix("hello, "), "\(hello.output)")

        let renewed = try ReloadCommandTests.renewServer(pki)
        #expect(renewed != original)
        kill(server.process.pid, SIGHUP)
        let metrics = try server.metrics { $0.value("mtls_reloads_total", ["result": "ok"]) == 1 }
        #expect(metrics.value("mtls_reloads_total", ["result": "ok"]) == 1, "\(server.process.log)")
        #expect(metrics.sum("mtls_reloads_total") == 1)
        let certificate = try Self.certificate(pki.file("server.pem"))
        #expect(metrics.value("mtls_certificate_expiry_timestamp_seconds", ["which": "served"])
                == certificate.notValidAfter.timeIntervalSince1970.rounded())
        #expect(metrics.value("mtls_handshakes_total", ["result": "ok"]) == 1)
        #expect((metrics.value("mtls_bytes_total", ["direction": "out"]) ?? 0) > 0)

        let status = try server.status()
        #expect((status["certificate"] as? [String: Any])?["serial"] as? String == renewed)
        let reload = status["lastReload"] as? [String: Any]
        #expect(reload?["result"] as? String == "ok", "\(status)")
        #expect(reload?["trigger"] as? String == "SIGHUP")
        #expect(((reload?["time"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) }) != nil, "\(status)")

        // Unknown paths and other methods.
        #expect(try server.get("/nothing").status == 404)
        #expect(try server.get("/metrics", method: "POST").status == 405)
        #expect(try server.get("/_status", method: "DELETE").status == 405)
    }

    @Test("a failed reload is counted by its reason and shown by /_status, and later timer ticks on the same files do not hide it")
    func failedReload() throws {
        let pki = try PKIFixture()
        let server = try StatusServer(["echo-server", "--pki", pki.path, "--backend", "gnutls", "--listen", "127.0.0.1:0",
                                       "--loops", "1", "--no-watch", "--reload-interval", "0.2"])
        defer { server.stop() }
        let original = try ReloadCommandTests.serial(of: pki.file("server.pem"))
        try ReloadCommandTests.replace(pki.file("server.pem"), Array("garbage\n".utf8))
        let metrics = try server.metrics { $0.sum("mtls_reloads_total") >= 1 }
        let failures = metrics.samples.filter { $0.name == "mtls_reloads_total" }
        #expect(failures.count == 1 && failures[0].value == 1, "\(failures)")
        #expect(failures.first?.labels["result"]?.hasPrefix("configuration_") == true, "\(failures)")

        usleep(1_000_000)  // several more ticks, each finding the files as they were when the reload failed
        let later = try server.metrics()
        #expect(later.sum("mtls_reloads_total") == 1, "\(later.samples.filter { $0.name == "mtls_reloads_total" })")
        let status = try server.status()
        let reload = status["lastReload"] as? [String: Any]
        #expect((reload?["result"] as? String)?.contains("server.pem") == true, "\(status)")
        #expect(reload?["trigger"] as? String == "reload interval")
        #expect((status["certificate"] as? [String: Any])?["serial"] as? String == original, "the previous credentials keep serving")
    }

    @Test("proxy server: /_status probes the target (reachable or not); /metrics counts the forwarded client and the refused one")
    func proxyServer() throws {
        let pki = try PKIFixture()
        let target = try ServerProcess(try mtlsExecutable(), ["echo-server", "--mode", "plain", "--listen", "127.0.0.1:0",
                                                              "--loops", "1"])
        defer { target.stop() }
        let proxy = try StatusServer(["proxy", "server", "--pki", pki.path, "--backend", "gnutls", "--listen", "127.0.0.1:0",
                                      "--target", "127.0.0.1:\(target.port)", "--loops", "1"])
        defer { proxy.stop() }
        let nowhere = try ClosedPort()
        let deadEnd = try StatusServer(["proxy", "server", "--pki", pki.path, "--listen", "127.0.0.1:0",
                                        "--target", "127.0.0.1:\(nowhere.port)", "--loops", "1"])
        defer { deadEnd.stop() }

        let status = try proxy.status()
        let reachable = status["target"] as? [String: Any]
        #expect(reachable?["address"] as? String == "127.0.0.1:\(target.port)")
        #expect(reachable?["reachable"] as? Bool == true, "\(status)")
        #expect((status["backend"] as? [String: Any])?["name"] as? String == "gnutls")
        #expect((status["certificate"] as? [String: Any])?["serial"] as? String
                == (try ReloadCommandTests.serial(of: pki.file("server.pem"))))
        let unreachable = try deadEnd.status()["target"] as? [String: Any]
        #expect(unreachable?["reachable"] as? Bool == false, "\(String(describing: unreachable))")

        try Self.echo(port: proxy.port, pki, backend: "openssl", bytes: 5000)
        let anonymous = try Self.curlTLS(proxy.port, ["--cacert", pki.file("ca.pem")])
        #expect(anonymous.status != 0)
        let metrics = try proxy.metrics { $0.value("mtls_connections_open") == 0 && $0.sum("mtls_handshakes_total") == 2 }
        #expect(metrics.value("mtls_handshakes_total", ["result": "ok"]) == 1)
        #expect(metrics.value("mtls_handshakes_total", ["result": "certificate_rejected_missing"]) == 1, "\(metrics.samples)")
        #expect(metrics.value("mtls_bytes_total", ["direction": "in"]) == 5000)
        #expect(metrics.value("mtls_bytes_total", ["direction": "out"]) == 5000)
        #expect(metrics.value("mtls_connections_open") == 0)
    }

    @Test("--status on a non-loopback address is a usage error unless --unsafe-status", arguments: [
        ["echo-server", "--listen", "127.0.0.1:0"], ["hello-server", "--listen", "127.0.0.1:0"],
        ["proxy", "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"],
    ])
    func nonLoopbackRefused(command: [String]) throws {
        let pki = try PKIFixture()
        let refused = try runTool(try mtlsExecutable(), command + ["--pki", pki.path, "--status", "0.0.0.0:0"])
        #expect(refused.status == 64, "\(refused.output)")
        #expect(refused.output.contains("--status 0.0.0.0:0 is not a loopback address"), "\(refused.output)")
        #expect(refused.output.contains("--unsafe-status"), "\(refused.output)")
        #expect(!refused.output.contains("listening on"))

        let unsafe = try ServerProcess(try mtlsExecutable(), command + ["--pki", pki.path, "--status", "0.0.0.0:0", "--unsafe-status"])
        defer { unsafe.stop() }
        #expect(AuthorizationTests.waitForLog(unsafe, "status on http://0.0.0.0:"), "\(unsafe.log)")
    }

    @Test("the Prometheus text parser refuses what is not the text format")
    func parserIsStrict() {
        #expect(throws: ToolError.self) { try PrometheusText("mtls_x 1\n") }  // no TYPE
        #expect(throws: ToolError.self) { try PrometheusText("# TYPE a counter\na{b=\"c} 1\n") }
        #expect(throws: ToolError.self) { try PrometheusText("# TYPE a counter\na{b=\"c\"} one\n") }
        #expect(throws: ToolError.self) { try PrometheusText("# TYPE a counter\n# TYPE a counter\na 1\n") }
        #expect(throws: ToolError.self) { try PrometheusText("# TYPE 1a counter\n1a 1\n") }
        let parsed = try? PrometheusText("# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"q\\\"\",y=\"2\"} 3 1700000000\n")
        #expect(parsed?.value("a_total", ["x": "q\"", "y": "2"]) == 3)
    }
}

/// The Prometheus text exposition format (0.0.4), parsed strictly: every line is a comment, a
/// `# HELP`/`# TYPE` line, or `name{label="value",...} value [timestamp]`; every sample belongs to a
/// family whose TYPE came first (a histogram's `_bucket`, `_sum` and `_count` to the histogram's),
/// each family is typed once, and values are floats.
struct PrometheusText {
    struct Sample: CustomStringConvertible {
        let name: String
        let labels: [String: String]
        let value: Double
        var description: String { "\(name)\(labels) \(value)" }
    }

    private(set) var samples: [Sample] = []
    private(set) var types: [String: String] = [:]

    init(_ text: String) throws {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
            if line.hasPrefix("#") {
                try comment(line)
            } else {
                samples.append(try sample(line))
            }
        }
    }

    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// Every sample of `name`, whatever its labels.
    func sum(_ name: String) -> Double {
        samples.filter { $0.name == name }.reduce(0) { $0 + $1.value }
    }

    private static func isName(_ text: Substring, colons: Bool = true) -> Bool {
        guard let first = text.first, first.isASCII, first.isLetter || first == "_" || (colons && first == ":") else { return false }
        return text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || (colons && $0 == ":")) }
    }

    private mutating func comment(_ line: Substring) throws {
        let parts = line.split(separator: " ", maxSplits: 3)
        guard parts.count >= 3, parts[0] == "#", parts[1] == "TYPE" || parts[1] == "HELP" else { return }  // a plain comment
        guard Self.isName(parts[2]) else { throw ToolError("bad metric name in '\(line)'") }
        guard parts[1] == "TYPE" else { return }
        let type = parts.count == 4 ? String(parts[3]) : ""
        guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(type) else { throw ToolError("bad type in '\(line)'") }
        guard types.updateValue(type, forKey: String(parts[2])) == nil else { throw ToolError("typed twice: '\(line)'") }
        guard !samples.contains(where: { family(of: $0.name) == String(parts[2]) }) else {
            throw ToolError("TYPE after samples: '\(line)'")
        }
    }

    /// The declared family a sample name belongs to, if any.
    private func family(of name: String) -> String? {
        if types[name] != nil { return name }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if let type = types[base], type == "histogram" || type == "summary" { return base }
        }
        return nil
    }

    private func sample(_ line: Substring) throws -> Sample {
        var rest = line[...]
        let name = rest.prefix { $0 != "{" && $0 != " " }
        guard Self.isName(name) else { throw ToolError("bad metric name in '\(line)'") }
        guard family(of: String(name)) != nil else { throw ToolError("sample without a TYPE: '\(line)'") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let label = rest.prefix { $0 != "=" }
                guard Self.isName(label, colons: false), rest.dropFirst(label.count).hasPrefix("=\"") else {
                    throw ToolError("bad label in '\(line)'")
                }
                rest = rest.dropFirst(label.count + 2)
                var value = ""
                var closed = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if character == "\"" { closed = true; break }
                    if character == "\\" {
                        guard let escaped = rest.first else { break }
                        rest = rest.dropFirst()
                        switch escaped {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw ToolError("bad escape in '\(line)'")
                        }
                    } else {
                        value.append(character)
                    }
                }
                guard closed, labels.updateValue(value, forKey: String(label)) == nil else {
                    throw ToolError("bad or repeated label in '\(line)'")
                }
                if rest.first == "," { rest = rest.dropFirst() } else if rest.first != "}" { throw ToolError("bad labels in '\(line)'") }
            }
            rest = rest.dropFirst()
        }
        let fields = rest.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 2 || fields.count == 3, fields[0].isEmpty,
              let value = Self.float(fields[1]), fields.count == 2 || Int64(fields[2]) != nil
        else { throw ToolError("bad value in '\(line)'") }
        return Sample(name: String(name), labels: labels, value: value)
    }

    private static func float(_ text: Substring) -> Double? {
        switch text {
        case "+Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default:
            guard text.allSatisfy({ $0.isNumber || "+-.eE".contains($0) }) else { return nil }
            return Double(text)
        }
    }
}
