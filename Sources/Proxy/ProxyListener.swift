import Logging
import Loop
import TLSContract

/// Accepts connections (with mTLS when `tls` is set) on every loop of a group and pumps each one to
/// the target through its own `ProxyPump`.
public final class ProxyListener: Sendable {
    public let pairs = ProxyPairs()
    private let server: TCPServer

    public var address: SocketAddress { server.address }

    /// Binds and starts accepting. `options.connection` applies to the accepted connections: its
    /// `authorize` decides who may reach the target at all; the pump adds what forwarding needs.
    /// `tls` nil: plain TCP (a proxy client's local side); else each connection's session comes from
    /// the provider's current context, so a credential reload applies to the next client.
    public init(group: LoopGroup, listen: HostAndPort, tls: TLSContextProvider?, options: TCPServer.Options = TCPServer.Options(),
                target: ProxyTarget, logger: Logger) throws {
        var options = options
        options.connection = ProxyPump.forwardingOptions(options.connection)
        let pairs = self.pairs
        server = try TCPServer(group: group, listen: listen, contexts: tls, options: options) {
            ProxyPump(target: target, pairs: pairs, logger: logger)
        }
    }

    /// Stops taking new pairs, lets the open ones finish for up to `drainTimeout`, then closes what
    /// is left (close_notify after the queued bytes, within each connection's close timeout) and
    /// stops listening. Returns how many pairs had to be closed. Blocks: call it off the loops.
    ///
    /// TCPServer has no way to stop accepting while keeping its connections, so during the drain
    /// the socket still accepts: new connections are closed as soon as they are established and
    /// never reach the target.
    @discardableResult
    public func shutdown(drainTimeout: Duration) -> Int {
        // New clients are refused by the kernel from here on, not accepted and closed after a handshake.
        server.stopAccepting()
        let unfinished = pairs.drain(within: drainTimeout)
        server.shutdown(graceful: true)
        return unfinished
    }
}
