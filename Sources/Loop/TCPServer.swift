import CLibUV
import Foundation
import Logging
import TLSContract

/// Accepts connections on every loop of a group.
///
/// Two strategies, measured against each other in BENCHMARKS.md: with `.handoff` (the default) the
/// first loop accepts every connection and hands the descriptor to each loop in turn; with
/// `.reusePort` each loop has its own listening socket on the same port (SO_REUSEPORT) and the kernel
/// spreads connections by hashing their addresses. On this machine kind (2 cores, client and server
/// on loopback) hand-off served as many handshakes per second (1,618 against 1,588, medians of 3
/// interleaved rounds) with a p99 of 28.6 ms against 40.8 ms: round robin keeps the loops evenly
/// loaded, where the hash sometimes piles a burst onto one loop. Reuse-port remains for machines
/// where one accepting loop would become the bottleneck.
public final class TCPServer: @unchecked Sendable {
    public enum AcceptStrategy: String, Sendable, CaseIterable {
        case reusePort = "reuseport"
        case handoff
    }

    public struct Options: Sendable {
        public var acceptStrategy = AcceptStrategy.handoff
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
        // One loop has nobody to hand connections to: it accepts them itself.
        let handsOff = options.acceptStrategy == .handoff && group.loops.count > 1
        let listeningLoops = handsOff ? [group.loops[0]] : group.loops
        for loop in listeningLoops {
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
        if handsOff {
            // The other loops only adopt what the first one accepts.
            for loop in group.loops.dropFirst() {
                listeners.append(Listener(loop: loop, fd: -1, tls: tls, options: options, makeHandler: makeHandler))
            }
            listeners[0].handoffTargets = listeners
        }
        self.address = address
        self.listeners = listeners
        for listener in listeners where listener.listens {
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
    /// With the hand-off strategy, the listeners (one per loop, this one included) that take turns
    /// adopting accepted connections. Empty otherwise.
    var handoffTargets: [Listener] = []
    private var nextHandoff = 0
    var listens: Bool { fd >= 0 }
    private var peakOpen = 0
    static let trimAfterPeak = 256
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
        if !handoffTargets.isEmpty {
            handOff(from: handle)
            return
        }
        guard let connection = makeConnection() else { return }
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
        admit(connection)
    }

    private func makeConnection() -> Connection? {
        let session: (any TLSSession)?
        do {
            session = try tls?.makeSession()
        } catch {
            loop.logger.error("cannot start a TLS session: \(error)")
            return nil
        }
        return Connection(loop: loop, session: session, handler: makeHandler(), options: options.connection,
                          state: .connecting) { [unowned self] connection in
            removed(connection)
        }
    }

    private func admit(_ connection: Connection) {
        if let limit = options.maxConnectionsPerLoop, open.count >= limit {
            connection.abort()
            return
        }
        open[ObjectIdentifier(connection)] = connection
        connections.insert(ObjectIdentifier(connection))
        connection.socketConnected()
    }

    /// Hand-off strategy: accept here, then give the descriptor to the next loop in turn.
    private func handOff(from server: UnsafeMutablePointer<uv_tcp_t>) {
        // libuv has already accepted the socket; a handle on this loop takes it, and a duplicate of
        // its descriptor travels to the adopting loop (uv_tcp_open there makes it non-blocking).
        let carrier = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.loop, carrier)
        var accepted = uv_os_fd_t()
        let fd: Int32
        if uv_accept(mtls_tcp_stream(server), mtls_tcp_stream(carrier)) == 0,
           uv_fileno(mtls_tcp_handle(carrier), &accepted) == 0 {
            fd = dup(accepted)
        } else {
            fd = -1
        }
        uv_close(mtls_tcp_handle(carrier)) { handle in handle?.deallocate() }
        guard fd >= 0 else { return }
        let target = handoffTargets[nextHandoff % handoffTargets.count]
        nextHandoff += 1
        if target === self { adopt(fd) } else { target.loop.execute { target.adopt(fd) } }
    }

    /// Runs on this listener's loop: wraps an accepted descriptor in a connection.
    func adopt(_ fd: Int32) {
        guard !shuttingDown, let connection = makeConnection() else {
            Foundation.close(fd)
            return
        }
        guard uv_tcp_open(connection.tcp, uv_os_sock_t(fd)) == 0 else {
            Foundation.close(fd)
            connection.abort()
            return
        }
        admit(connection)
    }

    private func removed(_ connection: Connection) {
        open[ObjectIdentifier(connection)] = nil
        connections.remove(ObjectIdentifier(connection))
        peakOpen = max(peakOpen, open.count + 1)
        if open.isEmpty && peakOpen >= Self.trimAfterPeak {
            // glibc keeps freed heap for reuse; after a crowd of connections is gone, give it back.
            peakOpen = 0
            malloc_trim(0)
        }
        if shuttingDown && open.isEmpty { finishShutdown() }
    }

    func shutdown(graceful: Bool, completion: @escaping () -> Void) {
        shuttingDown = true
        onAllClosed = completion
        if listens { stop() }
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
