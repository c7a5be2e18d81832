import ArgumentParser
import Foundation
import Loop

/// The limits every server applies, so that no peer (slow, silent, or one of very many) can hold
/// memory, descriptors or a slot forever. Each is on by default; each hit is logged.
struct ServerLimitOptions: ParsableArguments {
    @Option(name: .customLong("handshake-timeout"), help: "Seconds a TLS handshake may take.")
    var handshakeTimeout: Double = 10

    @Option(name: .customLong("idle-timeout"),
            help: "Seconds an established connection may go without application data either way (bytes of an unfinished TLS record do not count).")
    var idleTimeout: Double = 75

    @Option(name: .customLong("max-connections"),
            help: "Open connections the server keeps at most; more are accepted and closed at once.")
    var maxConnections: Int = 10_000

    @Option(name: .customLong("max-connections-per-loop"),
            help: "The same cap per event loop, so one loop cannot take every slot (default: none beyond --max-connections).")
    var maxConnectionsPerLoop: Int?

    func validate() throws {
        guard handshakeTimeout > 0, idleTimeout > 0 else { throw ValidationError("timeouts must be positive") }
        guard maxConnections > 0, (maxConnectionsPerLoop ?? 1) > 0 else {
            throw ValidationError("connection limits must be positive")
        }
    }

    func apply(to options: inout TCPServer.Options) {
        options.connection.handshakeTimeout = .seconds(handshakeTimeout)
        options.connection.idleTimeout = .seconds(idleTimeout)
        options.maxConnections = maxConnections
        options.maxConnectionsPerLoop = maxConnectionsPerLoop
        DescriptorLimit.raise(toFit: maxConnections)
    }
}

/// The process's descriptor limit. Debian starts processes with a soft limit of 1,024, far below
/// what a server of thousands of connections needs, and a hard limit far above it: like nginx's
/// `worker_rlimit_nofile`, raise the soft limit (never past the hard one) to fit the cap.
enum DescriptorLimit {
    static func raise(toFit connections: Int) {
        var limit = rlimit()
        guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 else { return }
        // A connection costs one descriptor; listeners, loops and files need a few more.
        let wanted = rlim_t(connections + 256)
        guard limit.rlim_cur < wanted else { return }
        limit.rlim_cur = min(wanted, limit.rlim_max)
        _ = setrlimit(RLIMIT_NOFILE_VALUE, &limit)
    }

    private static var RLIMIT_NOFILE_VALUE: __rlimit_resource_t { __rlimit_resource_t(RLIMIT_NOFILE.rawValue) }
}
