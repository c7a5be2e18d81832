import TLSContract

/// Hears what happens to every connection a server accepts, for metrics: the one place that sees
/// each handshake, refusal and application byte, whichever command runs the server. Set it in
/// `ConnectionOptions.observer`; nil (the default) costs one nil check per event.
///
/// Called on the connection's loop, from many loops at once: an implementation must be thread-safe
/// and quick (it runs inside the read and write paths).
public protocol ConnectionObserver: AnyObject, Sendable {
    /// A TLS handshake completed and the peer was admitted, `duration` after the accept.
    func handshakeSucceeded(duration: Duration)
    /// A TLS connection ended before it was established: refused (no or a bad certificate, the
    /// authorization policy), timed out, or dropped. `error` nil: closed without one (a shutdown).
    func handshakeFailed(_ error: ConnectionError?)
    /// A connection became established (after its handshake; a plain one at once).
    func connectionOpened()
    /// An established connection closed: every `connectionOpened` is followed by one of these.
    func connectionClosed()
    /// Application bytes (plaintext for TLS) delivered to the handler.
    func bytesReceived(_ count: Int)
    /// Application bytes (plaintext for TLS) the handler wrote.
    func bytesSent(_ count: Int)
}

extension ConnectionError {
    /// A stable snake_case name for metric labels: the TLS reason's (see `TLSError.Reason.metricName`),
    /// or the kind of transport failure.
    public var metricName: String {
        switch self {
        case .tls(let error): return error.reason.metricName
        case .transport: return "transport_error"
        case .connectTimeout: return "connect_timeout"
        case .nameResolution: return "name_resolution"
        case .refused: return "refused"
        case .timedOut: return "timed_out"
        }
    }
}
