import Loop
import TLSContract

/// Where a proxy forwards each connection it accepts, and how it connects there.
public struct ProxyTarget: Sendable {
    public var address: HostAndPort
    /// TLS towards the target (a proxy client originating mTLS); nil for plain TCP.
    public var tls: (any TLSContext)?
    /// The name to verify the target's certificate against (and send as SNI); nil: the context's.
    public var serverName: String?
    /// Timeouts for the target connection (connect, handshake, idle, close). The pump turns on
    /// half-close and per-direction backpressure itself (see `ProxyPump.forwardingOptions`).
    public var connection: ConnectionOptions

    public init(address: HostAndPort, tls: (any TLSContext)? = nil, serverName: String? = nil,
                connection: ConnectionOptions = ConnectionOptions()) {
        self.address = address
        self.tls = tls
        self.serverName = serverName
        self.connection = connection
    }
}
