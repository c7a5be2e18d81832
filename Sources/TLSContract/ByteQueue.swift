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
        // Nothing written (the library had no whole record yet): adopting the empty array would keep
        // its capacity, a record's worth, for as long as the connection sits idle.
        guard !written.isEmpty else { return 0 }
        if isEmpty {
            storage = written
            start = 0
        } else {
            append(written)
        }
        return written.count
    }

    /// Makes room for `count` more bytes at once, so that appending them in pieces (a library's
    /// records, one by one) does not regrow and recopy the storage on the way.
    public mutating func reserveCapacity(_ count: Int) {
        compactIfWorthIt()
        storage.reserveCapacity(storage.count + count)
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

    /// What the queue holds allocated, used or not: tests check that an idle queue holds little.
    @_spi(Testing) public var allocatedCapacity: Int { storage.capacity }

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

/// A library's outgoing ciphertext, appended a record at a time and taken whole by the loop. An
/// empty queue reserves at its first record what the last batch held, so that a batch is not
/// regrown (and recopied) as its records come in.
public struct OutgoingRecords: Sendable {
    private var queue = ByteQueue()
    private var lastBatchSize = 0
    /// A batch is at most about one socket read's worth (the loop reads a quarter MiB) plus framing.
    static let largestReservation = 512 * 1024

    public init() {}

    public var count: Int { queue.count }
    public var isEmpty: Bool { queue.isEmpty }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if queue.isEmpty { queue.reserveCapacity(max(bytes.count, lastBatchSize)) }
        queue.append(bytes)
    }

    /// Into an empty buffer (the loop's case) the queue's storage is handed over without a copy.
    public mutating func take(into buffer: inout [UInt8]) {
        lastBatchSize = min(queue.count, Self.largestReservation)
        queue.move(into: &buffer)
    }

    public mutating func removeAll() { queue.removeAll() }
}

/// Ciphertext received and not yet read by the library: bytes kept from earlier calls, then bytes
/// the caller lends for the duration of one `receiveCiphertext` call, which an established session
/// decrypts from in place. `endLoan()` copies what the library did not read, so that nothing points
/// into the caller's bytes once that call returns.
public struct IncomingCiphertext {
    private var kept = ByteQueue()
    private var lent = UnsafeRawBufferPointer(start: nil, count: 0)

    public init() {}

    public var count: Int { kept.count + lent.count }
    public var isEmpty: Bool { count == 0 }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) { kept.append(bytes) }

    /// `bytes` must stay valid and unchanged until `endLoan()`, which must come before the lender's
    /// call returns.
    public mutating func lend(_ bytes: UnsafeRawBufferPointer) { lent = bytes }

    public mutating func endLoan() {
        if !lent.isEmpty { kept.append(lent) }
        lent = UnsafeRawBufferPointer(start: nil, count: 0)
    }

    /// Copies out up to `destination.count` bytes, kept ones first, and consumes them.
    public mutating func read(into destination: UnsafeMutableRawBufferPointer) -> Int {
        var count = kept.read(into: destination)
        if count < destination.count && !lent.isEmpty {
            let fromLent = min(destination.count - count, lent.count)
            (destination.baseAddress! + count).copyMemory(from: lent.baseAddress!, byteCount: fromLent)
            lent = UnsafeRawBufferPointer(rebasing: lent[fromLent...])
            count += fromLent
        }
        return count
    }
}
