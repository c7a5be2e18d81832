/// A FIFO of bytes that both backends use for their pending ciphertext and plaintext.
/// Consumed bytes are dropped lazily so that taking from the front is cheap.
public struct ByteQueue: Sendable {
    private var storage: [UInt8] = []
    private var start = 0

    public init() {}

    public var count: Int { storage.count - start }
    public var isEmpty: Bool { count == 0 }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compactIfWorthIt()
        storage.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: some Collection<UInt8>) {
        compactIfWorthIt()
        storage.append(contentsOf: bytes)
    }

    /// Lets `fill` write up to `capacity` bytes straight into the queue (a library decrypting into
    /// it, say) and keeps the count it returns, which must be at most `capacity`. Into an empty
    /// queue, which is how the loop leaves it after taking everything, this costs no copy at all.
    @discardableResult
    public mutating func append(upTo capacity: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Int {
        guard capacity > 0 else { return 0 }
        let written = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, initialized in
            initialized = min(capacity, max(0, fill(UnsafeMutableRawBufferPointer(buffer))))
        }
        if isEmpty {
            storage = written
            start = 0
        } else {
            append(written)
        }
        return written.count
    }

    /// Copies up to `destination.count` bytes out and consumes them; returns how many.
    public mutating func read(into destination: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(destination.count, count)
        guard n > 0 else { return 0 }
        storage.withUnsafeBytes { source in
            destination.baseAddress!.copyMemory(from: source.baseAddress! + start, byteCount: n)
        }
        consume(n)
        return n
    }

    /// Moves up to `maxBytes` to the end of `buffer`.
    public mutating func move(into buffer: inout [UInt8], maxBytes: Int = .max) {
        let n = min(maxBytes, count)
        guard n > 0 else { return }
        if start == 0 && n == storage.count && buffer.isEmpty {
            swap(&buffer, &storage)
            storage.removeAll(keepingCapacity: false)
            start = 0
            return
        }
        buffer.append(contentsOf: storage[start..<start + n])
        consume(n)
    }

    /// The unconsumed bytes, contiguous, for a library call that reads them in place.
    public func withUnsafeReadableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[start...]))
        }
    }

    public mutating func consume(_ n: Int) {
        start += n
        if start == storage.count {
            // Small buffers are kept for the next record; a large one is given back, so that an idle
            // connection does not hold the peak of its traffic.
            storage.removeAll(keepingCapacity: storage.capacity <= Self.retainedCapacity)
            start = 0
        }
    }

    static let retainedCapacity = 4096

    public mutating func removeAll() {
        storage.removeAll()
        start = 0
    }

    private mutating func compactIfWorthIt() {
        if start > 0 && start >= storage.count / 2 {
            storage.removeFirst(start)
            start = 0
        }
    }
}
