import Foundation

/// What a proxy has done so far, across all its loops.
public struct ProxyStatistics: Sendable, Equatable {
    /// Pairs whose client side is established and not yet fully closed (target included).
    public var open = 0
    /// Pairs started since the proxy began, and the finished ones among them.
    public var started = 0
    public var finished = 0
    /// Connections to the target that were attempted (one per pair that reached the target).
    public var targetConnectionsAttempted = 0
    /// Plaintext bytes forwarded, over finished pairs.
    public var bytesToTarget: UInt64 = 0
    public var bytesToClient: UInt64 = 0
    /// The most bytes one finished pair ever held at once: what waited in its outgoing queues
    /// (either way) plus what it held for a target not connected yet. Backpressure keeps it
    /// near the connections' high-water mark, however fast one side sends and slowly the other reads.
    public var peakBytesHeldByOnePair = 0
    /// How many times one side of a pair stopped being read because the other could not take more:
    /// how often a slow reader held a fast sender back.
    public var pausesForBackpressure = 0

    public init() {}
}

/// The pairs of one proxy, shared by the pumps on every loop: counts them, collects their
/// statistics when they finish, and lets a shutdown refuse new pairs and wait for the open ones.
/// Pumps report events, never bytes as they flow: a pair takes the lock when it starts, when it
/// connects to the target, when backpressure pauses it, and when it ends (with its byte counts).
public final class ProxyPairs: @unchecked Sendable {
    private let condition = NSCondition()
    private var statistics = ProxyStatistics()
    private var draining = false

    public init() {}

    public var snapshot: ProxyStatistics {
        condition.lock()
        defer { condition.unlock() }
        return statistics
    }

    /// Takes a new pair unless the proxy is draining.
    func start() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !draining else { return false }
        statistics.open += 1
        statistics.started += 1
        return true
    }

    func targetConnectionAttempted() {
        condition.lock()
        statistics.targetConnectionsAttempted += 1
        condition.unlock()
    }

    func pausedForBackpressure() {
        condition.lock()
        statistics.pausesForBackpressure += 1
        condition.unlock()
    }

    func finish(bytesToTarget: UInt64, bytesToClient: UInt64, peakBytesHeld: Int) {
        condition.lock()
        statistics.open -= 1
        statistics.finished += 1
        statistics.bytesToTarget += bytesToTarget
        statistics.bytesToClient += bytesToClient
        statistics.peakBytesHeldByOnePair = max(statistics.peakBytesHeldByOnePair, peakBytesHeld)
        condition.broadcast()
        condition.unlock()
    }

    /// Refuses new pairs from now on, then waits until no pair is open or `timeout` has passed.
    /// Returns the number of pairs still open. Blocks: call it off the loops.
    public func drain(within timeout: Duration) -> Int {
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds)
                                                 + Double(timeout.components.attoseconds) / 1e18)
        condition.lock()
        defer { condition.unlock() }
        draining = true
        while statistics.open > 0 && condition.wait(until: deadline) {}
        return statistics.open
    }
}
