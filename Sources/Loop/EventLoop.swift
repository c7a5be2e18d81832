import CLibUV
import Foundation
import Logging
import TLSContract

/// Something that holds a libuv handle on a loop (a connection, a listener, a timer). It registers
/// with its loop while its handle is open, so that a loop shutting down can close it properly: with
/// the close callback that releases the retained owner in `handle->data`.
protocol LoopResource: AnyObject {
    /// Called on the loop, once, when the loop shuts down while the handle is still open.
    func closeForLoopShutdown()
}

/// The loop has shut down: it runs no more work.
public struct EventLoopShutDown: Error, CustomStringConvertible {
    public let loop: String
    public var description: String { "the event loop \(loop) has shut down" }
}

/// One libuv loop on its own thread. Everything that touches a handle runs on that thread; other
/// threads hand work over with `execute`, the only call that crosses threads (through `uv_async_t`).
///
/// Lifetime: `shutdown()` stops taking work (later `execute` calls return false), closes every
/// registered handle with its own close callback (so retained owners are released), lets the loop
/// run until nothing is left, and only then frees the loop and its wake-up handle.
public final class EventLoop: @unchecked Sendable {
    public let name: String
    /// Owned: allocated in init, closed when the thread ends, freed by `shutdown`.
    let loop: UnsafeMutablePointer<uv_loop_t>
    /// Owned like `loop`; its `data` is this EventLoop, unretained (the loop outlives its handle).
    /// Only touched under `lock` from other threads, and never after `acceptsWork` turned false.
    private let wakeup: UnsafeMutablePointer<uv_async_t>

    private let lock = NSLock()
    private var pending: [@Sendable () -> Void] = []
    /// Guarded by `lock`. False from the moment `shutdown` queues its last work.
    private var acceptsWork = true
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    /// Handles open on this loop, by owner. Loop thread only.
    private var resources: [ObjectIdentifier: any LoopResource] = [:]

    /// One read buffer per loop: every read lands here before the session copies it, so steady
    /// state reads allocate nothing. Owned by the loop, freed in deinit. 256 KiB rather than 64:
    /// bulk echo went from about 706 to 772 MB/s (BENCHMARKS.md) for a quarter MiB per loop.
    let readBuffer: UnsafeMutableRawBufferPointer
    static let readBufferSize = 256 * 1024
    /// Per-loop scratch for plaintext on its way to the app: one loop runs one connection at a
    /// time, so thousands of idle connections hold none.
    var plaintextScratch: [UInt8] = []

    let logger: Logger

    /// A peer that resets while we write must cost an error code, not the process: libuv leaves
    /// SIGPIPE at its default (terminate), so the first loop of a process ignores it.
    private static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// Streaming, a loop allocates and frees a few 64 KiB buffers per 64 KiB it moves (decrypted
    /// plaintext, outgoing records, writes the socket has not taken yet). With glibc's defaults each
    /// free that leaves more than 128 KiB at the top of the heap gives it back to the kernel, and the
    /// next allocation faults it in again page by page: 15,000 page faults and about a third more
    /// server CPU per 256 MiB echoed (BENCHMARKS.md, issue 13 item 5). So the first loop of a process
    /// lets a heap keep up to 4 MiB free at its top, and serves blocks up to 1 MiB from the heap
    /// rather than from mmap (setting either fixes glibc's adaptive mmap threshold, whose ceiling is
    /// far higher).
    private static let keepHeapForReuse: Void = {
        #if canImport(Glibc)
        _ = mallopt(M_TRIM_THRESHOLD, 4 << 20)
        _ = mallopt(M_MMAP_THRESHOLD, 1 << 20)
        #endif
    }()

    public init(name: String = "mtls-loop") {
        _ = Self.ignoreBrokenPipes
        _ = Self.keepHeapForReuse
        self.name = name
        self.logger = Logger(label: "swift-mtls.loop")
        loop = .allocate(capacity: 1)
        uv_loop_init(loop)
        wakeup = .allocate(capacity: 1)
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 16)
        uv_async_init(loop, wakeup) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            Unmanaged<EventLoop>.fromOpaque(data).takeUnretainedValue().runPending()
        }
        wakeup.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        readBuffer.deallocate()
    }

    /// Starts the loop's thread. The loop runs until `shutdown()`.
    public func start() {
        let thread = Thread { [self] in
            uv_run(loop, UV_RUN_DEFAULT)
            // Every registered handle was closed with its callback. What is left was never
            // registered (none of ours should be): closed without a callback so the loop can end.
            uv_walk(loop, { handle, _ in
                if let handle, uv_is_closing(handle) == 0 { uv_close(handle, nil) }
            }, nil)
            uv_run(loop, UV_RUN_DEFAULT)
            uv_loop_close(loop)
            // Before `finished`: whoever waits for it may exit the process at once.
            TLSThreadCleanup.threadWillExit()
            finished.signal()
        }
        thread.name = name
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    /// True on this loop's own thread.
    public var inEventLoop: Bool {
        guard let thread else { return false }
        return Thread.current === thread
    }

    /// Runs `work` on the loop's thread, soon. Safe from any thread. Returns false, and drops
    /// `work`, once the loop has begun shutting down.
    @discardableResult
    public func execute(_ work: @escaping @Sendable () -> Void) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard acceptsWork else { return false }
        pending.append(work)
        // Under the lock: `shutdown` frees `wakeup` only after turning `acceptsWork` off here.
        uv_async_send(wakeup)
        return true
    }

    /// Runs `work` on the loop and waits for its result. Never call it from the loop itself.
    /// Throws `EventLoopShutDown` when the loop no longer runs work.
    public func submitAndWait<T: Sendable>(_ work: @escaping @Sendable () throws -> T) throws -> T {
        precondition(!inEventLoop, "submitAndWait on the loop's own thread would deadlock")
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        let queued = execute {
            box.result = Result { try work() }
            done.signal()
        }
        guard queued else { throw EventLoopShutDown(loop: name) }
        done.wait()
        return try box.result!.get()
    }

    /// Closes every handle on the loop (connections are dropped, their handlers told), runs the
    /// work queued before this call, and waits for the thread to end. Later calls do nothing.
    public func shutdown() {
        precondition(!inEventLoop, "shutdown on the loop's own thread would deadlock")
        lock.lock()
        guard acceptsWork else {
            lock.unlock()
            return
        }
        pending.append { [self] in closeEverything() }
        acceptsWork = false
        uv_async_send(wakeup)
        lock.unlock()
        finished.wait()
        wakeup.deallocate()
        loop.deallocate()
    }

    private func closeEverything() {
        for resource in Array(resources.values) { resource.closeForLoopShutdown() }
        uv_close(mtls_async_handle(wakeup), nil)
    }

    private func runPending() {
        lock.lock()
        let work = pending
        pending.removeAll(keepingCapacity: true)
        lock.unlock()
        for item in work { item() }
    }

    func register(_ resource: any LoopResource) {
        resources[ObjectIdentifier(resource)] = resource
    }

    func unregister(_ resource: any LoopResource) {
        resources[ObjectIdentifier(resource)] = nil
    }

    /// The loop's clock in milliseconds, cached per iteration.
    var now: UInt64 { uv_now(loop) }
}

private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}

/// A one-shot or repeating timer on a loop. Owned by whoever created it; `cancel()` releases it.
public final class LoopTimer {
    /// Owned: allocated in init, freed in the close callback, which also releases `self`'s retain.
    private let handle: UnsafeMutablePointer<uv_timer_t>
    private var action: (() -> Void)?
    private var closed = false
    private let loop: EventLoop

    /// Must be called on `loop`'s thread.
    public init(loop: EventLoop) {
        self.loop = loop
        handle = .allocate(capacity: 1)
        uv_timer_init(loop.loop, handle)
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        loop.register(self)
    }

    /// (Re)arms the timer. `repeatEvery` of 0 fires once.
    public func schedule(afterMilliseconds delay: UInt64, repeatEvery: UInt64 = 0, _ action: @escaping () -> Void) {
        guard !closed else { return }
        self.action = action
        uv_timer_start(handle, { handle in
            guard let handle, let data = handle.pointee.data else { return }
            Unmanaged<LoopTimer>.fromOpaque(data).takeUnretainedValue().action?()
        }, delay, repeatEvery)
    }

    public func stop() {
        guard !closed else { return }
        uv_timer_stop(handle)
        action = nil
    }

    /// Stops the timer for good and frees it.
    public func cancel() {
        guard !closed else { return }
        closed = true
        action = nil
        uv_close(mtls_timer_handle(handle)) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            let timer = Unmanaged<LoopTimer>.fromOpaque(data).takeRetainedValue()
            timer.loop.unregister(timer)
            handle.deallocate()
        }
    }
}

extension LoopTimer: LoopResource {
    func closeForLoopShutdown() { cancel() }
}
