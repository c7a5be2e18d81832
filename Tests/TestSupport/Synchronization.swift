import Dispatch
import Foundation
import Testing

/// A value shared between loop callbacks (or background work) and the test thread.
public final class Shared<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    public init(_ value: Value) { self.value = value }
    public func with<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
    public var current: Value { with { $0 } }
}

/// Waits for a signal, failing the test (not hanging it) after `seconds`.
public func waitFor(_ semaphore: DispatchSemaphore, seconds: Double = 60, _ what: String,
                    sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    if semaphore.wait(timeout: .now() + seconds) == .timedOut {
        Issue.record("timed out waiting for \(what)", sourceLocation: sourceLocation)
        return false
    }
    return true
}

/// Polls `condition` every 10 ms until it holds (true) or `seconds` pass (false): a wait for
/// something asynchronous to settle, not a measurement.
public func eventually(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}
