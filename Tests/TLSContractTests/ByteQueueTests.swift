@_spi(Testing) import TLSContract
import Testing

/// The byte queue every session keeps its pending plaintext and ciphertext in: order, the
/// no-copy hand-overs, and what an idle queue keeps allocated (idle connections are many).
@Suite("ByteQueue")
struct ByteQueueTests {
    private func drain(_ queue: inout ByteQueue) -> [UInt8] {
        var out: [UInt8] = []
        queue.move(into: &out)
        return out
    }

    @Test("bytes come out in the order they went in, across appends, partial reads and compaction")
    func order() {
        var queue = ByteQueue()
        var expected: [UInt8] = []
        for chunk in 0..<50 {
            let bytes = (0..<(chunk * 37 % 200 + 1)).map { UInt8(truncatingIfNeeded: $0 &+ chunk) }
            queue.append(bytes)
            expected += bytes
            var scratch = [UInt8](repeating: 0, count: chunk % 3 == 0 ? 150 : 10)
            let read = scratch.withUnsafeMutableBytes { queue.read(into: $0) }
            #expect(Array(scratch[0..<read]) == Array(expected.prefix(read)))
            expected.removeFirst(read)
            #expect(queue.count == expected.count)
        }
        #expect(drain(&queue) == expected)
        #expect(queue.isEmpty)
    }

    @Test("append(upTo:) keeps what the library wrote, after what was there, and never more than asked")
    func appendUpTo() {
        var queue = ByteQueue()
        queue.append([1, 2, 3])
        let written = queue.append(upTo: 4) { buffer in
            buffer.copyBytes(from: [4, 5, 6, 7])
            return 99  // a misbehaving fill: clamped to the capacity
        }
        #expect(written == 4)
        #expect(drain(&queue) == [1, 2, 3, 4, 5, 6, 7])
    }

    @Test("a decrypt attempt that yields nothing leaves an empty queue holding no buffer")
    func emptyFillKeepsNothing() {
        var queue = ByteQueue()
        // What a session does after every read: offer a record's worth of room to the library,
        // which has no whole record yet. The connection may then stay idle for hours.
        let written = queue.append(upTo: 16 * 1024 + 256) { _ in 0 }
        #expect(written == 0)
        #expect(queue.isEmpty)
        #expect(queue.allocatedCapacity == 0)
    }

    @Test("once drained, a queue gives back a large buffer and keeps a small one")
    func drainedCapacity() {
        var large = ByteQueue()
        large.append([UInt8](repeating: 7, count: 64 * 1024))
        large.consume(64 * 1024)
        #expect(large.allocatedCapacity == 0)

        var small = ByteQueue()
        small.append([UInt8](repeating: 7, count: 100))
        small.consume(100)
        #expect(small.allocatedCapacity > 0 && small.allocatedCapacity <= 4096)
    }

    @Test("moving everything into an empty array hands the storage over and leaves the queue with none")
    func moveHandsOver() {
        var queue = ByteQueue()
        queue.append([UInt8](repeating: 1, count: 10_000))
        var out: [UInt8] = []
        queue.move(into: &out)
        #expect(out.count == 10_000)
        #expect(queue.isEmpty && queue.allocatedCapacity == 0)
    }
}
