import CLibUV
import Foundation
import TLSContract

/// What an application implements to use a connection. Every call comes on the connection's loop.
public protocol ConnectionHandler: AnyObject {
    /// The handshake completed, the peer's certificate included: application data may flow now.
    /// Plain TCP connections call this as soon as they connect.
    func connectionDidEstablish(_ connection: Connection)
    /// Decrypted bytes from the peer, valid only during the call.
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer)
    /// The outgoing queue fell below the low-water mark after having been above the high one.
    func connectionDidBecomeWritable(_ connection: Connection)
    /// The connection is gone: `nil` for a clean close (close_notify, or our own `close()`).
    func connectionDidClose(_ connection: Connection, error: ConnectionError?)
    /// With `ConnectionOptions.allowsHalfClose`: the peer will send nothing more (TCP EOF on a plain
    /// connection, close_notify on a TLS one), but still reads. We may go on writing; the connection
    /// closes once we call `shutdownWrite()` (or `close()`). Never called without the option.
    func connectionDidReceiveEnd(_ connection: Connection)
}

extension ConnectionHandler {
    public func connectionDidBecomeWritable(_ connection: Connection) {}
    public func connectionDidReceiveEnd(_ connection: Connection) {}
}

/// Limits that keep one connection from holding memory or a slot forever.
public struct ConnectionOptions: Sendable {
    public var handshakeTimeout: Duration = .seconds(10)
    /// Closes a connection that neither reads nor writes for this long. Off when nil.
    public var idleTimeout: Duration?
    /// How long a graceful close may wait for close_notify to flush before the socket is dropped.
    public var closeTimeout: Duration = .seconds(5)
    public var connectTimeout: Duration = .seconds(10)
    /// Above this many queued outgoing bytes the connection stops reading and reports itself not
    /// writable; below `writeLowWater` it resumes.
    public var writeHighWater = 256 * 1024
    public var writeLowWater = 64 * 1024
    /// Stop reading while our own writes are backed up, so that a peer that sends without reading
    /// (a slow reader of an echo) cannot make us queue without bound. A client that streams in both
    /// directions turns this off and paces its writes with `isWritable` instead, or two such peers
    /// would each wait for the other to read.
    public var stopsReadingWhileWritesBackUp = true
    /// Decides, once the peer's certificate is verified and before the application sees anything,
    /// whether this peer may talk to us. A refused peer gets close_notify and not one byte of data.
    public var authorize: (@Sendable (PeerIdentity?) -> Bool)?
    /// Keep the connection open when the peer ends its half (see `connectionDidReceiveEnd`), for
    /// applications that forward or answer after the end of a request, such as a proxy. Off: the
    /// peer's end closes the connection, as it always did.
    public var allowsHalfClose = false
    /// Hears of handshakes, refusals, open connections and application bytes (for metrics).
    public var observer: (any ConnectionObserver)?

    public init() {}
}

extension Duration {
    var milliseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1000 + UInt64(max(0, attoseconds) / 1_000_000_000_000_000)
    }
}

/// One stream connection on one loop (TCP, or a UNIX-domain socket towards a local service), with
/// or without TLS. It pumps ciphertext between the socket and
/// the session and plaintext between the session and the handler, and owns every timer and buffer
/// of the connection. Confined to its loop: call it only from there (handler callbacks are).
///
/// Lifetime rules, all enforced here:
/// - The socket handle's `data` holds the one retain that keeps the connection alive, from `init` until libuv's close
///   callback for the socket. Nothing else keeps a connection alive (requests in flight retain it too,
///   and libuv completes them, with `UV_ECANCELED` at worst, before that close callback).
/// - Every path that ends a connection goes through `closeNow()`, which is idempotent: it moves to
///   `.closed`, cancels every timer, and closes the socket. After it, no timer can fire and no new
///   timer can be armed (`armTimer` refuses), so `close()`, `fail()`, `abort()` and `closeNow()` are
///   safe in any order, any number of times, from any callback.
/// - Timer actions hold the connection weakly: a timer that outlived its connection would find nothing.
public final class Connection {
    /// `connecting` → `handshaking` (TLS) → `established` → `closing` (close_notify and queued writes
    /// draining, then TCP shutdown) → `closed` (socket closing; the handler hears of it once, from
    /// libuv's close callback). Any state can go straight to `closed`.
    public enum State: Sendable { case connecting, handshaking, established, closing, closed }

    public let loop: EventLoop
    public private(set) var state: State
    public internal(set) var remoteAddress: String = "?"
    public var peerIdentity: PeerIdentity? { session?.peerIdentity }
    public var negotiated: NegotiatedParameters? { session?.negotiated }
    public var isTLS: Bool { session != nil }
    /// How long the handshake took, from the accept (or the connect).
    public private(set) var handshakeDuration: Duration?
    /// Free for the application: e.g. the server a connection belongs to.
    public var userInfo: AnyObject?

    /// The socket's libuv handle. Owned: allocated (or adopted, already initialised) in init, freed
    /// in the close callback. Its `data` holds a retain of `self` until that callback, so the
    /// connection lives exactly as long as its socket.
    let socket: Socket
    /// The same handle as the base types every stream call takes.
    private let stream: UnsafeMutablePointer<uv_stream_t>
    private let handle: UnsafeMutablePointer<uv_handle_t>

    enum Socket {
        case tcp(UnsafeMutablePointer<uv_tcp_t>)
        /// A UNIX-domain stream socket (libuv calls them pipes), e.g. a proxy's `unix:PATH` target.
        case unix(UnsafeMutablePointer<uv_pipe_t>, path: String)
    }
    private let session: (any TLSSession)?
    private var handler: ConnectionHandler?
    private let options: ConnectionOptions
    /// The one timer of the current phase: connect, handshake, idle or close. Owned; cancelled in `closeNow`.
    private var phaseTimer: LoopTimer?
    /// The application's deadline (see `setDeadline`). Owned; cancelled in `closeNow`.
    private var deadlineTimer: LoopTimer?
    /// uv_hrtime at init, in nanoseconds: the loop's cached clock counts whole milliseconds, too
    /// coarse for a handshake histogram whose first buckets are below a millisecond.
    private var startedAt: UInt64 = 0

    /// Bytes handed to libuv and not yet confirmed written.
    public private(set) var queuedOutboundBytes = 0
    private var aboveHighWater = false
    private var appPausedReading = false
    private var socketReading = false
    private var closeError: ConnectionError?
    private var closeReported = false
    private var shutdownStarted = false
    private var handlingData = false
    /// While one read's slices go through the session, the records the handler writes back are
    /// sent together after the last slice (one socket write per read instead of one per slice),
    /// unless they and the queue pass the high-water mark first: then they go at once, so that
    /// `isWritable` turns false exactly as it would have without holding them.
    private var holdingCiphertext = false
    /// Half-close (see `shutdownWrite`): asked for, TCP shutdown started (shared with the full close
    /// path, so only one `uv_shutdown` is ever issued), and the peer's own end seen.
    private var writeShutdownRequested = false
    private var writeShutdownComplete = false
    private var peerEnded = false
    /// The observer heard `connectionOpened`, so it must hear `connectionClosed`.
    private var observedOpen = false
    let onClose: ((Connection) -> Void)?

    /// `acceptedSocket`: a TCP handle already initialised on `loop` and accepted (the server path
    /// accepts before it builds a session); ownership passes to the connection. Nil: a new socket,
    /// a UNIX-domain one to connect to `unixPath` if given, else TCP.
    init(loop: EventLoop, session: (any TLSSession)?, handler: ConnectionHandler, options: ConnectionOptions,
         state: State, acceptedSocket: UnsafeMutablePointer<uv_tcp_t>? = nil, unixPath: String? = nil,
         onClose: ((Connection) -> Void)? = nil) {
        self.loop = loop
        self.session = session
        self.handler = handler
        self.options = options
        self.state = state
        self.onClose = onClose
        if let acceptedSocket {
            socket = .tcp(acceptedSocket)
        } else if let unixPath {
            let pipe = UnsafeMutablePointer<uv_pipe_t>.allocate(capacity: 1)
            uv_pipe_init(loop.loop, pipe, 0)
            socket = .unix(pipe, path: unixPath)
        } else {
            let tcp = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
            uv_tcp_init(loop.loop, tcp)
            socket = .tcp(tcp)
        }
        switch socket {
        case .tcp(let tcp): (stream, handle) = (mtls_tcp_stream(tcp), mtls_tcp_handle(tcp))
        case .unix(let pipe, _): (stream, handle) = (mtls_pipe_stream(pipe), mtls_pipe_handle(pipe))
        }
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        startedAt = uv_hrtime()
        loop.register(self)
    }

    // MARK: Life cycle

    /// The socket is connected: start the handshake (or, for plain TCP, the application).
    func socketConnected() {
        guard state == .connecting else { return }
        switch socket {
        case .tcp(let tcp):
            uv_tcp_nodelay(tcp, 1)
            remoteAddress = peerName() ?? remoteAddress
        case .unix(_, let path):
            remoteAddress = "unix:" + path
        }
        startReading()
        if session != nil {
            state = .handshaking
            armTimer(options.handshakeTimeout) { connection in
                connection.fail(.tls(TLSError(.handshakeTimeout, peer: connection.remoteAddress)))
            }
            drive()
        } else {
            state = .established
            reportOpened()
            resetIdleTimer()
            handler?.connectionDidEstablish(self)
            performRequestedWriteShutdown()
        }
    }

    /// Tells the observer the connection is established (and, for TLS, how long the handshake took).
    private func reportOpened() {
        guard let observer = options.observer else { return }
        if let handshakeDuration, session != nil { observer.handshakeSucceeded(duration: handshakeDuration) }
        observedOpen = true
        observer.connectionOpened()
    }

    /// The peer's address, once per connection: one `getpeername` (the local address is asked for
    /// only by those who need it, through `socketAddresses`).
    private func peerName() -> String? {
        guard case .tcp(let tcp) = socket else { return nil }
        return Self.socketName { uv_tcp_getpeername(tcp, $0, $1) }?.description
    }

    /// Both ends of a TCP socket while it is open (nil once closed, for a UNIX-domain socket, or if
    /// the kernel cannot say): e.g. for a PROXY protocol header naming the client and the address it reached.
    public var socketAddresses: (local: SocketAddress, peer: SocketAddress)? {
        guard state != .closed, case .tcp(let tcp) = socket,
              let local = Self.socketName({ uv_tcp_getsockname(tcp, $0, $1) }),
              let peer = Self.socketName({ uv_tcp_getpeername(tcp, $0, $1) }) else { return nil }
        return (local, peer)
    }

    private static func socketName(_ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<Int32>) -> Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call($0, &length) }
        }
        return status == 0 ? SocketAddress(storage: storage) : nil
    }

    /// Sends close_notify (TLS), flushes, shuts the socket down and closes it, within `closeTimeout`.
    public func close() {
        switch state {
        case .closing, .closed: return
        case .connecting:
            closeNow()
            return
        case .handshaking, .established:
            break
        }
        beginClosing()
        // Our half is already shut (close_notify and FIN sent): nothing is left to say.
        if writeShutdownComplete {
            closeNow()
            return
        }
        session?.close()
        flushCiphertext()
        shutdownWhenDrained()
    }

    /// Drops the connection at once, without close_notify.
    public func abort() { closeNow() }

    /// Drops the connection with a TCP reset, as a crashed or hostile peer would.
    public func reset() { closeNow(resetting: true) }

    /// Ends the connection with `error` (reported to the handler), after flushing the alert that
    /// explains it if the socket still takes it.
    func fail(_ error: ConnectionError) {
        guard state != .closed else { return }
        if closeError == nil { closeError = error.withPeer(remoteAddress) }
        flushCiphertext()
        guard state != .closed else { return }  // the flush itself may have failed
        if queuedOutboundBytes == 0 {
            closeNow()
        } else {
            beginClosing()
            shutdownWhenDrained()
        }
    }

    /// Enters `.closing` with a bound on how long the rest may take.
    private func beginClosing() {
        guard state != .closing, state != .closed else { return }
        state = .closing
        deadlineTimer?.stop()
        armTimer(options.closeTimeout) { $0.closeNow() }
    }

    private func shutdownWhenDrained() {
        guard state == .closing, queuedOutboundBytes == 0, !shutdownStarted else { return }
        startTCPShutdown()
    }

    /// Sends our FIN once libuv has written everything queued before it. The full close ends the
    /// connection when it is done; a half-close ends it only if the peer has ended too.
    private func startTCPShutdown() {
        shutdownStarted = true
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        // Retained until the callback, which libuv always calls (with UV_ECANCELED if the socket closes first).
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let status = uv_shutdown(request, stream) { request, _ in
            guard let request, let data = request.pointee.data else { return }
            let connection = Unmanaged<Connection>.fromOpaque(data).takeRetainedValue()
            request.deallocate()
            connection.tcpShutdownCompleted()
        }
        if status != 0 {
            Unmanaged<Connection>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            closeNow()
        }
    }

    private func tcpShutdownCompleted() {
        writeShutdownComplete = true
        if state == .closing || peerEnded { closeNow() }
    }

    // MARK: Half-close

    /// Ends our half of the connection and keeps reading: for TLS, close_notify, then (once every
    /// queued byte is written) a TCP shutdown; for plain TCP, the shutdown alone. Later writes throw.
    /// The connection closes when the peer has ended its half too; until then only the idle timeout
    /// bounds how long the peer may take. Before the connection is established the request waits
    /// for it. Meant for `allowsHalfClose`; without it the peer's end closes the connection anyway.
    ///
    /// TLS 1.3 allows reading after sending close_notify (RFC 8446, 6.1), and both backends do it
    /// in 1.2 as well; a peer that answers close_notify by closing its own half at once (many
    /// TLS 1.2 stacks do) simply ends the connection sooner.
    public func shutdownWrite() {
        guard !writeShutdownRequested, state != .closing, state != .closed else { return }
        writeShutdownRequested = true
        performRequestedWriteShutdown()
    }

    private func performRequestedWriteShutdown() {
        guard writeShutdownRequested, state == .established, !shutdownStarted else { return }
        // The peer is done as well: this is a full close, with its bound.
        if peerEnded {
            close()
            return
        }
        session?.close()
        flushCiphertext()
        shutdownWriteWhenDrained()
    }

    private func shutdownWriteWhenDrained() {
        guard writeShutdownRequested, state == .established, queuedOutboundBytes == 0, !shutdownStarted else { return }
        startTCPShutdown()
    }

    /// The peer ended its half. With half-close allowed the handler hears of it and decides what
    /// follows; a connection whose own half is already shut is done.
    private func peerDidEnd() {
        guard options.allowsHalfClose, state == .established else {
            close()
            return
        }
        peerEnded = true
        // Nothing more will come: a read would only see the EOF again.
        stopReading()
        handler?.connectionDidReceiveEnd(self)
        if writeShutdownComplete {
            closeNow()  // both halves are done
        } else if writeShutdownRequested {
            // Ours is still draining to a peer that is done: finish within the close timeout.
            close()
        }
    }

    /// The one way out: idempotent, cancels every timer, closes the socket (with a TCP reset when
    /// `resetting`). The handler hears of it from the close callback.
    func closeNow(resetting: Bool = false) {
        guard state != .closed else { return }
        state = .closed
        phaseTimer?.cancel()
        phaseTimer = nil
        deadlineTimer?.cancel()
        deadlineTimer = nil
        socketReading = false
        guard uv_is_closing(handle) == 0 else { return }
        let closed: uv_close_cb = { handle in
            guard let handle, let data = handle.pointee.data else { return }
            let connection = Unmanaged<Connection>.fromOpaque(data).takeRetainedValue()
            handle.deallocate()
            connection.reportClosed()
        }
        // uv_tcp_close_reset refuses a socket whose shutdown has begun; that one closes normally.
        // A reset is TCP's; a UNIX-domain socket just closes.
        if case .tcp(let tcp) = socket, resetting, uv_tcp_close_reset(tcp, closed) == 0 { return }
        uv_close(handle, closed)
    }

    private func reportClosed() {
        guard !closeReported else { return }
        closeReported = true
        loop.unregister(self)
        let handler = self.handler
        self.handler = nil
        handler?.connectionDidClose(self, error: closeError)
        if let observer = options.observer {
            // Every path out of a handshake ends here, so each one is counted exactly once.
            if observedOpen { observer.connectionClosed() } else if session != nil { observer.handshakeFailed(closeError) }
        }
        onClose?(self)
    }

    // MARK: Timers

    /// (Re)arms the phase timer. Refused once the connection is closed, so nothing can fire after.
    /// The action gets the connection only if it still exists.
    func armTimer(_ duration: Duration, _ action: @escaping (Connection) -> Void) {
        guard state != .closed else { return }
        if phaseTimer == nil { phaseTimer = LoopTimer(loop: loop) }
        phaseTimer?.schedule(afterMilliseconds: max(1, duration.milliseconds)) { [weak self] in
            if let self, self.state != .closed { action(self) }
        }
    }

    /// Only application progress (plaintext delivered to the handler, or written by it) keeps an
    /// established connection open: bytes of a record that never completes are not progress.
    private func resetIdleTimer() {
        guard state == .established else { return }
        if let idle = options.idleTimeout {
            armTimer(idle) { connection in
                connection.fail(.tls(TLSError(.idleTimeout, peer: connection.remoteAddress)))
            }
        } else {
            phaseTimer?.stop()
        }
    }

    /// An application deadline, independent of the idle timer: unless cleared (`nil`) or re-set
    /// before it passes, the connection fails with `.timedOut(what)`. E.g. a server that must see a
    /// whole request head within a few seconds, however slowly its bytes trickle in.
    public func setDeadline(_ duration: Duration?, for what: String) {
        guard let duration else {
            deadlineTimer?.stop()
            return
        }
        guard state != .closed, state != .closing else { return }
        if deadlineTimer == nil { deadlineTimer = LoopTimer(loop: loop) }
        deadlineTimer?.schedule(afterMilliseconds: max(1, duration.milliseconds)) { [weak self] in
            if let self, self.state != .closed { self.fail(.timedOut(what)) }
        }
    }

    // MARK: Reading

    private func startReading() {
        guard !socketReading, !peerEnded, state != .closed else { return }
        socketReading = true
        uv_read_start(stream, { handle, _, buffer in
            guard let handle, let buffer, let data = handle.pointee.data else { return }
            let loop = Unmanaged<Connection>.fromOpaque(data).takeUnretainedValue().loop
            buffer.pointee = uv_buf_init(loop.readBuffer.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         UInt32(loop.readBuffer.count))
        }, { stream, count, buffer in
            guard let stream, let data = stream.pointee.data else { return }
            let connection = Unmanaged<Connection>.fromOpaque(data).takeUnretainedValue()
            connection.didRead(count: count, base: buffer?.pointee.base)
        })
    }

    private func stopReading() {
        guard socketReading else { return }
        socketReading = false
        uv_read_stop(stream)
    }

    /// Reading runs only while both the application and the socket keep up.
    private func updateReading() {
        let writesBackedUp = aboveHighWater && options.stopsReadingWhileWritesBackUp
        if appPausedReading || writesBackedUp || state == .closed { stopReading() } else { startReading() }
    }

    private func didRead(count: Int, base: UnsafeMutablePointer<CChar>?) {
        guard state != .closed else { return }
        if count > 0, let base {
            let bytes = UnsafeRawBufferPointer(start: base, count: count)
            if let session {
                // A slice at a time, each delivered before the next goes in: an established session
                // decrypts straight from the read buffer (both backends do) as far as its plaintext
                // limit, and copies only what is left over; a whole quarter-MiB read would leave
                // three quarters over. The buffer is reused by the next read, so every slice goes in
                // now, even if the application pauses (the session then keeps them).
                var offset = 0
                holdingCiphertext = true
                while offset < count && state != .closed {
                    let end = min(count, offset + Self.ciphertextSlice)
                    session.receiveCiphertext(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
                    drive()
                    offset = end
                }
                holdingCiphertext = false
                flushCiphertext()
            } else {
                deliverToHandler(bytes)
            }
        } else if count == Int(UV_EOF.rawValue) {
            if let session {
                session.receiveEndOfInput()
                drive()
                // A session that still reports nothing (a clean close already seen) ends here.
                if state != .closed && state != .closing && !peerEnded { close() }
            } else {
                peerDidEnd()
            }
        } else if count < 0 {
            fail(.transport(code: Int32(count), operation: "reading from \(remoteAddress)"))
        }
    }

    /// Four TLS records' worth: about what a session decrypts before its plaintext limit (64 KiB).
    static let ciphertextSlice = 64 * 1024

    /// Advances the session until it needs input, the application stops taking data, or it ends.
    private func drive() {
        guard let session, !handlingData else { return }
        handlingData = true
        defer { handlingData = false }
        loop: while state != .closed {
            if appPausedReading && session.pendingPlaintextCount > 0 { break }
            switch session.process() {
            case .needsInput:
                break loop
            case .handshakeComplete:
                if state == .handshaking {
                    if let authorize = options.authorize, !authorize(session.peerIdentity) {
                        session.close()
                        fail(.tls(TLSError(.certificateRejected(.notAuthorized),
                                           detail: session.peerIdentity?.displayName ?? "no certificate")))
                        return
                    }
                    state = .established
                    handshakeDuration = .nanoseconds(Int64(uv_hrtime() - startedAt))
                    phaseTimer?.stop()
                    reportOpened()
                    resetIdleTimer()
                    handler?.connectionDidEstablish(self)
                    performRequestedWriteShutdown()
                }
            case .plaintextReady:
                // The loop's scratch buffer: a handler that writes back re-enters only flushCiphertext,
                // which uses the other one. Taking everything pending into the empty scratch lets the
                // byte queue hand over its storage instead of copying it.
                loop.plaintextScratch.removeAll(keepingCapacity: true)
                session.takePlaintext(into: &loop.plaintextScratch, maxBytes: .max)
                if state == .established || state == .closing {
                    let bytes = loop.plaintextScratch
                    bytes.withUnsafeBytes { deliverToHandler($0) }
                }
            case .peerClosed:
                flushCiphertext()
                if !peerEnded { peerDidEnd() }
                break loop
            case .failed(let error):
                fail(.tls(error))
                return
            }
        }
        if !holdingCiphertext { flushCiphertext() }
    }

    private func deliverToHandler(_ bytes: UnsafeRawBufferPointer) {
        guard let handler, bytes.count > 0 else { return }
        options.observer?.bytesReceived(bytes.count)
        resetIdleTimer()
        handler.connection(self, didReceive: bytes)
    }

    /// Stops delivering data until `resumeReading()`. Data already decrypted waits in the session.
    public func pauseReading() {
        appPausedReading = true
        updateReading()
    }

    public func resumeReading() {
        guard appPausedReading else { return }
        appPausedReading = false
        updateReading()
        if state != .closed { drive() }
    }

    // MARK: Writing

    /// True while the outgoing queue is below the high-water mark.
    public var isWritable: Bool { !aboveHighWater }

    /// Encrypts (for TLS) and sends. Never drops bytes: what the socket does not take at once is
    /// queued until libuv confirms it. Throws when the connection is closing or closed.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(ConnectionError) {
        guard state == .established || state == .handshaking, !writeShutdownRequested else {
            throw .tls(TLSError(.sessionClosed, peer: remoteAddress))
        }
        resetIdleTimer()
        if let session {
            do throws(TLSError) { try session.writePlaintext(bytes) } catch { throw .tls(error) }
            options.observer?.bytesSent(bytes.count)
            if !holdingCiphertext || queuedOutboundBytes + session.pendingCiphertextCount > options.writeHighWater {
                flushCiphertext()
            }
        } else {
            options.observer?.bytesSent(bytes.count)
            send(bytes)
        }
    }

    public func write(_ bytes: [UInt8]) throws(ConnectionError) {
        let result: Result<Void, ConnectionError> = bytes.withUnsafeBytes { raw in
            do throws(ConnectionError) { try write(raw); return .success(()) } catch { return .failure(error) }
        }
        try result.get()
    }

    private func flushCiphertext() {
        guard let session, session.pendingCiphertextCount > 0, state != .closed else { return }
        // Into an empty array, which both backends fill without a copy of their own (GnuTLS hands
        // over its queue, OpenSSL writes into it): what the socket does not take at once is then
        // kept by adopting that array, not by copying it.
        var bytes: [UInt8] = []
        session.takeCiphertext(into: &bytes)
        send(adopting: bytes)
    }

    /// `send`, for bytes the connection may keep: the unwritten rest stays in `bytes` itself.
    private func send(adopting bytes: [UInt8]) {
        guard bytes.count > 0, state != .closed else { return }
        let offset = bytes.withUnsafeBytes { tryWrite($0) }
        guard let offset, offset < bytes.count else { return }
        queue(PendingWrite(connection: self, adopting: bytes, from: offset))
    }

    /// `uv_try_write` first; the remainder goes to `uv_write` with its own copy, freed in the callback.
    /// A failure ends the connection (through `fail`, which is safe to re-enter from here).
    private func send(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, state != .closed else { return }
        guard let offset = tryWrite(bytes), offset < bytes.count else { return }
        queue(PendingWrite(connection: self, copying: UnsafeRawBufferPointer(rebasing: bytes[offset...])))
    }

    /// `uv_try_write` when nothing is queued (or it would overtake what is): how many bytes the
    /// socket took, or nil once a failure has ended the connection.
    private func tryWrite(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard queuedOutboundBytes == 0 else { return 0 }
        var buffer = uv_buf_init(UnsafeMutableRawPointer(mutating: bytes.baseAddress!).assumingMemoryBound(to: CChar.self),
                                 UInt32(bytes.count))
        let written = uv_try_write(stream, &buffer, 1)
        if written > 0 { return Int(written) }
        if written < 0 && written != UV_EAGAIN.rawValue {
            fail(.transport(code: written, operation: "writing to \(remoteAddress)"))
            return nil
        }
        return 0
    }

    /// Hands the rest to `uv_write`; `pending` keeps its bytes alive until the callback.
    private func queue(_ pending: PendingWrite) {
        let count = pending.bytes.count
        queuedOutboundBytes += count
        var buffer = uv_buf_init(UnsafeMutableRawPointer(mutating: pending.bytes.baseAddress!).assumingMemoryBound(to: CChar.self),
                                 UInt32(count))
        let status = uv_write(pending.request, stream, &buffer, 1) { request, status in
            guard let request, let data = request.pointee.data else { return }
            let pending = Unmanaged<PendingWrite>.fromOpaque(data).takeRetainedValue()
            pending.connection.writeCompleted(size: pending.bytes.count, status: status)
        }
        if status != 0 {
            queuedOutboundBytes -= count
            Unmanaged<PendingWrite>.fromOpaque(pending.request.pointee.data).release()
            fail(.transport(code: status, operation: "writing to \(remoteAddress)"))
            return
        }
        if queuedOutboundBytes > options.writeHighWater && !aboveHighWater {
            aboveHighWater = true
            updateReading()
        }
    }

    private func writeCompleted(size: Int, status: Int32) {
        queuedOutboundBytes -= size
        guard state != .closed else { return }  // cancelled by our own close: nothing left to do
        if status < 0 {
            fail(.transport(code: status, operation: "writing to \(remoteAddress)"))
            return
        }
        if aboveHighWater && queuedOutboundBytes <= options.writeLowWater {
            aboveHighWater = false
            updateReading()
            if state == .established { handler?.connectionDidBecomeWritable(self) }
        }
        if state == .closing { shutdownWhenDrained() }
        if state == .established { shutdownWriteWhenDrained() }
    }
}

extension Connection: LoopResource {
    /// The loop is shutting down: the socket goes now, and the handler still hears of it.
    func closeForLoopShutdown() {
        if closeError == nil { closeError = .refused("the event loop shut down") }
        closeNow()
    }
}

/// One `uv_write` in flight: the request, the bytes, and the connection, all kept alive by the
/// retain stored in `request.data` until libuv's write callback takes it back.
private final class PendingWrite {
    let connection: Connection
    /// Owned: freed in deinit, after libuv has finished with them.
    let request: UnsafeMutablePointer<uv_write_t>
    /// The bytes libuv writes from: a copy we allocated, or (`adopting`) a region of an array's
    /// heap buffer, which `adopted` keeps alive and unmoved: a `let` array is never mutated, so its
    /// buffer is neither reallocated nor copied while this object lives.
    let bytes: UnsafeRawBufferPointer
    private let adopted: [UInt8]?

    init(connection: Connection, copying source: UnsafeRawBufferPointer) {
        self.connection = connection
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: source.count, alignment: 1)
        storage.copyMemory(from: source)
        bytes = UnsafeRawBufferPointer(storage)
        adopted = nil
        request = .allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    init(connection: Connection, adopting array: [UInt8], from offset: Int) {
        self.connection = connection
        adopted = array
        bytes = array.withUnsafeBytes { UnsafeRawBufferPointer(rebasing: $0[offset...]) }
        request = .allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    deinit {
        if adopted == nil { bytes.deallocate() }
        request.deallocate()
    }
}

extension ConnectionError {
    func withPeer(_ peer: String) -> ConnectionError {
        if case .tls(let error) = self { return .tls(error.withPeer(peer)) }
        return self
    }
}
