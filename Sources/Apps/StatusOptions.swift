import ArgumentParser
import Logging
import Loop
import Prometheus
import Service
import TLSContract

/// `--status HOST:PORT` on every server: plain HTTP with `GET /_status` (JSON) and `GET /metrics`
/// (Prometheus text), on the server's own loops. Off by default; loopback only unless
/// `--unsafe-status`, since it tells whoever reaches it what is served and how much.
struct StatusOptions: ParsableArguments {
    @Option(name: .customLong("status"),
            help: ArgumentHelp("Serve GET /_status (JSON) and GET /metrics (Prometheus) over plain HTTP here (loopback only).",
                               valueName: "host:port"))
    var status: String?

    @Flag(name: .customLong("unsafe-status"), help: "Allow --status on an address other than loopback.")
    var unsafeStatus = false

    func validate() throws {
        guard let status else { return }
        guard let address = HostAndPort(status) else { throw ValidationError("--status takes host:port, e.g. 127.0.0.1:9090") }
        guard !unsafeStatus else { return }
        let resolved = try SocketAddress.resolve(address)
        guard resolved.isLoopback else {
            throw ValidationError("""
                --status \(address) is not a loopback address (it is \(resolved.ip)): the status and metrics are \
                plain HTTP, readable by anyone who reaches them. Use 127.0.0.1 or ::1, or pass --unsafe-status.
                """)
        }
    }

    /// The metrics every connection reports to, in a registry of this server's own; nil without
    /// `--status` (then the Loop records nothing, and nothing is bootstrapped).
    func makeMetrics() -> StatusMetrics? {
        guard status != nil else { return nil }
        return StatusMetrics()
    }

    /// Starts the status listener when `--status` was given; prints its address after the
    /// "listening on" line (which stays first, for scripts).
    func start(_ metrics: StatusMetrics?, status: ServerStatus, group: LoopGroup, logger: Logger,
               command: String) throws -> StatusServer? {
        guard let metrics, let text = self.status, let address = HostAndPort(text) else { return nil }
        if let reloading = status.reloading { metrics.server.watch(reloading) }
        let registry = metrics.registry
        let server: StatusServer
        do {
            server = try StatusServer(group: group, listen: address,
                                      endpoints: status.endpoints(metrics: { registry.emitToBuffer() }), logger: logger)
        } catch {
            printError("mtls \(command): cannot serve the status on \(address): \(error)")
            throw ExitCode(1)
        }
        printNow("status on http://\(server.address) (GET /_status, GET /metrics)")
        if unsafeStatus { logger.warning("the status and metrics are served on \(server.address), not restricted to loopback") }
        return server
    }
}

/// One server's Prometheus registry and the metrics recorded into it (through swift-metrics).
struct StatusMetrics {
    let registry = PrometheusCollectorRegistry()
    let server: ServerMetrics

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Handshakes take milliseconds on a LAN and up to the handshake timeout on a bad day.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        server = ServerMetrics(factory: factory)
    }
}
