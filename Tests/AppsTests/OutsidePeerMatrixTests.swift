import Foundation
import Testing
import TestSupport

/// Our hello-server and hello-client, on each backend, against TLS stacks we did not write, in both
/// roles: every peer × backend × TLS version (1.2, 1.3) × key type of `mtls pki init` (ECDSA P-256,
/// RSA-2048, Ed25519), plus one refusal per peer and direction on each backend.
///
/// - Outside clients (curl, Python's ssl, `openssl s_client`, `gnutls-cli`, Go crypto/tls, Java JSSE,
///   Node tls) reach `mtls hello-server`; each offers exactly one TLS version, so the version is forced
///   from the peer's side, and the server's log confirms what was negotiated.
/// - `mtls hello-client` reaches outside servers (`openssl s_server -WWW`, `gnutls-serv --http`, nginx,
///   and the Go, Java and Node peers), each limited to exactly one TLS version; the client prints what
///   it negotiated.
/// - Refusals: an outside client without a certificate never gets "hello" from our server, and our
///   client refuses an outside server whose certificate comes from another CA.
///
/// Each cell is a test case of its own. The cases run on their own threads, a few at a time
/// (`MatrixGate`), so that waiting for peer processes does not hold Swift's cooperative pool.
/// A peer whose toolchain is missing is skipped with its reason; scripts/install-deps installs them all.
@Suite("Outside peer matrix")
struct OutsidePeerMatrixTests {
    @Test("An outside client reaches our hello-server", arguments: ServerCell.all)
    func outsideClientReachesOurServer(_ cell: ServerCell) async throws {
        let outcome = try await MatrixGate.run(cell.description, missingToolchain: cell.peer.missingToolchain, {
            try cell.peer.reachOurServer(backend: cell.backend, pki: try MatrixPKI.get(cell.keyType),
                                         version: cell.version, withCertificate: true)
        })
        withKnownIssue(KnownIssues.reason(cell.description), isIntermittent: false) {
            #expect(outcome.client.status == 0, "\(cell): \(outcome)")
            #expect(outcome.client.output.contains("hello, client"), "\(cell): \(outcome)")
            #expect(outcome.serverLog.contains("version=TLS \(cell.version.rawValue)"),
                    "\(cell): our server did not log TLS \(cell.version.rawValue): \(outcome)")
        } when: {
            KnownIssues.reason(cell.description) != nil
        }
    }

    @Test("Our hello-client reaches an outside server", arguments: ClientCell.all)
    func ourClientReachesOutsideServer(_ cell: ClientCell) async throws {
        let outcome = try await MatrixGate.run(cell.description, missingToolchain: cell.peer.missingToolchain, {
            let pki = try MatrixPKI.get(cell.keyType)
            return try cell.peer.answerOurClient(backend: cell.backend, serverPKI: pki, clientPKI: pki, version: cell.version)
        })
        withKnownIssue(KnownIssues.reason(cell.description), isIntermittent: false) {
            #expect(outcome.client.status == 0, "\(cell): \(outcome)")
            #expect(outcome.client.output.contains(cell.peer.answer), "\(cell): \(outcome)")
            #expect(outcome.client.output.contains("tls: TLS \(cell.version.rawValue)"), "\(cell): \(outcome)")
        } when: {
            KnownIssues.reason(cell.description) != nil
        }
    }

    @Test("Our hello-server refuses an outside client without a certificate", arguments: RefusalCell<OutsideClient>.all)
    func ourServerRefusesClientWithoutCertificate(_ cell: RefusalCell<OutsideClient>) async throws {
        let outcome = try await MatrixGate.run(cell.description, missingToolchain: cell.peer.missingToolchain, {
            try cell.peer.reachOurServer(backend: cell.backend, pki: try MatrixPKI.get("ecdsa-p256"),
                                         version: .tls13, withCertificate: false)
        })
        #expect(!outcome.client.output.contains("hello"), "\(cell): the client got an answer: \(outcome)")
        #expect(outcome.client.status != 0, "\(cell): \(outcome)")
        #expect(outcome.serverLog.contains("a certificate is required and none was presented"), "\(cell): \(outcome)")
    }

    @Test("Our hello-client refuses an outside server from another CA", arguments: RefusalCell<OutsideServer>.all)
    func ourClientRefusesServerFromAnotherCA(_ cell: RefusalCell<OutsideServer>) async throws {
        let outcome = try await MatrixGate.run(cell.description, missingToolchain: cell.peer.missingToolchain, {
            try cell.peer.answerOurClient(backend: cell.backend, serverPKI: try MatrixPKI.get("stranger"),
                                          clientPKI: try MatrixPKI.get("ecdsa-p256"), version: .tls13)
        })
        #expect(outcome.client.status == 1, "\(cell): \(outcome)")
        #expect(!outcome.client.output.contains(cell.peer.answer), "\(cell): \(outcome)")
        #expect(outcome.client.output.contains("signed by an unknown authority"), "\(cell): \(outcome)")
    }

    /// HTTP/1.1 clients must read chunked answers (RFC 9112, 6.1); a Node handler that writes its head
    /// before its body answers that way, and so do many servers. Not a TLS matter, but our client's.
    @Test("Our hello-client reads a chunked answer (a Node server's default framing)", arguments: Matrix.backends)
    func ourClientReadsChunkedAnswer(backend: String) async throws {
        let node = OutsideServer.node
        let outcome = try await MatrixGate.run("chunked answer × \(backend)", missingToolchain: node.missingToolchain, {
            let pki = try MatrixPKI.get("ecdsa-p256")
            return try node.answerOurClient(backend: backend, serverPKI: pki, clientPKI: pki, version: .tls13,
                                            chunked: true)
        })
        #expect(outcome.client.status == 0, "\(outcome)")
        #expect(outcome.client.output.contains(node.answer), "\(outcome)")
        #expect(outcome.serverLog.contains("answered TLSv1.3 request from CN=client"), "\(outcome)")
    }
}

// MARK: - Known issues

/// Cells that fail against our code in a way that looks like our bug (Sources are not changed by this
/// suite): the cell's description, and the failure it shows, quoted.
enum KnownIssues {
    static let cells: [String: String] = [:]

    static func reason(_ cell: String) -> Comment? { cells[cell].map { Comment(rawValue: $0) } }
}

// MARK: - The matrix

enum PeerTLSVersion: String, CaseIterable, Sendable, Codable {
    case tls12 = "1.2"
    case tls13 = "1.3"
}

enum Matrix {
    static let backends = ["openssl", "gnutls"]
    static let keyTypes = ["ecdsa-p256", "rsa-2048", "ed25519"]

    /// One cell per peer × backend × TLS version × key type.
    static func cells<Peer: CaseIterable, Cell>(_ make: (Peer, String, PeerTLSVersion, String) -> Cell) -> [Cell] {
        Peer.allCases.flatMap { peer in
            backends.flatMap { backend in
                PeerTLSVersion.allCases.flatMap { version in keyTypes.map { make(peer, backend, version, $0) } }
            }
        }
    }
}

/// An outside client against our hello-server.
struct ServerCell: Sendable, Codable, CustomStringConvertible, CustomTestStringConvertible {
    let peer: OutsideClient
    let backend: String
    let version: PeerTLSVersion
    let keyType: String

    static let all: [ServerCell] = Matrix.cells { (peer: OutsideClient, backend, version, keyType) in
        ServerCell(peer: peer, backend: backend, version: version, keyType: keyType)
    }

    var description: String { "\(peer.rawValue) → hello-server \(backend), TLS \(version.rawValue), \(keyType)" }
    var testDescription: String { description }
}

/// Our hello-client against an outside server.
struct ClientCell: Sendable, Codable, CustomStringConvertible, CustomTestStringConvertible {
    let peer: OutsideServer
    let backend: String
    let version: PeerTLSVersion
    let keyType: String

    static let all: [ClientCell] = Matrix.cells { (peer: OutsideServer, backend, version, keyType) in
        ClientCell(peer: peer, backend: backend, version: version, keyType: keyType)
    }

    var description: String { "hello-client \(backend) → \(peer.rawValue), TLS \(version.rawValue), \(keyType)" }
    var testDescription: String { description }
}

/// One peer against one of our backends, for a refusal.
struct RefusalCell<Peer: RawRepresentable & CaseIterable & Sendable & Codable>: Sendable, Codable, CustomStringConvertible,
    CustomTestStringConvertible where Peer.RawValue == String {
    let peer: Peer
    let backend: String

    static var all: [RefusalCell] { Peer.allCases.flatMap { peer in Matrix.backends.map { RefusalCell(peer: peer, backend: $0) } } }

    var description: String { "\(peer.rawValue) × \(backend)" }
    var testDescription: String { description }
}

/// What one cell saw: the client's exit status and output (an outside client's, or our hello-client's)
/// and the server's log (our hello-server's, or the outside server's).
struct CellOutcome: Sendable, CustomStringConvertible {
    let client: BoundedResult
    let serverLog: String

    var description: String {
        "\n--- client (exit \(client.status)):\n\(client.output)\n--- server:\n\(serverLog)"
    }
}

// MARK: - Outside clients

enum OutsideClient: String, CaseIterable, Sendable, Codable {
    case curl
    case python = "Python ssl"
    case opensslSClient = "openssl s_client"
    case gnutlsCLI = "gnutls-cli"
    case go = "Go crypto/tls"
    case java = "Java JSSE"
    case node = "Node tls"

    /// Why this peer cannot run here (a tool not on the PATH), or nil.
    var missingToolchain: String? {
        switch self {
        case .curl: return executableOnPath("curl") == nil ? "curl is not on the PATH" : nil
        case .python: return executableOnPath("python3") == nil ? "python3 is not on the PATH" : nil
        case .opensslSClient: return executableOnPath("openssl") == nil ? "openssl is not on the PATH" : nil
        case .gnutlsCLI: return executableOnPath("gnutls-cli") == nil ? "gnutls-cli is not on the PATH" : nil
        case .go: return OutsidePeers.go.isAvailable ? nil : OutsidePeers.go.unavailableReason
        case .java: return OutsidePeers.java.isAvailable ? nil : OutsidePeers.java.unavailableReason
        case .node: return OutsidePeers.node.isAvailable ? nil : OutsidePeers.node.unavailableReason
        }
    }

    /// Starts our hello-server on `backend` with `pki` and sends it one GET /hello from this client,
    /// limited to `version`, with the PKI's client certificate or none.
    func reachOurServer(backend: String, pki: MatrixPKI, version: PeerTLSVersion, withCertificate: Bool) throws -> CellOutcome {
        let server = try ServerProcess(try mtlsExecutable(), ["hello-server", "--backend", backend, "--pki", pki.path,
                                                          "--listen", "127.0.0.1:0", "--loops", "1"])
        defer { server.stop() }
        let result = try fetch(port: server.port, pki: pki, version: version, withCertificate: withCertificate)
        // The server logs the connection as it ends; give it a moment after the client has gone.
        for _ in 0..<40 where !server.log.contains("connection") { usleep(25_000) }
        return CellOutcome(client: result, serverLog: server.log)
    }

    private func fetch(port: Int, pki: MatrixPKI, version: PeerTLSVersion, withCertificate: Bool) throws -> BoundedResult {
        let ca = pki.file("ca.pem")
        let cert = withCertificate ? pki.file("client.pem") : nil
        let key = withCertificate ? pki.file("client.key") : nil
        switch self {
        case .curl:
            var arguments = ["-sS", "--fail", "--max-time", "30", "--cacert", ca,
                             "--resolve", "localhost:\(port):127.0.0.1", "https://localhost:\(port)/hello"]
            arguments += version == .tls13 ? ["--tlsv1.3"] : ["--tlsv1.2", "--tls-max", "1.2"]
            if let cert, let key { arguments += ["--cert", cert, "--key", key] }
            return try runBounded("curl", arguments)
        case .python:
            // The same client as InteropTests', with its context pinned to one version.
            return try runBounded("python3", ["-c", PythonVersionPin.prelude + PythonClient.script, ca, cert ?? "",
                                              key ?? "", "\(port)", version.rawValue])
        case .opensslSClient:
            var arguments = ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost", "-CAfile", ca,
                             "-verify_return_error", "-verify_hostname", "localhost", "-quiet",
                             version == .tls13 ? "-tls1_3" : "-tls1_2"]
            if let cert, let key { arguments += ["-cert", cert, "-key", key] }
            return try runBounded("openssl", arguments, input: helloRequest)
        case .gnutlsCLI:
            var arguments = ["--x509cafile", ca, "--priority", "NORMAL:-VERS-ALL:+VERS-TLS\(version.rawValue)",
                             "-p", "\(port)", "127.0.0.1"]
            if let cert, let key { arguments += ["--x509certfile", cert, "--x509keyfile", key] }
            return try runBounded("gnutls-cli", arguments, input: helloRequest)
        case .go:
            var arguments = ["client", "-port", "\(port)", "-tls", version.rawValue, "-ca", ca, "-name", "localhost"]
            if let cert, let key { arguments += ["-cert", cert, "-key", key] }
            return try OutsidePeers.go.run(arguments)
        case .java:
            let bundle = withCertificate ? pki.file("client.p12") : "-"
            return try OutsidePeers.java.run(["client", "localhost", "\(port)", bundle, MatrixPKI.password, ca,
                                              version.rawValue])
        case .node:
            var arguments = ["client", "--port", "\(port)", "--tls", version.rawValue, "--ca", ca, "--name", "localhost"]
            if let cert, let key { arguments += ["--cert", cert, "--key", key] }
            return try OutsidePeers.node.run(arguments)
        }
    }
}

enum PythonVersionPin {
    /// Run before `PythonClient.script`: takes the TLS version off the end of argv and pins every
    /// default context to it.
    static let prelude = """
    import ssl, sys
    _pinned_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[sys.argv.pop()]
    _default_context = ssl.create_default_context
    def _pinned_context(*args, **kwargs):
        context = _default_context(*args, **kwargs)
        context.minimum_version = context.maximum_version = _pinned_version
        return context
    ssl.create_default_context = _pinned_context

    """
}

// MARK: - Outside servers

enum OutsideServer: String, CaseIterable, Sendable, Codable {
    case opensslSServer = "openssl s_server"
    case gnutlsServ = "gnutls-serv"
    case nginx
    case go = "Go crypto/tls"
    case java = "Java JSSE"
    case node = "Node tls"

    var missingToolchain: String? {
        switch self {
        case .opensslSServer: return executableOnPath("openssl") == nil ? "openssl is not on the PATH" : nil
        case .gnutlsServ: return executableOnPath("gnutls-serv") == nil ? "gnutls-serv is not on the PATH" : nil
        case .nginx: return Nginx.executable == nil ? "nginx is not installed (scripts/install-deps installs it)" : nil
        case .go: return OutsidePeers.go.isAvailable ? nil : OutsidePeers.go.unavailableReason
        case .java: return OutsidePeers.java.isAvailable ? nil : OutsidePeers.java.unavailableReason
        case .node: return OutsidePeers.node.isAvailable ? nil : OutsidePeers.node.unavailableReason
        }
    }

    /// What the server's answer contains when it has verified our client certificate (CN=client).
    var answer: String {
        switch self {
        case .opensslSServer: return "hello from s_server"
        case .gnutlsServ: return "Subject: CN=client"  // its page describes the client certificate
        case .nginx: return "hello from nginx, CN=client"
        case .go: return "hello from go, CN=client"
        case .java: return "hello from java, CN=client"
        case .node: return "hello from node, CN=client"
        }
    }

    /// Starts this server with `serverPKI`'s server certificate, trusting `clientPKI`'s CA for client
    /// certificates and offering only `version`, and runs our hello-client (with `clientPKI`) against it.
    /// `chunked`: the Node server answers with chunked framing instead of a Content-Length.
    func answerOurClient(backend: String, serverPKI: MatrixPKI, clientPKI: MatrixPKI,
                         version: PeerTLSVersion, chunked: Bool = false) throws -> CellOutcome {
        let scratch = try TemporaryDirectory(prefix: "mtls-peer-server")
        let server = try startListening(serverPKI: serverPKI, clientCA: clientPKI.file("ca.pem"), version: version,
                                        scratch: scratch, chunked: chunked)
        defer { server.stop() }
        var arguments = ["hello-client", "--backend", backend, "--pki", clientPKI.path,
                         "--url", "https://127.0.0.1:\(server.port)/hello", "--server-name", "localhost"]
        if version == .tls13 { arguments += ["--tls-min", "1.3"] }
        if OurClient.hasTLSMax { arguments += ["--tls-max", version.rawValue] }
        let result = try runBounded(try mtlsExecutable(), arguments)
        // The Go, Java and Node servers log each connection ("answered ...", or "... failed" / "...
        // error ...") just after it ends on their side: on a busy machine our client can be done first.
        if [.go, .java, .node].contains(self) {
            for _ in 0..<40 where !["answered", "failed", "error"].contains(where: server.log.contains) {
                usleep(25_000)
            }
        }
        return CellOutcome(client: result, serverLog: server.log + Nginx.errorLog(scratch))
    }

    /// Servers that cannot listen on port 0 and say which port they got are given `freePort()`, which
    /// another cell running at the same time may take first: such a server exits, and is started again.
    private func startListening(serverPKI: MatrixPKI, clientCA: String, version: PeerTLSVersion,
                                scratch: TemporaryDirectory, chunked: Bool) throws -> ServerProcess {
        var lastFailure: Error = ToolError("\(rawValue) did not start")
        for _ in 0..<3 {
            do {
                let server = try start(serverPKI: serverPKI, clientCA: clientCA, version: version, scratch: scratch,
                                       chunked: chunked)
                usleep(20_000)
                if server.isRunning { return server }
                lastFailure = ToolError("\(rawValue) exited at start: \(server.log)")
            } catch {
                lastFailure = error  // e.g. its port was taken before it could bind: try another one
            }
        }
        throw lastFailure
    }

    private func start(serverPKI: MatrixPKI, clientCA: String, version: PeerTLSVersion,
                       scratch: TemporaryDirectory, chunked: Bool) throws -> ServerProcess {
        let cert = serverPKI.file("server.pem"), key = serverPKI.file("server.key")
        switch self {
        case .opensslSServer:
            try scratch.write("hello", "hello from s_server\n")
            let port = freePort()
            return try ServerProcess("openssl", [
                "s_server", "-accept", "127.0.0.1:\(port)", "-cert", cert, "-key", key, "-CAfile", clientCA,
                "-Verify", "1", "-verify_return_error", "-WWW", version == .tls13 ? "-tls1_3" : "-tls1_2"],
                port: port, directory: scratch.path)
        case .gnutlsServ:
            let port = freePort()
            return try ServerProcess("gnutls-serv", [
                "--http", "--require-client-cert", "--verify-client-cert", "--x509cafile", clientCA,
                "--x509certfile", cert, "--x509keyfile", key,
                "--priority", "NORMAL:-VERS-ALL:+VERS-TLS\(version.rawValue)", "-p", "\(port)"], port: port)
        case .nginx:
            return try NginxServer.start(cert: cert, key: key, clientCA: clientCA, version: version, scratch: scratch)
        case .go:
            return try OutsidePeers.go.start(["server", "-port", "0", "-tls", version.rawValue, "-cert", cert, "-key", key,
                                              "-ca", clientCA])
        case .java:
            return try OutsidePeers.java.start(["server", "0", serverPKI.file("server.p12"), MatrixPKI.password, clientCA,
                                                version.rawValue])
        case .node:
            return try OutsidePeers.node.start(["server", "--port", "0", "--tls", version.rawValue, "--cert", cert,
                                                "--key", key, "--ca", clientCA] + (chunked ? ["--chunked"] : []))
        }
    }
}

/// nginx with our server certificate, requiring a client certificate from `clientCA`.
enum NginxServer {
    static func start(cert: String, key: String, clientCA: String, version: PeerTLSVersion,
                      scratch: TemporaryDirectory) throws -> ServerProcess {
        guard let executable = Nginx.executable else { throw ToolError("nginx is not installed") }
        let port = freePort()
        let config = try Nginx.writeConfiguration(scratch: scratch, server: """
                server {
                    listen 127.0.0.1:\(port) ssl;
                    ssl_certificate \(cert);
                    ssl_certificate_key \(key);
                    ssl_client_certificate \(clientCA);
                    ssl_verify_client on;
                    ssl_protocols TLSv\(version.rawValue);
                    location / {
                        default_type text/plain;
                        return 200 "hello from nginx, $ssl_client_s_dn\\n";
                    }
                }
            """)
        return try ServerProcess(executable, Nginx.arguments(configuration: config, scratch: scratch), port: port)
    }
}

enum OurClient {
    /// Whether `mtls hello-client` has `--tls-max` (added in parallel with this suite). Without it the
    /// version is forced from the server's side alone.
    static let hasTLSMax: Bool = {
        guard let help = try? runBounded(try mtlsExecutable(), ["hello-client", "--help"]) else { return false }
        return help.output.contains("--tls-max")
    }()
}

// MARK: - Fixtures

/// The `pki init` directories the matrix shares (read-only), one per key type plus "stranger" (another
/// CA, ECDSA P-256), with the leaves also as PKCS#12 bundles for the Java peer. Made once per test
/// process, removed when it exits.
struct MatrixPKI: Sendable {
    static let password = "matrix-peer"
    let path: String

    func file(_ name: String) -> String { path + "/" + name }

    private static let made = Locked<[String: Result<MatrixPKI, ToolError>]>([:])

    static func get(_ name: String) throws -> MatrixPKI {
        try made.withLock { made in
            if let existing = made[name] { return try existing.get() }
            let result: Result<MatrixPKI, ToolError>
            do { result = .success(try MatrixPKI(make: name)) }
            catch let error as ToolError { result = .failure(error) }
            catch { result = .failure(ToolError("\(error)")) }
            made[name] = result
            return try result.get()
        }
    }

    private init(make name: String) throws {
        path = try PeerScratch.directory("pki-\(name)")
        let keyType = name == "stranger" ? "ecdsa-p256" : name
        let mtls = try mtlsExecutable()
        let initialized = try runBounded(mtls, ["pki", "init", "--out", path, "--key-type", keyType])
        guard initialized.status == 0 else { throw ToolError("pki init --key-type \(keyType) failed: \(initialized.output)") }
        for leaf in ["client", "server"] {
            let bundled = try runBounded(mtls, ["pki", "pkcs12", "--cert", file("\(leaf).pem"), "--key", file("\(leaf).key"),
                                                "--out", file("\(leaf).p12"), "--password", Self.password])
            guard bundled.status == 0 else { throw ToolError("pki pkcs12 \(leaf) failed: \(bundled.output)") }
        }
    }
}

/// Runs each matrix cell's blocking work (starting processes and waiting for them) on a thread of its
/// own, at most `width` cells at once: enough to overlap process start-up and I/O waits on two cores
/// without starting every peer at once.
actor MatrixGate {
    static let shared = MatrixGate(width: Int(ProcessInfo.processInfo.environment["MTLS_MATRIX_WIDTH"] ?? "") ?? 4)

    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(width: Int) { free = max(1, width) }

    private func enter() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    private func leave() {
        if waiting.isEmpty { free += 1 } else { waiting.removeFirst().resume() }
    }

    /// Runs `body` through the gate. When `missingToolchain` is set, prints why and cancels the test
    /// case instead (Swift 6.3's console shows a cancelled case as passed, without its comment: hence
    /// the line printed).
    static func run<T: Sendable>(_ cell: String, missingToolchain: String?,
                                 _ body: @escaping @Sendable () throws -> T) async throws -> T {
        if let missingToolchain {
            print("skipped \(cell): \(missingToolchain)")
            try Test.cancel("skipped: \(missingToolchain)")
        }
        await shared.enter()
        let result = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Result { try body() }) }.start()
        }
        await shared.leave()
        return try result.get()
    }
}
