import Foundation
import Loop
import TLSContract
import Testing
import TestSupport

/// A fast writer and a slow reader: memory stays bounded and every byte arrives.
extension LoopSuite {
    @Suite("Loop: backpressure")
    struct BackpressureTests {
        static let total = 64 << 20
        static let chunk = 16 * 1024

        /// Byte i of the stream, so that the reader checks everything without keeping 64 MiB.
        static func streamByte(_ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: index &* 131 &+ index >> 12) }

        @Test("64 MiB to a reader that keeps pausing arrive intact, with the queue bounded", arguments: SocketPair.all)
        func slowReader(pair: SocketPair) throws {
            let group = LoopGroup(count: 2)
            defer { group.shutdown() }
            let (clientContext, serverContext) = try pair.contexts()
            let writer = Shared(WriterStats())
            var options = TCPServer.Options()
            options.connection.writeHighWater = 256 * 1024
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: serverContext,
                                       options: options) { StreamWriter(stats: writer) }
            defer { server.shutdown() }
            let reader = PausingReader { writer.current.timesNotWritable }
            TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: server.port), tls: clientContext) { reader }
            guard waitFor(reader.done, seconds: 300, "64 MiB") else { return }
            let result = reader.result.current
            #expect(result.error == nil, "\(result.error ?? "")")
            #expect(result.received == Self.total)
            #expect(result.mismatchAt == nil, "byte \(result.mismatchAt ?? -1) differs")
            #expect(result.pauses > 10, "the reader never really paused")
            let stats = writer.current
            // One record beyond the mark: the write that crossed it (16 KiB of plaintext plus TLS framing).
            #expect(stats.maxQueued <= options.connection.writeHighWater + Self.chunk + 256, "queued \(stats.maxQueued)")
            #expect(stats.timesNotWritable > 0, "the writer was never held back")
        }
    }
}

struct WriterStats: Sendable {
    var maxQueued = 0
    var timesNotWritable = 0
}

/// Writes the stream in 16 KiB pieces while the connection is writable, then closes.
final class StreamWriter: ConnectionHandler, @unchecked Sendable {
    let stats: Shared<WriterStats>
    private var offset = 0
    private var buffer = [UInt8](repeating: 0, count: LoopSuite.BackpressureTests.chunk)
    init(stats: Shared<WriterStats>) { self.stats = stats }

    func connectionDidEstablish(_ connection: Connection) { pump(connection) }
    func connectionDidBecomeWritable(_ connection: Connection) { pump(connection) }
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {}
    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {}

    private func pump(_ connection: Connection) {
        while offset < LoopSuite.BackpressureTests.total {
            guard connection.isWritable else {
                stats.with { $0.timesNotWritable += 1 }
                return
            }
            for index in 0..<buffer.count { buffer[index] = LoopSuite.BackpressureTests.streamByte(offset + index) }
            try? connection.write(buffer)
            offset += buffer.count
            let queued = connection.queuedOutboundBytes
            stats.with { $0.maxQueued = max($0.maxQueued, queued) }
        }
        connection.close()
    }
}

/// Reads 4 MiB, pauses until the writer has been held back (so that backpressure really happens,
/// whatever the socket buffers absorb), resumes, and checks every byte.
final class PausingReader: ConnectionHandler, @unchecked Sendable {
    struct Result: Sendable {
        var received = 0
        var mismatchAt: Int?
        var pauses = 0
        var error: String?
    }
    let result = Shared(Result())
    let done = DispatchSemaphore(value: 0)
    private var received = 0
    private var sincePause = 0
    private var mismatchAt: Int?
    private var pauses = 0
    private var timer: LoopTimer?
    private let writerHeldBack: @Sendable () -> Int
    private var heldBackAtPause = 0
    private var pollsWhilePaused = 0

    init(writerHeldBack: @escaping @Sendable () -> Int) { self.writerHeldBack = writerHeldBack }

    func connectionDidEstablish(_ connection: Connection) {}

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        if mismatchAt == nil {
            for (index, byte) in bytes.enumerated() where byte != LoopSuite.BackpressureTests.streamByte(received + index) {
                mismatchAt = received + index
                break
            }
        }
        received += bytes.count
        sincePause += bytes.count
        if sincePause >= 4 << 20 {
            sincePause = 0
            pauses += 1
            connection.pauseReading()
            heldBackAtPause = writerHeldBack()
            pollsWhilePaused = 0
            if timer == nil { timer = LoopTimer(loop: connection.loop) }
            timer?.schedule(afterMilliseconds: 5, repeatEvery: 5) { [unowned self, unowned connection] in
                pollsWhilePaused += 1
                // Resume once the writer felt it; the poll limit only keeps a broken writer from hanging the test.
                if writerHeldBack() > heldBackAtPause || pollsWhilePaused > 2000 {
                    timer?.stop()
                    connection.resumeReading()
                }
            }
        }
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        timer?.cancel()
        timer = nil
        let snapshot = Result(received: received, mismatchAt: mismatchAt, pauses: pauses, error: error.map { "\($0)" })
        result.with { $0 = snapshot }
        done.signal()
    }
}
