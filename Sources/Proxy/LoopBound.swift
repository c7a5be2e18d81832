import Loop

/// Carries a loop-confined object through a `@Sendable` closure that runs on that same loop (e.g.
/// `TCPClient.connect`'s `makeHandler`). Unwrapping it anywhere else is a programming error.
struct LoopBound<Value: AnyObject>: @unchecked Sendable {
    private let value: Value
    private let loop: EventLoop

    init(_ value: Value, on loop: EventLoop) {
        self.value = value
        self.loop = loop
    }

    var unwrapped: Value {
        precondition(loop.inEventLoop, "a loop-bound object was used off its loop (\(loop.name))")
        return value
    }
}
