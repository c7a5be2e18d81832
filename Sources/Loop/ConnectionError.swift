import CLibUV
import TLSContract

/// Why a connection ended badly: a TLS failure (in the engine's one vocabulary) or a transport one.
public enum ConnectionError: Error, Sendable, CustomStringConvertible {
    case tls(TLSError)
    /// The peer reset the connection, or the socket failed; `code` is libuv's (negative errno).
    case transport(code: Int32, operation: String)
    case connectTimeout(String)
    case nameResolution(host: String, reason: String)
    /// The server closed the connection before our request was answered, or refused new ones.
    case refused(String)
    /// An application deadline set with `Connection.setDeadline` passed, e.g. "the request head".
    case timedOut(String)

    public var tlsError: TLSError? {
        if case .tls(let error) = self { return error }
        return nil
    }

    public var description: String {
        switch self {
        case .tls(let error): return error.description
        case .transport(let code, let operation):
            return "\(operation) failed: \(String(cString: uv_strerror(code)))"
        case .connectTimeout(let target): return "connecting to \(target) timed out"
        case .nameResolution(let host, let reason): return "cannot resolve \(host): \(reason)"
        case .refused(let why): return why
        case .timedOut(let what): return "\(what) did not arrive in time"
        }
    }
}
