import ArgumentParser
import Dispatch
import Foundation
import Logging
import Loop
import Service
import TLSContract

/// `mtls echo-server`: sends back every byte it receives, binary-safe, over mTLS or plain TCP.
struct EchoServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "echo-server", abstract: "A binary-safe mTLS echo server.")

    @OptionGroup var credentials: CredentialOptions
    @Option(help: "Address to listen on (host:port).") var listen: String = "127.0.0.1:9443"
    @Option(help: "mtls, tls or plain.") var mode: ServerMode = .mtls
    @Option(help: "Event loops (threads).") var loops: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var limits: ServerLimitOptions
    @OptionGroup(title: "Client authorization (any one rule admits)") var peerPolicy: PeerPolicyOptions
    @OptionGroup(title: "Reloading credentials") var reload: ReloadOptions
    @OptionGroup(title: "Status and metrics") var status: StatusOptions
    @OptionGroup var keyLog: KeyLogOptions

    func validate() throws {
        try peerPolicy.checkClientCertificatesRequested(mode == .mtls ? .require : .none, plain: mode == .plain)
        try keyLog.checkUsed(withTLS: mode != .plain)
    }

    func run() throws {
        let logger = credentials.makeLogger("mtls.echo-server")
        guard let target = HostAndPort(listen) else { throw ValidationError("--listen takes host:port") }
        var provider: TLSContextProvider?
        var triggers: ReloadTriggers?
        var reloading: ReloadingContext?
        if mode != .plain {
            guard let identity = credentials.identity(role: .server) else {
                throw ValidationError("a TLS server needs a certificate: use --cert/--key, --p12 or --pki")
            }
            var configuration = TLSConfiguration(role: .server, identity: identity, trustRoots: credentials.trustRoots,
                                                 clientAuthentication: mode == .mtls ? .require : .none,
                                                 minimumVersion: credentials.minimumVersion,
                                                 maximumVersion: credentials.maximumVersion)
            configuration.crls = credentials.crls
            configuration.keyLog = try keyLog.open(logger: logger, command: "echo-server")
            if mode == .tls {
                configuration.trustRoots = []
                configuration.crls = []
            }
            let (context, started) = try reload.start(configuration, backend: credentials.selectedBackend, logger: logger,
                                                      command: "echo-server")
            provider = context.provider
            triggers = started
            reloading = context
        }
        let group = LoopGroup(count: loops)
        var options = TCPServer.Options()
        limits.apply(to: &options)
        let metrics = status.makeMetrics()
        options.connection.observer = metrics?.server
        try peerPolicy.install(into: &options.connection, logger: logger)
        let server: TCPServer
        do {
            server = try TCPServer(group: group, listen: target, contexts: provider, options: options) {
                EchoConnection(logger: logger)
            }
        } catch {
            printError("mtls echo-server: cannot listen on \(target): \(error)")
            throw ExitCode(1)
        }
        printNow("listening on \(server.address) (\(mode.rawValue), backend \(credentials.backend))")
        let statusServer = try status.start(metrics, status: ServerStatus(backend: credentials.selectedBackend, reloading: reloading),
                                            group: group, logger: logger, command: "echo-server")
        ShutdownSignals.wait()
        triggers?.stop()
        statusServer?.shutdown()
        server.shutdown(graceful: true)
        group.shutdown()
    }
}

final class EchoConnection: ConnectionHandler {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }
    func connectionDidEstablish(_ connection: Connection) {
        logger.info("connection established", metadata: [
            "peer": "\(connection.remoteAddress)", "identity": "\(connection.peerIdentity?.displayName ?? "-")",
            "version": "\(connection.negotiated.map { "\($0.version)" } ?? "plain")",
            "cipher": "\(connection.negotiated?.cipherSuite ?? "-")"])
    }
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        do { try connection.write(bytes) } catch { connection.close() }
    }
    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        if let error, error.isPolicyRefusal {
            logger.debug("connection refused by the client policy", metadata: ["peer": "\(connection.remoteAddress)"])
        } else if let error {
            logger.info("connection failed", metadata: ["peer": "\(connection.remoteAddress)", "error": "\(error)"])
        }
    }
}

/// `mtls echo-client`: sends bytes, checks the identical bytes come back, and reports MB/s.
struct EchoClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "echo-client", abstract: "Send bytes through an echo server and verify them.")

    @OptionGroup var credentials: CredentialOptions
    @Option(help: "The echo server, HOST:PORT.") var connect: String = "127.0.0.1:9443"
    @Option(help: "Random bytes to send; without it, standard input is sent.") var bytes: Int?
    @Option(name: .customLong("server-name"), help: "The name to verify the server against (default: the host).")
    var serverName: String?
    @Flag(help: "Plain TCP, no TLS.") var plain = false
    @Option(name: .customLong("read-timeout"),
            help: "Seconds without any data from the server before giving up (a server that never answers).")
    var readTimeout: Double = 30
    @OptionGroup(title: "Server authorization (any one rule admits; checked before any byte is sent)")
    var verify: PeerVerifyOptions
    @OptionGroup var keyLog: KeyLogOptions

    func validate() throws {
        try keyLog.checkUsed(withTLS: !plain)
        if plain, try !verify.policy().isEmpty {
            throw ValidationError("--verify-* rules check the server's certificate: they cannot apply with --plain")
        }
    }

    func run() throws {
        guard let target = HostAndPort(connect) else { throw ValidationError("--connect takes HOST:PORT") }
        let payload: [UInt8]
        if let bytes {
            var generator = SystemRandomNumberGenerator()
            payload = (0..<bytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
        } else {
            payload = [UInt8](FileHandle.standardInput.readDataToEndOfFile())
        }
        var context: (any TLSContext)?
        if !plain {
            var configuration = TLSConfiguration(role: .client, identity: credentials.identity(role: .client),
                                                 trustRoots: credentials.trustRoots, serverName: serverName ?? target.host,
                                                 minimumVersion: credentials.minimumVersion,
                                                 maximumVersion: credentials.maximumVersion)
            configuration.crls = credentials.crls
            configuration.keyLog = try keyLog.open(logger: credentials.makeLogger("mtls.echo-client"), command: "echo-client")
            do { context = try credentials.selectedBackend.makeContext(configuration) } catch {
                printError("mtls echo-client: \(error.summary)")
                throw ExitCode(1)
            }
        }
        var options = ConnectionOptions()
        let authorizer = try verify.install(into: &options)
        let group = LoopGroup(count: 1)
        defer { group.shutdown() }
        let result = EchoRun.run(loop: group.next(), target: target, tls: context, payload: payload,
                                 readTimeout: .seconds(readTimeout), options: options)
        if let error = result.error, error.isPolicyRefusal, let refusal = authorizer?.lastRefusal {
            printError("mtls echo-client: \(refusal); nothing was sent")
            throw ExitCode(1)
        }
        if let error = result.error {
            printError("mtls echo-client: " + UserFacingError.describe(
                error, role: .client, options: credentials, hasIdentity: credentials.identity(role: .client) != nil))
            throw ExitCode(1)
        }
        guard result.echoed == payload else {
            printError("mtls echo-client: the echo differs from what was sent (\(result.echoed.count) of \(payload.count) bytes came back)")
            throw ExitCode(1)
        }
        let seconds = max(result.seconds, 1e-6)
        let rate = Double(payload.count) / seconds / 1_000_000
        print(String(format: "echoed %d bytes intact in %.3f s: %.1f MB/s each way", payload.count, seconds, rate))
        if let negotiated = result.negotiated { print("tls: \(negotiated.version), \(negotiated.cipherSuite)") }
    }
}

/// Streams a payload through an echo server on one connection, paced by backpressure.
enum EchoRun {
    struct Result: Sendable {
        var echoed: [UInt8] = []
        var seconds: Double = 0
        var negotiated: NegotiatedParameters?
        var error: ConnectionError?
    }

    static func run(loop: EventLoop, target: HostAndPort, tls: (any TLSContext)?, payload: [UInt8],
                    readTimeout: Duration? = nil, options: ConnectionOptions = ConnectionOptions()) -> Result {
        let client = Streamer(payload: payload)
        var options = options
        options.stopsReadingWhileWritesBackUp = false
        if let readTimeout {
            options.handshakeTimeout = readTimeout
            options.idleTimeout = readTimeout
        }
        TCPClient.connect(on: loop, to: target, tls: tls, options: options) { client }
        client.done.wait()
        return client.result.value
    }

    /// Unchecked: touched only on its loop; `result` is published once before `done` is signalled.
    final class Streamer: ConnectionHandler, @unchecked Sendable {
        let payload: [UInt8]
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result = HelloFetch.Box(Result())
        private var echoed: [UInt8] = []
        private var offset = 0
        private var started: DispatchTime = .now()
        private var negotiated: NegotiatedParameters?
        private var finished = false

        init(payload: [UInt8]) {
            self.payload = payload
            echoed.reserveCapacity(payload.count)
        }

        func connectionDidEstablish(_ connection: Connection) {
            negotiated = connection.negotiated
            started = .now()
            if payload.isEmpty { connection.close() } else { pump(connection) }
        }

        private func pump(_ connection: Connection) {
            while offset < payload.count && connection.isWritable {
                let end = min(payload.count, offset + 256 * 1024)
                do { try payload[offset..<end].withUnsafeBytes { try connection.write($0) } } catch {
                    finish(error as? ConnectionError)
                    return
                }
                offset = end
            }
        }

        func connectionDidBecomeWritable(_ connection: Connection) { pump(connection) }

        func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
            echoed.append(contentsOf: bytes)
            if echoed.count >= payload.count { connection.close() }
        }

        func connectionDidClose(_ connection: Connection, error: ConnectionError?) { finish(error) }

        private func finish(_ error: ConnectionError?) {
            guard !finished else { return }
            finished = true
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            result = HelloFetch.Box(Result(echoed: echoed, seconds: seconds, negotiated: negotiated, error: error))
            done.signal()
        }
    }
}
