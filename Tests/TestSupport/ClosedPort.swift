import Foundation

/// A TCP socket bound to a free port on 127.0.0.1 (and listening, with `listenBacklog`): for tests
/// that need a port nobody else can take, with behaviour of their choosing.
public enum LoopbackSocket {
    /// The descriptor (the caller closes it) and its port.
    public static func bound(listenBacklog: Int32? = nil) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ready = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && (listenBacklog.map { listen(fd, $0) == 0 } ?? true)
                    && getsockname(fd, $0, &length) == 0
            }
        }
        guard ready else {
            let code = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }
}

/// A loopback TCP port that refuses every connection for as long as this object lives.
///
/// A port freed by closing a listener can be taken at once by another test running in parallel, so a
/// "nothing listens here" check against it is a race. This socket is bound but never listens: the
/// kernel answers connects to it with a reset (ECONNREFUSED), and since it is bound without
/// SO_REUSEADDR, no other socket can bind the port while it is held.
public final class ClosedPort: @unchecked Sendable {
    public let port: Int
    private let fd: Int32

    public init() throws {
        (fd, port) = try LoopbackSocket.bound()
    }

    deinit { close(fd) }
}
