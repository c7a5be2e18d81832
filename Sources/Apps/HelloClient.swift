import ArgumentParser
import Dispatch
import Foundation
import HTTPHello
import Loop
import Service
import TLSContract

/// `mtls hello-client`: fetches /hello and shows what was negotiated and who answered.
struct HelloClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hello-client", abstract: "Fetch https://HOST:PORT/hello with a client certificate.")

    @OptionGroup var credentials: CredentialOptions

    @Option(help: "The URL to fetch: https://HOST:PORT/PATH (or http:// for a plain server).")
    var url: String = "https://localhost:8443/hello"

    @Option(help: "Requests to send: on one keep-alive connection, or with --interval each on a connection of its own.")
    var count: Int = 1

    @Option(help: ArgumentHelp(
        "Seconds between requests, each on a new connection made with the credentials current at that moment: a long-running client that reloads them on SIGHUP, when its files change, and every --reload-interval.",
        valueName: "seconds"))
    var interval: Double?

    @Option(name: .customLong("server-name"), help: "The name to verify the server against (default: the URL's host).")
    var serverName: String?

    @OptionGroup(title: "Server authorization (any one rule admits; checked before any request byte)")
    var verify: PeerVerifyOptions

    @OptionGroup(title: "Reloading credentials (with --interval)") var reload: ReloadOptions

    @OptionGroup var keyLog: KeyLogOptions

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        if let interval, !(interval >= 0) { throw ValidationError("--interval takes a number of seconds, 0 or more") }
    }

    /// The connection's options: the --verify-* rules, checked once the handshake completes.
    private func connectionOptions(for target: ParsedURL) throws -> (ConnectionOptions, PeerAuthorizer?) {
        var options = ConnectionOptions()
        if !target.isTLS, try !verify.policy().isEmpty {
            throw ValidationError("--verify-* rules check the server's certificate: they need an https:// URL")
        }
        let authorizer = try verify.install(into: &options)
        return (options, authorizer)
    }

    func run() throws {
        let target = try ParsedURL(url)
        var configuration = TLSConfiguration(role: .client, identity: credentials.identity(role: .client),
                                             trustRoots: credentials.trustRoots,
                                             serverName: serverName ?? target.host,
                                             minimumVersion: credentials.minimumVersion,
                                             maximumVersion: credentials.maximumVersion)
        configuration.crls = credentials.crls
        if target.isTLS {
            configuration.keyLog = try keyLog.open(logger: credentials.makeLogger("mtls.hello-client"), command: "hello-client")
        }
        if let interval {
            try runRepeatedly(target: target, configuration: configuration, interval: interval)
            return
        }
        var tls: (any TLSContext)?
        if target.isTLS {
            do {
                tls = try credentials.selectedBackend.makeContext(configuration)
            } catch {
                printError("mtls hello-client: \(error.summary)")
                throw ExitCode(1)
            }
        }
        let (options, authorizer) = try connectionOptions(for: target)
        let group = LoopGroup(count: 1)
        defer { group.shutdown() }
        let outcome = HelloFetch.run(loop: group.next(), target: target.endpoint, path: target.path, host: target.host,
                                     tls: tls, count: count, options: options)
        if let error = outcome.error, error.isPolicyRefusal, let refusal = authorizer?.lastRefusal {
            printError("mtls hello-client: \(refusal); no request was sent")
            throw ExitCode(1)
        }
        if let error = outcome.error {
            printError("mtls hello-client: " + UserFacingError.describe(
                error, role: .client, options: credentials, hasIdentity: credentials.identity(role: .client) != nil))
            throw ExitCode(1)
        }
        for body in outcome.bodies { print(String(decoding: body, as: UTF8.self), terminator: body.last == 10 ? "" : "\n") }
        if let negotiated = outcome.negotiated {
            print("tls: \(negotiated.version), \(negotiated.cipherSuite), \(negotiated.group ?? "?")")
        }
        if let server = outcome.serverIdentity {
            print("server: \(server.subject) (SANs: \((server.dnsNames + server.ipAddresses + server.uris).joined(separator: ", ")))")
            print("server spki-sha256: \(server.spkiSHA256Hex)")
            if let leaf = server.certificateChainDER.first, let summary = try? CertificateSummary(derEncoded: leaf) {
                print("server serial: \(summary.serialHex), valid until \(DateText.format(summary.notValidAfter))")
            }
        }
        if outcome.statuses.contains(where: { $0 >= 400 }) { throw ExitCode(1) }
    }

    /// `--count N --interval S`: N requests, S seconds apart, each on its own connection with the
    /// context current then, so a renewal (ours, or the server's) shows from one line to the next.
    /// One line per request; a failed one is reported and the next is tried; exit 1 if any failed.
    private func runRepeatedly(target: ParsedURL, configuration: TLSConfiguration, interval: Double) throws {
        var reloading: ReloadingContext?
        var triggers: ReloadTriggers?
        if target.isTLS {
            let logger = credentials.makeLogger("mtls.hello-client")
            (reloading, triggers) = try reload.start(configuration, backend: credentials.selectedBackend, logger: logger,
                                                     command: "hello-client")
        }
        defer { triggers?.stop() }
        let (options, authorizer) = try connectionOptions(for: target)
        let group = LoopGroup(count: 1)
        defer { group.shutdown() }
        var failures = 0
        for index in 1...count {
            if index > 1 { Thread.sleep(forTimeInterval: interval) }
            let outcome = HelloFetch.run(loop: group.next(), target: target.endpoint, path: target.path, host: target.host,
                                         tls: reloading?.context, count: 1, options: options)
            let label = "[\(index)/\(count)]"
            if let error = outcome.error {
                failures += 1
                let reason = error.isPolicyRefusal && authorizer?.lastRefusal != nil
                    ? "\(authorizer!.lastRefusal!); no request was sent"
                    : UserFacingError.describe(error, role: .client, options: credentials,
                                               hasIdentity: configuration.identity != nil)
                printError("mtls hello-client: \(label) \(reason)")
                continue
            }
            if outcome.statuses.contains(where: { $0 >= 400 }) { failures += 1 }
            var line = "\(label) " + outcome.bodies.map { String(decoding: $0, as: UTF8.self) }.joined()
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if let server = outcome.serverIdentity, let leaf = server.certificateChainDER.first,
               let summary = try? CertificateSummary(derEncoded: leaf) {
                line += " (server serial \(summary.serialHex)"
                if let negotiated = outcome.negotiated {
                    line += ", \(negotiated.version)\(negotiated.resumed ? ", resumed" : "")"
                }
                line += ")"
            }
            printNow(line)
        }
        if failures > 0 {
            printError("mtls hello-client: \(failures) of \(count) requests failed")
            throw ExitCode(1)
        }
    }
}

/// A URL of the form scheme://host:port/path, the only form these commands need.
struct ParsedURL {
    let isTLS: Bool
    let host: String
    let endpoint: HostAndPort
    let path: String

    init(_ text: String) throws {
        let isTLS: Bool
        let rest: Substring
        if text.hasPrefix("https://") { isTLS = true; rest = text.dropFirst(8) }
        else if text.hasPrefix("http://") { isTLS = false; rest = text.dropFirst(7) }
        else { throw ValidationError("--url must start with https:// or http://") }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = String(rest[..<slash])
        let defaultPort = isTLS ? 443 : 80
        let hasPort = authority.hasPrefix("[") ? authority.contains("]:") : authority.contains(":")
        guard let endpoint = HostAndPort(hasPort ? authority : authority + ":\(defaultPort)") else {
            throw ValidationError("cannot read host and port in '\(text)'")
        }
        self.isTLS = isTLS
        self.host = endpoint.host
        self.endpoint = endpoint
        self.path = slash == rest.endIndex ? "/" : String(rest[slash...])
    }
}

/// One keep-alive connection that sends `count` GET requests in turn and collects the answers.
/// Used by hello-client, the demo and the handshake benchmark.
enum HelloFetch {
    struct Outcome: Sendable {
        var bodies: [[UInt8]] = []
        var statuses: [Int] = []
        var negotiated: NegotiatedParameters?
        var serverIdentity: PeerIdentity?
        var error: ConnectionError?
    }

    static func run(loop: EventLoop, target: HostAndPort, path: String, host: String, tls: (any TLSContext)?,
                    count: Int, options: ConnectionOptions = ConnectionOptions()) -> Outcome {
        let client = Fetcher(path: path, host: host, count: count)
        TCPClient.connect(on: loop, to: target, tls: tls, options: options) { client }
        client.done.wait()
        return client.result.value
    }

    /// Unchecked: its state is touched only on the connection's loop; `result` is published once,
    /// before `done` is signalled.
    final class Fetcher: ConnectionHandler, @unchecked Sendable {
        let path: String
        let host: String
        let count: Int
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result = Box(Outcome())
        private var outcome = Outcome()
        private var parser = HTTPResponseParser()
        private var sent = 0
        private var finished = false

        init(path: String, host: String, count: Int) {
            self.path = path
            self.host = host
            self.count = count
        }

        func connectionDidEstablish(_ connection: Connection) {
            outcome.negotiated = connection.negotiated
            outcome.serverIdentity = connection.peerIdentity
            sendNext(connection)
        }

        private func sendNext(_ connection: Connection) {
            sent += 1
            let request = HTTPRequest.get(path, host: host, keepAlive: sent < count)
            do { try connection.write(request.serialized()) } catch { finish(error) }
        }

        func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
            parser.append(bytes)
            readResponses(connection)
        }

        private func readResponses(_ connection: Connection?) {
            do {
                while let (head, body) = try parser.nextResponse() {
                    outcome.statuses.append(head.status)
                    outcome.bodies.append(body)
                    guard let connection else { continue }
                    if outcome.statuses.count < count { sendNext(connection) } else { connection.close() }
                }
            } catch {
                finish(.refused("the server sent a malformed HTTP response: \(error)"))
                connection?.abort()
            }
        }

        func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
            if error == nil {
                // A response without Content-Length ends where the server closes (HTTP/1.0 style).
                parser.endOfInput()
                readResponses(nil)
            }
            if let error { finish(error) }
            else if outcome.statuses.count < count {
                finish(.refused("the server closed the connection before answering"))
            } else { finish(nil) }
        }

        private func finish(_ error: ConnectionError?) {
            guard !finished else { return }
            finished = true
            outcome.error = error
            result = Box(outcome)
            done.signal()
        }
    }

    struct Box<T>: @unchecked Sendable { let value: T; init(_ value: T) { self.value = value } }
}
