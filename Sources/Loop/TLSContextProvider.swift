import Foundation
import TLSContract

/// Where a server or a long-lived client gets the TLS context for each new connection. A reload
/// builds a complete new context and `replace`s the current one: handshakes that start afterwards
/// use the new one, and sessions already made keep the context they started with (a session
/// retains its context), so no established connection is touched.
///
/// Thread-safe: loops read it on every accept, a reload writes it from any thread.
public final class TLSContextProvider: @unchecked Sendable {
    private let lock = NSLock()
    private var current: any TLSContext
    private var replacements = 0

    public init(_ context: any TLSContext) {
        current = context
    }

    /// The context for the next session.
    public var context: any TLSContext {
        lock.withLock { current }
    }

    /// How many times the context was replaced since start: a trust generation of sorts.
    public var generation: Int {
        lock.withLock { replacements }
    }

    /// New sessions use `context` from now on.
    public func replace(with context: any TLSContext) {
        lock.withLock {
            current = context
            replacements += 1
        }
    }

    public func makeSession(serverName: String? = nil) throws(TLSError) -> any TLSSession {
        try context.makeSession(serverName: serverName)
    }
}
