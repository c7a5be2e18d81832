import Foundation
import Testing
import TestSupport

/// The built `mtls proxy server|client` between outside peers: curl as the client and Python's
/// http.server as the plain target.
extension ProxySuite {
    @Suite("mtls proxy with curl and a plain HTTP server")
    struct CommandLineTests {
        /// The test PKI written out as `mtls pki init` lays it out, for the command line.
        final class PKIFiles: Sendable {
            let directory: TemporaryDirectory
            init() throws {
                let pki = TestPKI.shared(.ecdsaP256)
                directory = try TemporaryDirectory(prefix: "mtls-proxy")
                try directory.write("ca.pem", pki.root.certificatePEM)
                try directory.write("server.pem", pki.server.chainPEM)
                try directory.write("server.key", pki.server.privateKeyPEM)
                try directory.write("client.pem", pki.client.chainPEM)
                try directory.write("client.key", pki.client.privateKeyPEM)
            }
            var path: String { directory.path }
            func file(_ name: String) -> String { directory.file(name) }
        }

        /// Starts a program that prints the port it listens on, and waits for that line.
        func startListening(_ executable: String, _ arguments: [String], portPattern: String = #"listening on [^ ]*:(\d+)"#)
            throws -> (process: ChildProcess, port: Int) {
            let process = try ChildProcess(executable, arguments)
            for _ in 0..<300 {
                let output = process.output
                if let match = output.firstMatch(of: try Regex(portPattern)), let port = Int(match.output[1].substring ?? "") {
                    return (process, port)
                }
                if !process.isRunning { break }
                usleep(20_000)
            }
            process.terminate()
            throw ProxyTestFailure("\(executable) did not report its port: \(process.output)")
        }

        func curl(_ arguments: [String]) throws -> (status: Int32, output: String) {
            let process = try ChildProcess("/usr/bin/curl", ["-sS", "--max-time", "10"] + arguments)
            let status = process.wait()
            return (status, process.output)
        }

        static let pairs: [(client: String, server: String)] = [("openssl", "gnutls"), ("gnutls", "openssl")]

        @Test("curl → mtls proxy client → mtls proxy server → python3 -m http.server", arguments: pairs)
        func curlThroughBothProxies(backends: (client: String, server: String)) throws {
            let mtls = try builtExecutable("mtls")
            let pki = try PKIFiles()
            let marker = "proxied-\(UUID().uuidString)"
            let web = try TemporaryDirectory(prefix: "mtls-proxy-web")
            try web.write("marker.txt", marker)
            // Debian's own python3 (scripts/install-deps): a version manager's shim on PATH may run the
            // interpreter as its child, which SIGTERM would then leave behind.
            let python = try startListening("/usr/bin/python3", ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                                                "--directory", web.path], portPattern: #"port (\d+)"#)
            defer {
                // A child spawned from a test thread inherits its blocked signals (SIGTERM among
                // them), and Python, unlike our servers, never unblocks them: terminate() would wait
                // out its whole grace period.
                kill(python.process.pid, SIGKILL)
                python.process.wait()
            }
            let server = try startListening(mtls, ["proxy", "server", "--pki", pki.path, "--backend", backends.server,
                                                   "--listen", "127.0.0.1:0", "--target", "127.0.0.1:\(python.port)", "--loops", "1"])
            defer { server.process.terminate() }
            let client = try startListening(mtls, ["proxy", "client", "--pki", pki.path, "--backend", backends.client,
                                                   "--listen", "127.0.0.1:0", "--target", "127.0.0.1:\(server.port)",
                                                   "--server-name", "localhost", "--loops", "1"])
            defer { client.process.terminate() }

            // curl with its own client certificate straight to the proxy server...
            let direct = try curl(["--cacert", pki.file("ca.pem"), "--cert", pki.file("client.pem"), "--key", pki.file("client.key"),
                                   "https://localhost:\(server.port)/marker.txt"])
            #expect(direct.status == 0 && direct.output == marker, "\(direct.output)")
            // ...plain HTTP through the proxy client...
            let proxied = try curl(["http://127.0.0.1:\(client.port)/marker.txt"])
            #expect(proxied.status == 0 && proxied.output == marker, "\(proxied.output)")
            // ...and without a certificate: refused, and the web server never hears of it.
            let refused = try curl(["--cacert", pki.file("ca.pem"), "https://localhost:\(server.port)/marker.txt"])
            #expect(refused.status != 0)
            #expect(!refused.output.contains(marker))
            #expect(python.process.output.components(separatedBy: "GET /marker.txt").count - 1 == 2, "\(python.process.output)")

            // SIGTERM: both drain (nothing is open) and exit cleanly.
            kill(server.process.pid, SIGTERM)
            kill(client.process.pid, SIGTERM)
            #expect(server.process.wait(seconds: 10) == 0, "\(server.process.output)")
            #expect(client.process.wait(seconds: 10) == 0, "\(client.process.output)")
        }

        @Test("The proxy client refuses a listener off loopback unless told otherwise")
        func refusesUnsafeSetups() throws {
            let mtls = try builtExecutable("mtls")
            let pki = try PKIFiles()
            let common = ["--pki", pki.path, "--target", "127.0.0.1:9"]
            let publicListen = try ChildProcess(mtls, ["proxy", "client", "--listen", "0.0.0.0:0"] + common)
            #expect(publicListen.wait() == 64)
            #expect(publicListen.output.contains("is not a loopback address"), "\(publicListen.output)")

            let unsafe = try startListening(mtls, ["proxy", "client", "--listen", "0.0.0.0:0", "--unsafe-listen"] + common)
            unsafe.process.terminate()

        }
    }
}

struct ProxyTestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
