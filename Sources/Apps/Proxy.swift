import ArgumentParser
import Foundation
import Logging
import Loop
import Proxy
import Service
import TLSContract

/// `mtls proxy server|client`: mTLS in front of a plain TCP service, and plain TCP turned into mTLS.
struct ProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy", abstract: "Forward TCP through mTLS, as a sidecar beside a service or a client.",
        subcommands: [ProxyServerCommand.self, ProxyClientCommand.self])
}

/// The flags both directions share: where to listen and forward. The limits are every server's
/// (`ServerLimitOptions`).
struct ProxyOptions: ParsableArguments {
    @Option(help: "Address to listen on (host:port; port 0 picks a free one).")
    var listen: String

    @Option(help: "Where to forward each connection: host:port, or unix:PATH for a UNIX-domain socket.")
    var target: String

    @Option(help: "Event loops (threads); default one per core.")
    var loops: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("connect-timeout"), help: "Seconds a connection to the target may take.")
    var connectTimeout: Double = 10

    @Option(name: .customLong("drain-timeout"),
            help: "On SIGTERM or SIGINT, seconds open connections may take to finish before they are closed.")
    var drainTimeout: Double = 20

    /// For deployment checks (deploy/ and its test): parse every flag, load the credentials from the
    /// given paths, then exit 0 instead of listening.
    @Flag(name: .customLong("check-config"), help: .hidden)
    var checkConfig = false

    func validate() throws {
        guard loops >= 1 else { throw ValidationError("--loops takes 1 or more") }
        guard connectTimeout > 0 else { throw ValidationError("--connect-timeout takes a number of seconds above 0") }
        guard drainTimeout >= 0 else { throw ValidationError("--drain-timeout takes a number of seconds, 0 or more") }
        _ = try listenAddress()
        _ = try targetAddress()
    }

    func listenAddress() throws -> HostAndPort {
        guard let address = HostAndPort(listen) else { throw ValidationError("--listen takes host:port, e.g. 127.0.0.1:8443") }
        return address
    }

    func targetAddress() throws -> Endpoint {
        guard let address = Endpoint(target) else {
            if target.hasPrefix("unix:") {
                throw ValidationError("--target unix:PATH takes a path of 1 to \(Endpoint.maximumUnixPathLength) bytes")
            }
            throw ValidationError("--target takes host:port (e.g. 127.0.0.1:8080) or unix:PATH")
        }
        return address
    }

    /// The limits of every connection, accepted or opened towards the target.
    func connectionOptions(_ limits: ServerLimitOptions) -> ConnectionOptions {
        var options = TCPServer.Options()
        limits.apply(to: &options)
        options.connection.connectTimeout = .seconds(connectTimeout)
        return options.connection
    }

    /// Listens, forwards until SIGTERM or SIGINT, then drains within `--drain-timeout`. With
    /// `status` (the server direction), `--status` serves its status and metrics meanwhile.
    func serve(_ mode: String, tls: TLSContextProvider?, authorize: (@Sendable (PeerIdentity?) -> Bool)?, target: ProxyTarget,
               limits: ServerLimitOptions, status: (options: StatusOptions, report: ServerStatus)? = nil,
               backend: String, logger: Logger, onShutdown: () -> Void = {}) throws {
        let listenAddress = try listenAddress()
        if checkConfig {
            printNow("configuration ok: proxy \(mode) would listen on \(listenAddress) and forward to \(target.address)")
            onShutdown()
            return
        }
        var options = TCPServer.Options()
        limits.apply(to: &options)
        options.connection.connectTimeout = .seconds(connectTimeout)
        options.connection.authorize = authorize
        let metrics = status?.options.makeMetrics()
        options.connection.observer = metrics?.server
        let group = LoopGroup(count: loops)
        let listener: ProxyListener
        do {
            listener = try ProxyListener(group: group, listen: listenAddress, tls: tls, options: options, target: target, logger: logger)
        } catch {
            group.shutdown()
            printError("mtls proxy \(mode): cannot listen on \(listenAddress): \(error)")
            throw ExitCode(1)
        }
        // The port line comes first and alone on stdout, so scripts can read the port picked for 0.
        printNow("listening on \(listener.address) (proxy \(mode) to \(target.address), backend \(backend))")
        logger.info("proxy \(mode) ready", metadata: ["listen": "\(listener.address)", "target": "\(target.address)"])
        let statusServer = try status.flatMap {
            try $0.options.start(metrics, status: $0.report, group: group, logger: logger, command: "proxy \(mode)")
        }
        ShutdownSignals.wait()
        onShutdown()
        statusServer?.shutdown()
        logger.info("draining: no new connections; open ones have \(drainTimeout) s to finish")
        let unfinished = listener.shutdown(drainTimeout: .seconds(drainTimeout))
        if unfinished > 0 { logger.notice("closed \(unfinished) connection(s) still open after the drain") }
        group.shutdown()
    }
}

/// `mtls proxy server`: terminates mTLS and forwards the plaintext to a local service.
struct ProxyServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Accept mTLS and forward the plaintext to the target.",
        discussion: """
            Only clients with a valid certificate from a trusted CA (and admitted by the --allow-* rules, if given) \
            reach the target: the proxy connects to the target only after the handshake and the checks succeeded.
            """)

    @OptionGroup var credentials: CredentialOptions
    @OptionGroup var proxy: ProxyOptions
    @OptionGroup var limits: ServerLimitOptions

    @Option(name: .customLong("proxy-protocol"),
            help: ArgumentHelp("""
                Send a PROXY protocol header first on each target connection: the client's address and the \
                identity the proxy verified (CN, URI and DNS SANs, SPKI SHA-256, TLS version and cipher) in TLVs. \
                Only for targets that expect it.
                """, valueName: "v2"))
    var proxyProtocol: ProxyProtocolVersion?

    @OptionGroup var policy: PeerPolicyOptions
    @OptionGroup(title: "Reloading credentials") var reload: ReloadOptions
    @OptionGroup(title: "Status and metrics") var status: StatusOptions
    @OptionGroup var keyLog: KeyLogOptions

    func run() throws {
        let logger = credentials.makeLogger("mtls.proxy-server")
        let target = ProxyTarget(address: try proxy.targetAddress(), connection: proxy.connectionOptions(limits),
                                 proxyProtocol: proxyProtocol)
        guard let identity = credentials.identity(role: .server) else {
            throw ValidationError("the proxy server needs a certificate: use --cert/--key, --p12 or --pki")
        }
        guard !credentials.trustRoots.isEmpty else {
            throw ValidationError("the proxy server verifies client certificates: give their CA with --ca or --pki")
        }
        var configuration = TLSConfiguration(role: .server, identity: identity, trustRoots: credentials.trustRoots,
                                             clientAuthentication: .require, minimumVersion: credentials.minimumVersion,
                                             maximumVersion: credentials.maximumVersion)
        configuration.crls = credentials.crls
        configuration.keyLog = try keyLog.open(logger: logger, command: "proxy server")
        // Built from the files now, and rebuilt on SIGHUP, a file change or --reload-interval.
        let (reloading, triggers) = try reload.start(configuration, backend: credentials.selectedBackend, logger: logger,
                                                     command: "proxy server")
        var authorization = ConnectionOptions()
        try policy.install(into: &authorization, logger: logger)
        let report = ServerStatus(backend: credentials.selectedBackend, reloading: reloading, target: target.address)
        try proxy.serve("server", tls: reloading.provider, authorize: authorization.authorize, target: target, limits: limits,
                        status: (status, report), backend: credentials.backend, logger: logger, onShutdown: { triggers.stop() })
    }
}

/// `mtls proxy client`: accepts plain TCP locally and originates mTLS to the target.
struct ProxyClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Accept plain TCP on loopback and forward it over mTLS to the target.",
        discussion: """
            Whoever reaches the plain listener speaks with this client's certificate, so --listen must be a \
            loopback address unless --unsafe-listen is given.
            """)

    @OptionGroup var credentials: CredentialOptions
    @OptionGroup var proxy: ProxyOptions
    @OptionGroup var limits: ServerLimitOptions

    @Option(name: .customLong("server-name"),
            help: "The name (DNS name or IP literal) the target's certificate must carry (default: the target's host).")
    var serverName: String?

    @Flag(name: .customLong("unsafe-listen"), help: "Allow --listen on an address other than loopback.")
    var unsafeListen = false

    @OptionGroup var verify: PeerVerifyOptions
    @OptionGroup var keyLog: KeyLogOptions

    func validate() throws {
        guard !unsafeListen else { return }
        let listenAddress = try proxy.listenAddress()
        let resolved = try SocketAddress.resolve(listenAddress)
        guard resolved.isLoopback else {
            throw ValidationError("""
                --listen \(listenAddress) is not a loopback address (it is \(resolved.ip)): anyone who reaches it \
                would speak mTLS with this client's certificate. Listen on 127.0.0.1 or ::1, or pass --unsafe-listen.
                """)
        }
    }

    func run() throws {
        let logger = credentials.makeLogger("mtls.proxy-client")
        let targetAddress = try proxy.targetAddress()
        guard let identity = credentials.identity(role: .client) else {
            throw ValidationError("the proxy client needs a client certificate: use --cert/--key, --p12 or --pki")
        }
        guard !credentials.trustRoots.isEmpty else {
            throw ValidationError("the proxy client verifies the target's certificate: give its CA with --ca or --pki")
        }
        let name: String
        switch (targetAddress, serverName) {
        case (_, let given?): name = given
        case (.tcp(let address), nil): name = address.host
        case (.unix, nil):
            throw ValidationError("with --target unix:PATH, give --server-name: the name the target's certificate must carry")
        }
        var configuration = TLSConfiguration(role: .client, identity: identity, trustRoots: credentials.trustRoots,
                                             serverName: name, minimumVersion: credentials.minimumVersion,
                                             maximumVersion: credentials.maximumVersion)
        configuration.crls = credentials.crls
        configuration.keyLog = try keyLog.open(logger: logger, command: "proxy client")
        let context: any TLSContext
        do { context = try credentials.selectedBackend.makeContext(configuration) } catch {
            printError("mtls proxy client: \(error.summary)")
            throw ExitCode(1)
        }
        var connection = proxy.connectionOptions(limits)
        try verify.install(into: &connection)
        let target = ProxyTarget(address: targetAddress, tls: context, serverName: name, connection: connection)
        try proxy.serve("client", tls: nil, authorize: nil, target: target, limits: limits, backend: credentials.backend,
                        logger: logger)
    }
}

extension ProxyProtocolVersion: ExpressibleByArgument {}

extension SocketAddress {
    /// 127.0.0.0/8, ::1, or an IPv4-mapped loopback address.
    var isLoopback: Bool {
        var ip = self.ip
        if ip == "::1" { return true }
        if ip.lowercased().hasPrefix("::ffff:") { ip = String(ip.dropFirst("::ffff:".count)) }
        var v4 = in_addr()
        return inet_pton(AF_INET, ip, &v4) == 1 && UInt32(bigEndian: v4.s_addr) >> 24 == 127
    }
}
