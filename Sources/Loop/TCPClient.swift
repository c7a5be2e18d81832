import CLibUV
import Foundation
import TLSContract

/// Where a client connects: a TCP host and port, or a UNIX-domain socket's path (`unix:PATH`).
public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
    case tcp(HostAndPort)
    case unix(path: String)

    /// The longest path a UNIX-domain socket address holds (`sun_path` is 108 bytes with its NUL).
    /// A longer one would be cut short by the kernel's address format and name another socket.
    public static let maximumUnixPathLength = 107

    /// `unix:PATH` (a path of 1 to `maximumUnixPathLength` bytes), or anything `HostAndPort` parses.
    public init?(_ text: String) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            guard !path.isEmpty, path.utf8.count <= Self.maximumUnixPathLength else { return nil }
            self = .unix(path: path)
        } else if let address = HostAndPort(text) {
            self = .tcp(address)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .tcp(let address): return address.description
        case .unix(let path): return "unix:" + path
        }
    }
}

/// Opens client connections on a loop.
public enum TCPClient {
    /// Connects to `target` on `loop` (resolving names with `uv_getaddrinfo`) and starts TLS when
    /// `tls` is set. `makeHandler` runs on the loop; the handler learns the outcome through its callbacks.
    public static func connect(
        on loop: EventLoop, to target: HostAndPort, tls: (any TLSContext)?, serverName: String? = nil,
        options: ConnectionOptions = ConnectionOptions(), makeHandler: @escaping @Sendable () -> ConnectionHandler
    ) {
        connect(on: loop, to: .tcp(target), tls: tls, serverName: serverName, options: options, makeHandler: makeHandler)
    }

    /// As above, to a TCP address or a UNIX-domain socket.
    public static func connect(
        on loop: EventLoop, to target: Endpoint, tls: (any TLSContext)?, serverName: String? = nil,
        options: ConnectionOptions = ConnectionOptions(), makeHandler: @escaping @Sendable () -> ConnectionHandler
    ) {
        loop.execute {
            let handler = makeHandler()
            var unixPath: String?
            if case .unix(let path) = target { unixPath = path }
            let session: (any TLSSession)?
            do throws(TLSError) {
                session = try tls?.makeSession(serverName: serverName)
            } catch {
                let connection = Connection(loop: loop, session: nil, handler: handler, options: options, state: .connecting,
                                            unixPath: unixPath)
                connection.fail(.tls(error))
                return
            }
            let connection = Connection(loop: loop, session: session, handler: handler, options: options, state: .connecting,
                                        unixPath: unixPath)
            connection.armTimer(options.connectTimeout) { connection in
                connection.fail(.connectTimeout(target.description))
            }
            switch target {
            case .unix:
                connection.connectUnixSocket()
            case .tcp(let address):
                if let numeric = SocketAddress(ip: address.host, port: address.port) {
                    connection.connect(to: numeric)
                } else {
                    Resolution.start(loop: loop, target: address, connection: connection)
                }
            }
        }
    }
}

extension Connection {
    /// Completes a connect request: its `data` retained the connection until now.
    private static let connected: uv_connect_cb = { request, status in
        guard let request, let data = request.pointee.data else { return }
        let connection = Unmanaged<Connection>.fromOpaque(data).takeRetainedValue()
        request.deallocate()
        guard connection.state == .connecting else { return }
        if status == 0 {
            connection.socketConnected()
        } else {
            connection.fail(.transport(code: status, operation: "connecting to \(connection.remoteAddress)"))
        }
    }

    func connect(to address: SocketAddress) {
        guard state == .connecting, case .tcp(let tcp) = socket else { return }
        remoteAddress = address.description
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let status = address.withSockaddr { sockaddr in
            uv_tcp_connect(request, tcp, sockaddr, Connection.connected)
        }
        if status != 0 {
            Unmanaged<Connection>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            fail(.transport(code: status, operation: "connecting to \(address)"))
        }
    }

    /// libuv reports every outcome, a bad path included, through the callback.
    func connectUnixSocket() {
        guard state == .connecting, case .unix(let pipe, let path) = socket else { return }
        remoteAddress = "unix:" + path
        guard path.utf8.count <= Endpoint.maximumUnixPathLength else {
            fail(.transport(code: -ENAMETOOLONG, operation: "connecting to \(remoteAddress)"))
            return
        }
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        uv_pipe_connect(request, pipe, path, Connection.connected)
    }
}

/// One `uv_getaddrinfo` in flight; its request's `data` retains this object until the callback.
private final class Resolution {
    let connection: Connection
    let target: HostAndPort
    /// Owned: freed in deinit, after the callback.
    let request = UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)

    init(connection: Connection, target: HostAndPort) {
        self.connection = connection
        self.target = target
    }

    deinit { request.deallocate() }

    static func start(loop: EventLoop, target: HostAndPort, connection: Connection) {
        let resolution = Resolution(connection: connection, target: target)
        resolution.request.pointee.data = Unmanaged.passRetained(resolution).toOpaque()
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        let status = uv_getaddrinfo(loop.loop, resolution.request, { request, status, result in
            guard let request, let data = request.pointee.data else { return }
            let resolution = Unmanaged<Resolution>.fromOpaque(data).takeRetainedValue()
            defer { uv_freeaddrinfo(result) }
            guard status == 0, let result, let address = result.pointee.ai_addr else {
                resolution.connection.fail(.nameResolution(host: resolution.target.host, reason: String(cString: uv_strerror(status))))
                return
            }
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) {
                $0.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(result.pointee.ai_addrlen)))
            }
            resolution.connection.connect(to: SocketAddress(storage: storage))
        }, target.host, String(target.port), &hints)
        if status != 0 {
            Unmanaged<Resolution>.fromOpaque(resolution.request.pointee.data).release()
            connection.fail(.nameResolution(host: target.host, reason: String(cString: uv_strerror(status))))
        }
    }
}
