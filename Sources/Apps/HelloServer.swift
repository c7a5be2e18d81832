import ArgumentParser
import Dispatch
import Foundation
import HTTPHello
import Logging
import Loop
import Service
import TLSContract

/// `mtls hello-server`: HTTPS `GET /hello` that greets the verified client by name.
struct HelloServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hello-server", abstract: "An HTTP/1.1 server that answers GET /hello over mTLS, TLS or plain TCP.",
        discussion: """
            Client authorization: with no --allow-* flag, every client whose certificate verifies is admitted. \
            With any, a client is admitted if one rule matches its certificate; the others are refused at the \
            end of the handshake (full or resumed), before any HTTP byte, and logged with the rules they failed.

            --allow is gone: it matched the CN and every SAN in one case-sensitive list, so a CN could pass for \
            a DNS name, and an IP or URI for a CN. Giving it is an error that names the typed flag to use.

            Renewal without a restart: on SIGHUP, when any credential file changes (certificate, key, \
            PKCS#12, --ca, --crl; renames into place and Kubernetes ..data symlink swaps included), and every \
            --reload-interval seconds, the server builds a new context and uses it for new connections; \
            established ones are untouched. Files that cannot be used keep the previous context serving, with \
            one error naming the file.
            """)

    @OptionGroup var credentials: CredentialOptions

    @Option(help: "Address to listen on (host:port; port 0 picks a free one).")
    var listen: String = "127.0.0.1:8443"

    @Option(help: "mtls (client certificates), tls (server-auth only) or plain (no TLS).")
    var mode: ServerMode = .mtls

    @Option(name: .customLong("client-auth"), help: "require, optional or none (default: require in mtls mode).")
    var clientAuth: TLSConfiguration.ClientAuthentication?

    @Option(help: "Event loops (threads); default one per core.")
    var loops: Int = ProcessInfo.processInfo.activeProcessorCount

    @OptionGroup(title: "Client authorization (any one rule admits)")
    var peerPolicy: PeerPolicyOptions

    /// The pooled allow list this flag used to be; kept only to say what replaces it.
    @Option(name: .customLong("allow"), parsing: .upToNextOption, help: .hidden)
    var removedAllow: [String] = []

    @Option(help: "How loops share the port: reuseport (a listener per loop) or handoff (one loop accepts for all).")
    var accept: TCPServer.AcceptStrategy = .handoff

    @Flag(name: .customLong("no-session-tickets"), help: "Issue no session tickets: every handshake is a full one.")
    var noSessionTickets = false

    @OptionGroup var limits: ServerLimitOptions

    @OptionGroup(title: "Reloading credentials") var reload: ReloadOptions

    @OptionGroup(title: "Status and metrics") var status: StatusOptions
    @OptionGroup var keyLog: KeyLogOptions

    @Option(name: .customLong("request-timeout"),
            help: "Seconds a client has to send a whole request head once it starts one (and for the first, from the handshake on).")
    var requestTimeout: Double = 10

    func validate() throws {
        if !removedAllow.isEmpty { throw ValidationError(RemovedAllowFlag.message(for: removedAllow)) }
        try keyLog.checkUsed(withTLS: mode != .plain)
        try peerPolicy.checkClientCertificatesRequested(clientAuth ?? (mode == .mtls ? .require : .none), plain: mode == .plain)
    }

    func run() throws {
        let logger = credentials.makeLogger("mtls.hello-server")
        guard let target = HostAndPort(listen) else { throw ValidationError("--listen takes host:port, e.g. 127.0.0.1:8443") }
        var provider: TLSContextProvider?
        var triggers: ReloadTriggers?
        var reloading: ReloadingContext?
        if var configuration = try makeConfiguration() {
            configuration.keyLog = try keyLog.open(logger: logger, command: "hello-server")
            let (context, started) = try reload.start(configuration, backend: credentials.selectedBackend, logger: logger,
                                                      command: "hello-server")
            provider = context.provider
            triggers = started
            reloading = context
        }
        let group = LoopGroup(count: loops)
        var options = TCPServer.Options()
        options.acceptStrategy = accept
        limits.apply(to: &options)
        let metrics = status.makeMetrics()
        options.connection.observer = metrics?.server
        let requestTimeout = Duration.seconds(requestTimeout)
        try peerPolicy.install(into: &options.connection, logger: logger)
        let server: TCPServer
        do {
            server = try TCPServer(group: group, listen: target, contexts: provider, options: options) {
                HelloConnection(logger: logger, requestTimeout: requestTimeout)
            }
        } catch {
            printError("mtls hello-server: cannot listen on \(target): \(error)")
            throw ExitCode(1)
        }
        // The port line comes first and alone on stdout, so scripts can read the port picked for 0.
        printNow("listening on \(server.address) (\(mode.rawValue), backend \(credentials.backend))")
        logger.info("hello-server ready", metadata: ["address": "\(server.address)", "mode": "\(mode.rawValue)",
                                                     "backend": "\(credentials.selectedBackend.libraryVersion)"])
        let statusServer = try status.start(metrics, status: ServerStatus(backend: credentials.selectedBackend, reloading: reloading),
                                            group: group, logger: logger, command: "hello-server")
        ShutdownSignals.wait()
        triggers?.stop()
        statusServer?.shutdown()
        logger.info("shutting down: closing connections gracefully")
        server.shutdown(graceful: true)
        group.shutdown()
    }

    /// What the server's contexts are built from (and rebuilt from on every reload); nil for plain TCP.
    func makeConfiguration() throws -> TLSConfiguration? {
        guard mode != .plain else { return nil }
        guard let identity = credentials.identity(role: .server) else {
            throw ValidationError("a TLS server needs a certificate: use --cert/--key, --p12 or --pki")
        }
        var configuration = TLSConfiguration(role: .server, identity: identity, trustRoots: credentials.trustRoots,
                                             minimumVersion: credentials.minimumVersion,
                                             maximumVersion: credentials.maximumVersion)
        configuration.clientAuthentication = clientAuth ?? (mode == .mtls ? .require : .none)
        configuration.sessionTicketsEnabled = !noSessionTickets
        configuration.crls = credentials.crls
        if configuration.clientAuthentication == .none {
            configuration.trustRoots = []
            configuration.crls = []
        }
        return configuration
    }
}

enum ServerMode: String, ExpressibleByArgument, CaseIterable { case mtls, tls, plain }

extension TCPServer.AcceptStrategy: ExpressibleByArgument {}

extension TLSConfiguration.ClientAuthentication: ExpressibleByArgument {}

/// One client of the hello server: parses requests as they arrive and answers each in order.
///
/// A request head must be complete within `requestTimeout` of its first byte (the first request's,
/// of the handshake), however its bytes trickle in; between requests only the idle timeout runs.
final class HelloConnection: ConnectionHandler {
    private let logger: Logger
    private let requestTimeout: Duration
    /// The hello server reads no request bodies: any is refused (413) rather than buffered.
    private var parser = HTTPRequestParser(maxBodyBytes: 0)

    init(logger: Logger, requestTimeout: Duration) {
        self.logger = logger
        self.requestTimeout = requestTimeout
    }

    func connectionDidEstablish(_ connection: Connection) {
        connection.setDeadline(requestTimeout, for: "the request head")
        // The line's metadata costs a handful of strings per connection: built only when it is logged.
        guard logger.logLevel <= .info else { return }
        var metadata: Logger.Metadata = ["peer": "\(connection.remoteAddress)"]
        if let identity = connection.peerIdentity { metadata["identity"] = "\(identity.displayName)" }
        if let negotiated = connection.negotiated {
            metadata["version"] = "\(negotiated.version)"
            metadata["cipher"] = "\(negotiated.cipherSuite)"
        }
        if let duration = connection.handshakeDuration { metadata["handshake"] = "\(duration)" }
        logger.info("connection established", metadata: metadata)
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        let startsRequest = parser.bufferedByteCount == 0
        parser.append(bytes)
        if startsRequest { connection.setDeadline(requestTimeout, for: "the request head") }
        do {
            while let request = try parser.nextRequest() {
                let response = HelloResponder.respond(to: request, peer: connection.peerIdentity)
                try connection.write(response.serialized(answering: request))
                if !request.keepAlive {
                    connection.close()
                    return
                }
            }
            // Answered everything: the clock for the next request starts with its first byte.
            if parser.bufferedByteCount == 0 { connection.setDeadline(nil, for: "the request head") }
        } catch let error as HTTPParseError {
            logger.notice("bad request", metadata: ["peer": "\(connection.remoteAddress)", "error": "\(error)"])
            try? connection.write(error.response.serialized(keepAlive: false, includeBody: true))
            connection.close()
        } catch {
            connection.close()
        }
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        if let error, error.isPolicyRefusal {
            logger.debug("connection refused by the client policy", metadata: ["peer": "\(connection.remoteAddress)"])
        } else if let error {
            logger.info("connection closed with an error", metadata: ["peer": "\(connection.remoteAddress)", "error": "\(error)"])
        } else {
            logger.debug("connection closed", metadata: ["peer": "\(connection.remoteAddress)"])
        }
    }
}

/// Blocks until SIGINT or SIGTERM.
enum ShutdownSignals {
    static func wait() {
        let received = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { received.signal() }
            source.resume()
            sources.append(source)
        }
        received.wait()
        sources.forEach { $0.cancel() }
    }
}
