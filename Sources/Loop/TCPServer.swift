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
        /// Open connections beyond this many across the whole server are accepted and closed at
        /// once (logged once per overload). Nil: no cap.
        public var maxConnections: Int?
        /// The same, per loop, so one loop cannot take every slot. Nil: no cap.
        public var maxConnectionsPerLoop: Int?
        public var backlog: Int32 = 1024
        /// Test hook: called on the loop with each accepted socket before its session is built; a
        /// throw stands for a session that cannot be built (e.g. an allocation failure in the library).
        public var beforeSession: (@Sendable () throws -> Void)?
        public init() {}
    }

    public let address: SocketAddress
    public var port: Int { address.port }
    private let listeners: [Listener]

    /// Binds and starts accepting, with one fixed TLS context (nil: plain TCP).
    public convenience init(group: LoopGroup, listen target: HostAndPort, tls: (any TLSContext)?, options: Options = Options(),
                            makeHandler: @escaping @Sendable () -> ConnectionHandler) throws {
        try self.init(group: group, listen: target, contexts: tls.map(TLSContextProvider.init), options: options,
                      makeHandler: makeHandler)
    }

    /// Binds and starts accepting, on every listener or none. Each connection's session comes from
    /// the provider's current context (nil: plain TCP), so a reload applies to the next accept.
    /// `makeHandler` runs on the accepting loop. A port already listened on, by any process, fails
    /// with "address already in use".
    public init(group: LoopGroup, listen target: HostAndPort, contexts tls: TLSContextProvider?, options: Options = Options(),
                makeHandler: @escaping @Sendable () -> ConnectionHandler) throws {
        var address = try SocketAddress.resolve(target)
        // One loop has nobody to hand connections to: it accepts them itself.
        let handsOff = options.acceptStrategy == .handoff && group.loops.count > 1
        let listeningLoops = options.acceptStrategy == .handoff ? [group.loops[0]] : group.loops
        let reusePort = listeningLoops.count > 1
        if reusePort && address.port != 0 {
            // SO_REUSEPORT sockets of another server would join ours silently; a plain bind would not.
            let status = address.withSockaddr { mtls_probe_port_free($0, address.length) }
            if status != 0 { throw ConnectionError.transport(code: status, operation: "listening on \(target)") }
        }
        let counter = ConnectionCounter()
        var listeners: [Listener] = []
        for loop in listeningLoops {
            let fd = address.withSockaddr { mtls_listener($0, address.length, options.backlog, reusePort ? 1 : 0) }
            guard fd >= 0 else {
                listeners.forEach { $0.closeUnstartedSocket() }
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
            listeners.append(Listener(loop: loop, fd: fd, tls: tls, options: options, counter: counter,
                                      makeHandler: makeHandler))
        }
        if handsOff {
            // The other loops only adopt what the first one accepts.
            for loop in group.loops.dropFirst() {
                listeners.append(Listener(loop: loop, fd: -1, tls: tls, options: options, counter: counter,
                                          makeHandler: makeHandler))
            }
            listeners[0].handoffTargets = listeners
        }
        self.address = address
        self.listeners = listeners
        // All or nothing: a listener that fails to start takes the started ones down with it.
        var started: [Listener] = []
        for listener in listeners where listener.listens {
            do {
                try listener.loop.submitAndWait { try listener.start() }
                started.append(listener)
            } catch {
                for other in listeners where other !== listener && !started.contains(where: { $0 === other }) {
                    other.closeUnstartedSocket()
                }
                shutdown(graceful: false)
                throw error
            }
        }
    }

    /// Open connections across all loops (a snapshot).
    public var connectionCount: Int {
        listeners.reduce(0) { total, listener in total + ((try? listener.loop.submitAndWait { listener.openCount }) ?? 0) }
    }

    /// Closes the listening sockets (new connections are refused by the kernel) and leaves open
    /// connections alone: the first step of a drain. Waits until every listener has stopped.
    public func stopAccepting() {
        let group = DispatchGroup()
        for listener in listeners {
            group.enter()
            let queued = listener.loop.execute {
                listener.stopAccepting()
                group.leave()
            }
            if !queued { group.leave() }
        }
        group.wait()
    }

    /// Stops accepting. With `graceful`, open connections get close_notify and up to their close
    /// timeout to flush it; without, they are dropped. Waits until every connection has closed.
    /// A loop that has already shut down closed its connections itself.
    public func shutdown(graceful: Bool = true) {
        let group = DispatchGroup()
        for listener in listeners {
            group.enter()
            let queued = listener.loop.execute { listener.shutdown(graceful: graceful) { group.leave() } }
            if !queued { group.leave() }
        }
        group.wait()
    }
}

/// Open connections across a server's loops, for `Options.maxConnections`.
final class ConnectionCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    /// Takes a slot unless `limit` are taken.
    func take(limit: Int?) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if let limit, count >= limit { return false }
        count += 1
        return true
    }

    func release() {
        lock.lock()
        count -= 1
        lock.unlock()
    }
}

/// One loop's listening socket (if it listens) and the connections it owns. Confined to `loop`.
///
/// Lifetime: `handle.data` retains the listener from `start` until the handle's close callback
/// (`stop`). Connections refer back to it weakly. With hand-off, the accepting listener holds the
/// others (and itself) in `handoffTargets` until shutdown clears it, so nothing outlives a shutdown.
final class Listener: @unchecked Sendable {
    let loop: EventLoop
    /// The listening descriptor until `start` hands it to libuv (or `closeUnstartedSocket` closes
    /// it); -1 for a loop that only adopts handed-off connections.
    private var fd: Int32
    private let tls: TLSContextProvider?
    private let options: TCPServer.Options
    private let counter: ConnectionCounter
    private let makeHandler: @Sendable () -> ConnectionHandler
    /// Owned: allocated in start, freed in its close callback. `data` is this listener, retained
    /// until that callback.
    private var handle: UnsafeMutablePointer<uv_tcp_t>?
    private var open: [ObjectIdentifier: Connection] = [:]
    var openCount: Int { open.count }
    /// Logged once until the condition clears, so a flood costs one line.
    private var acceptErrorLogged = false
    private var sessionErrorLogged = false
    private var limitLogged = false
    /// With the hand-off strategy, the listeners (one per loop, this one included) that take turns
    /// adopting accepted connections. Empty otherwise, and emptied at shutdown.
    var handoffTargets: [Listener] = []
    private var nextHandoff = 0
    let listens: Bool
    private var peakOpen = 0
    static let trimAfterPeak = 256
    private var shuttingDown = false
    private var onAllClosed: (() -> Void)?

    init(loop: EventLoop, fd: Int32, tls: TLSContextProvider?, options: TCPServer.Options, counter: ConnectionCounter,
         makeHandler: @escaping @Sendable () -> ConnectionHandler) {
        self.loop = loop
        self.fd = fd
        self.listens = fd >= 0
        self.tls = tls
        self.options = options
        self.counter = counter
        self.makeHandler = makeHandler
    }

    func start() throws {
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.loop, handle)
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        self.handle = handle
        loop.register(self)
        var status = uv_tcp_open(handle, uv_os_sock_t(fd))
        if status == 0 {
            fd = -1  // libuv owns it now, and closes it with the handle
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

    /// A socket bound for this listener that never reached libuv. Idempotent.
    func closeUnstartedSocket() {
        if fd >= 0 { Foundation.close(fd) }
        fd = -1
    }

    /// Closes the listening socket (idempotent).
    func stop() {
        closeUnstartedSocket()
        guard let handle else { return }
        self.handle = nil
        uv_close(mtls_tcp_handle(handle)) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            let listener = Unmanaged<Listener>.fromOpaque(data).takeRetainedValue()
            listener.loop.unregister(listener)
            handle.deallocate()
        }
    }

    /// Accept first, decide after: whatever happens next, the pending connection is taken off the
    /// listening socket, so libuv keeps polling it and the listener never stalls.
    private func accept(status: Int32) {
        guard status == 0, let handle else {
            // EMFILE/ENFILE: libuv already accepted and dropped the pending connection with its
            // reserve descriptor, so the listener does not spin; we log once per shortage.
            if status != 0 && !acceptErrorLogged {
                acceptErrorLogged = true
                loop.logger.error("accept failed: \(String(cString: uv_strerror(status))); refusing connections until descriptors free up")
            }
            return
        }
        let socket = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.loop, socket)
        let accepted = uv_accept(mtls_tcp_stream(handle), mtls_tcp_stream(socket))
        guard accepted == 0 else {
            if !acceptErrorLogged {
                acceptErrorLogged = true
                loop.logger.error("accept failed: \(String(cString: uv_strerror(accepted)))")
            }
            Self.discard(socket)
            return
        }
        acceptErrorLogged = false
        if shuttingDown {
            Self.discard(socket)
        } else if !handoffTargets.isEmpty {
            handOff(socket)
        } else {
            admit(socket)
        }
    }

    /// Closes an accepted socket that will not become a connection.
    private static func discard(_ socket: UnsafeMutablePointer<uv_tcp_t>) {
        uv_close(mtls_tcp_handle(socket)) { handle in handle?.deallocate() }
    }

    /// Turns an accepted socket on this loop into a connection, within the limits, or closes it.
    private func admit(_ socket: UnsafeMutablePointer<uv_tcp_t>) {
        guard takeSlot() else {
            Self.discard(socket)
            return
        }
        let session: (any TLSSession)?
        do {
            try options.beforeSession?()
            session = try tls?.makeSession()
            sessionErrorLogged = false
        } catch {
            counter.release()
            if !sessionErrorLogged {
                sessionErrorLogged = true
                loop.logger.error("cannot start a TLS session, closing the connection: \(error)")
            }
            Self.discard(socket)
            return
        }
        let connection = Connection(loop: loop, session: session, handler: makeHandler(), options: options.connection,
                                    state: .connecting, acceptedSocket: socket) { [weak self] connection in
            self?.removed(connection)
        }
        open[ObjectIdentifier(connection)] = connection
        connection.socketConnected()
    }

    private func takeSlot() -> Bool {
        let loopFull = options.maxConnectionsPerLoop.map { open.count >= $0 } ?? false
        guard !loopFull, counter.take(limit: options.maxConnections) else {
            if !limitLogged {
                limitLogged = true
                let limit = loopFull ? "\(options.maxConnectionsPerLoop!) on loop \(loop.name)" : "\(options.maxConnections!)"
                loop.logger.warning("connection limit reached (\(limit)): closing new connections until some close")
            }
            return false
        }
        return true
    }

    /// Hand-off strategy: the accepted socket's descriptor goes to the next loop in turn.
    private func handOff(_ socket: UnsafeMutablePointer<uv_tcp_t>) {
        let target = handoffTargets[nextHandoff % handoffTargets.count]
        nextHandoff += 1
        if target === self {
            admit(socket)
            return
        }
        // A duplicate of the descriptor travels to the adopting loop (uv_tcp_open there makes it
        // non-blocking); the handle on this loop closes its own copy.
        var accepted = uv_os_fd_t()
        let fd = uv_fileno(mtls_tcp_handle(socket), &accepted) == 0 ? dup(accepted) : -1
        Self.discard(socket)
        guard fd >= 0 else { return }
        let queued = target.loop.execute { target.adopt(fd) }
        if !queued { Foundation.close(fd) }
    }

    /// Runs on this listener's loop: wraps a handed-off descriptor in a connection.
    func adopt(_ fd: Int32) {
        let socket = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.loop, socket)
        guard !shuttingDown, uv_tcp_open(socket, uv_os_sock_t(fd)) == 0 else {
            Foundation.close(fd)
            Self.discard(socket)
            return
        }
        admit(socket)
    }

    private func removed(_ connection: Connection) {
        guard open.removeValue(forKey: ObjectIdentifier(connection)) != nil else { return }
        counter.release()
        limitLogged = false
        peakOpen = max(peakOpen, open.count + 1)
        if open.isEmpty && peakOpen >= Self.trimAfterPeak {
            // glibc keeps freed heap for reuse; after a crowd of connections is gone, give it back.
            peakOpen = 0
            malloc_trim(0)
        }
        if shuttingDown && open.isEmpty { finishShutdown() }
    }

    /// No new connections from now on; those open stay.
    func stopAccepting() {
        shuttingDown = true
        handoffTargets = []
        stop()
    }

    func shutdown(graceful: Bool, completion: @escaping () -> Void) {
        shuttingDown = true
        handoffTargets = []
        onAllClosed = completion
        stop()
        if open.isEmpty { finishShutdown(); return }
        for connection in Array(open.values) {
            if graceful { connection.close() } else { connection.abort() }
        }
    }

    private func finishShutdown() {
        let done = onAllClosed
        onAllClosed = nil
        done?()
    }
}

extension Listener: LoopResource {
    /// The loop is going away: stop listening. Its connections close themselves (they are resources
    /// too), and a `shutdown` still waiting hears of it through `removed`.
    func closeForLoopShutdown() {
        shuttingDown = true
        handoffTargets = []
        stop()
    }
}
