import Foundation

/// N event loops, one thread each. Servers listen on every loop; clients are spread across them.
public final class LoopGroup: @unchecked Sendable {
    public let loops: [EventLoop]
    private let lock = NSLock()
    private var nextIndex = 0

    /// `count` defaults to the number of cores.
    public init(count: Int = ProcessInfo.processInfo.activeProcessorCount) {
        loops = (0..<max(1, count)).map { EventLoop(name: "mtls-loop-\($0)") }
        loops.forEach { $0.start() }
    }

    /// The next loop, round robin.
    public func next() -> EventLoop {
        lock.lock()
        defer { lock.unlock() }
        let loop = loops[nextIndex % loops.count]
        nextIndex += 1
        return loop
    }

    public func shutdown() {
        loops.forEach { $0.shutdown() }
    }
}
