import CLibUV
import Foundation
import Logging
import TLSContract

/// Accepts connections on every loop of a group. Each loop has its own listening socket on the
/// same port (SO_REUSEPORT), so the kernel spreads connections across loops and no connection
/// is ever handed from one thread to another.
public final class TCPServer: @unchecked Sendable {
    public struct Options: Sendable {
        public var connection = ConnectionOptions()
        /// New connections beyond this many per loop are accepted and closed at once.
        public var maxConnectionsPerLoop: Int?
        public var backlog: Int32 = 1024
        public init() {}
    }

    public let address: SocketAddress
    public var port: Int { address.port }
    private let listeners: [Listener]

    /// Binds and starts accepting. `tls` nil means plain TCP. `makeHandler` runs on the accepting loop.
    public init(group: LoopGroup, listen target: HostAndPort, tls: (any TLSContext)?, options: Options = Options(),
                makeHandler: @escaping @Sendable () -> ConnectionHandler) throws {
        var address = try SocketAddress.resolve(target)
        var listeners: [Listener] = []
        for loop in group.loops {
            let fd = address.withSockaddr { mtls_reuseport_listener($0, address.length, options.backlog) }
            guard fd >= 0 else {
                listeners.forEach { $0.stop() }
                throw ConnectionError.transport(code: fd, operation: "listening on \(target)")
            }
            if address.port == 0 {
                // Port 0: the first socket picked a free port, and every other loop binds to that one.
                var storage = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                _ = withUnsafeMutablePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
                }
                address = SocketAddress(storage: storage)
            }
            let listener = Listener(loop: loop, fd: fd, tls: tls, options: options, makeHandler: makeHandler)
            listeners.append(listener)
        }
        self.address = address
        self.listeners = listeners
        for listener in listeners {
            try listener.loop.submitAndWait { try listener.start() }
        }
    }

    /// Open connections across all loops (a snapshot).
    public var connectionCount: Int {
        listeners.reduce(0) { total, listener in total + ((try? listener.loop.submitAndWait { listener.connections.count }) ?? 0) }
    }

    /// Stops accepting. With `graceful`, open connections get close_notify and up to their close
    /// timeout to flush it; without, they are dropped. Waits until every connection has closed.
    public func shutdown(graceful: Bool = true) {
        let group = DispatchGroup()
        for listener in listeners {
            group.enter()
            listener.loop.execute { listener.shutdown(graceful: graceful) { group.leave() } }
        }
        group.wait()
    }
}

/// One loop's listening socket and the connections it accepted. Confined to `loop`.
final class Listener: @unchecked Sendable {
    let loop: EventLoop
    private let fd: Int32
    private let tls: (any TLSContext)?
    private let options: TCPServer.Options
    private let makeHandler: @Sendable () -> ConnectionHandler
    /// Owned: allocated in start, freed in its close callback. `data` is this listener, retained
    /// until that callback.
    private var handle: UnsafeMutablePointer<uv_tcp_t>?
    var connections = Set<ObjectIdentifier>()
    private var open: [ObjectIdentifier: Connection] = [:]
    private var acceptErrorLogged = false
    private var shuttingDown = false
    private var onAllClosed: (() -> Void)?

    init(loop: EventLoop, fd: Int32, tls: (any TLSContext)?, options: TCPServer.Options,
         makeHandler: @escaping @Sendable () -> ConnectionHandler) {
        self.loop = loop
        self.fd = fd
        self.tls = tls
        self.options = options
        self.makeHandler = makeHandler
    }

    func start() throws {
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.loop, handle)
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        self.handle = handle
        var status = uv_tcp_open(handle, uv_os_sock_t(fd))
        if status == 0 {
            status = uv_listen(mtls_tcp_stream(handle), options.backlog) { server, status in
                guard let server, let data = server.pointee.data else { return }
                Unmanaged<Listener>.fromOpaque(data).takeUnretainedValue().accept(status: status)
            }
        }
        if status != 0 {
            stop()
            throw ConnectionError.transport(code: status, operation: "listening")
        }
    }

    /// Closes the listening socket (idempotent).
    func stop() {
        guard let handle else {
            Foundation.close(fd)
            return
        }
        self.handle = nil
        uv_close(mtls_tcp_handle(handle)) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            Unmanaged<Listener>.fromOpaque(data).release()
            handle.deallocate()
        }
    }

    private func accept(status: Int32) {
        guard status == 0, let handle, !shuttingDown else {
            // EMFILE/ENFILE: libuv already accepted and dropped the pending connection with its
            // reserve descriptor, so the listener does not spin; we log once per shortage.
            if status != 0 && !acceptErrorLogged {
                acceptErrorLogged = true
                loop.logger.error("accept failed: \(String(cString: uv_strerror(status))); refusing connections until descriptors free up")
            }
            return
        }
        let session: (any TLSSession)?
        do {
            session = try tls?.makeSession()
        } catch {
            loop.logger.error("cannot start a TLS session: \(error)")
            return
        }
        let connection = Connection(loop: loop, session: session, handler: makeHandler(), options: options.connection,
                                    state: .connecting) { [unowned self] connection in
            removed(connection)
        }
        let accepted = uv_accept(mtls_tcp_stream(handle), mtls_tcp_stream(connection.tcp))
        guard accepted == 0 else {
            if !acceptErrorLogged {
                acceptErrorLogged = true
                loop.logger.error("accept failed: \(String(cString: uv_strerror(accepted)))")
            }
            connection.abort()
            return
        }
        acceptErrorLogged = false
        if let limit = options.maxConnectionsPerLoop, open.count >= limit {
            connection.abort()
            return
        }
        open[ObjectIdentifier(connection)] = connection
        connections.insert(ObjectIdentifier(connection))
        connection.socketConnected()
    }

    private func removed(_ connection: Connection) {
        open[ObjectIdentifier(connection)] = nil
        connections.remove(ObjectIdentifier(connection))
        if shuttingDown && open.isEmpty { finishShutdown() }
    }

    func shutdown(graceful: Bool, completion: @escaping () -> Void) {
        shuttingDown = true
        onAllClosed = completion
        stop()
        if open.isEmpty { finishShutdown(); return }
        for connection in open.values {
            if graceful { connection.close() } else { connection.abort() }
        }
    }

    private func finishShutdown() {
        let done = onAllClosed
        onAllClosed = nil
        done?()
    }
}
