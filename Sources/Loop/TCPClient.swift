import CLibUV
import Foundation
import TLSContract

/// Opens client connections on a loop.
public enum TCPClient {
    /// Connects to `target` on `loop` (resolving names with `uv_getaddrinfo`) and starts TLS when
    /// `tls` is set. `makeHandler` runs on the loop; the handler learns the outcome through its callbacks.
    public static func connect(
        on loop: EventLoop, to target: HostAndPort, tls: (any TLSContext)?, serverName: String? = nil,
        options: ConnectionOptions = ConnectionOptions(), makeHandler: @escaping @Sendable () -> ConnectionHandler
    ) {
        loop.execute {
            let handler = makeHandler()
            let session: (any TLSSession)?
            do throws(TLSError) {
                session = try tls?.makeSession(serverName: serverName)
            } catch {
                let connection = Connection(loop: loop, session: nil, handler: handler, options: options, state: .connecting)
                connection.fail(.tls(error))
                return
            }
            let connection = Connection(loop: loop, session: session, handler: handler, options: options, state: .connecting)
            connection.armTimer(options.connectTimeout) { connection in
                connection.fail(.connectTimeout(target.description))
            }
            if let address = SocketAddress(ip: target.host, port: target.port) {
                connection.connect(to: address)
            } else {
                Resolution.start(loop: loop, target: target, connection: connection)
            }
        }
    }
}

extension Connection {
    func connect(to address: SocketAddress) {
        guard state == .connecting else { return }
        remoteAddress = address.description
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let status = address.withSockaddr { sockaddr in
            uv_tcp_connect(request, tcp, sockaddr) { request, status in
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
        }
        if status != 0 {
            Unmanaged<Connection>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            fail(.transport(code: status, operation: "connecting to \(address)"))
        }
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
