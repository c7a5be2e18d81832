import Foundation

/// Per-thread state a TLS library keeps, released when a thread that ran TLS work is about to end.
///
/// OpenSSL keeps per-thread state (its random generators, its error queue) that it frees from a
/// thread-local destructor, after the thread's function has returned. An event loop's owner waits
/// for the loop's function to finish, not for the thread to be gone, so a process that exits right
/// after shutting its loops down can end before that destructor ran: the state is then never freed
/// (LeakSanitizer reports it). Backends register what frees their state here; the Loop runs it as
/// the last thing on each loop thread.
public enum TLSThreadCleanup {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var handlers: [String: @Sendable () -> Void] = [:]

    /// Registers `handler` under `name` (once per name; a second registration replaces the first).
    public static func register(_ name: String, _ handler: @escaping @Sendable () -> Void) {
        lock.withLock { handlers[name] = handler }
    }

    /// Runs every registered handler on the calling thread, which must do no TLS work afterwards.
    public static func threadWillExit() {
        let current = lock.withLock { Array(handlers.values) }
        current.forEach { $0() }
    }
}
