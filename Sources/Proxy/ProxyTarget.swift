import Loop
import TLSContract

/// Where a proxy forwards each connection it accepts, and how it connects there.
public struct ProxyTarget: Sendable {
    /// A TCP address, or a UNIX-domain socket (`unix:PATH`) for a service on the same host.
    public var address: Endpoint
    /// TLS towards the target (a proxy client originating mTLS); nil for plain TCP.
    public var tls: (any TLSContext)?
    /// The name to verify the target's certificate against (and send as SNI); nil: the context's.
    public var serverName: String?
    /// Timeouts for the target connection (connect, handshake, idle, close). The pump turns on
    /// half-close and per-direction backpressure itself (see `ProxyPump.forwardingOptions`).
    public var connection: ConnectionOptions
    /// A PROXY protocol header sent first on each target connection, naming the client; nil: none.
    public var proxyProtocol: ProxyProtocolVersion?

    public init(address: Endpoint, tls: (any TLSContext)? = nil, serverName: String? = nil,
                connection: ConnectionOptions = ConnectionOptions(), proxyProtocol: ProxyProtocolVersion? = nil) {
        self.address = address
        self.tls = tls
        self.serverName = serverName
        self.connection = connection
        self.proxyProtocol = proxyProtocol
    }
}

/// The PROXY protocol versions a proxy server can send (see `ProxyProtocolHeader`).
public enum ProxyProtocolVersion: String, Sendable, CaseIterable {
    case v2
}
