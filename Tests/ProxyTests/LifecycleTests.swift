import Foundation
import Loop
import Proxy
import Testing
import TestSupport

/// Draining and timeouts: the same code for every backend pair, so one pair is enough.
extension ProxySuite {
    @Suite("Drain and connect timeout")
    struct LifecycleTests {
        let backends = BackendPair.single

        /// Runs `proxy.shutdown(drainTimeout:)` on another thread; its result arrives in the box.
        func startDrain(_ proxy: ProxyListener, within timeout: Duration) -> (done: DispatchSemaphore, unfinished: Shared<Int?>) {
            let done = DispatchSemaphore(value: 0)
            let unfinished = Shared<Int?>(nil)
            Thread.detachNewThread {
                let left = proxy.shutdown(drainTimeout: timeout)
                unfinished.with { $0 = left }
                done.signal()
            }
            return (done, unfinished)
        }

        @Test("A drain refuses new pairs and lets the open ones finish")
        func drainLetsOpenPairsFinish() throws {
            let gate = ReadGate()
            let chain = try ProxyChain(backends, targetGate: gate)
            defer { chain.shutdown() }
            // A pair in the middle of its work: the target has not read anything yet.
            let busy = StreamClient(payload: payload(256 * 1024, seed: 1), ending: .halfCloseAfterSending)
            busy.start(group: chain.group, port: chain.clientPort)
            try #require(eventually { chain.target.accepted.current == 1 })

            let drain = startDrain(chain.proxyServer, within: .seconds(30))
            // Pairs are refused once the drain has begun (it marks the proxy before waiting).
            usleep(100_000)
            let late = StreamClient(payload: Array("too late".utf8))
            late.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(late.done, "the late client's close"))
            #expect(late.outcome.current.received.isEmpty)
            #expect(chain.target.accepted.current == 1)

            gate.open()
            try #require(waitFor(busy.done, "the busy pair"))
            #expect(busy.outcome.current.received == busy.payload)
            try #require(waitFor(drain.done, seconds: 10, "the drain"))
            #expect(drain.unfinished.current == 0)
        }

        @Test("A drain closes the pairs still open when its time is up")
        func drainIsBounded() throws {
            let gate = ReadGate()
            let chain = try ProxyChain(backends, targetGate: gate)
            defer {
                gate.open()
                chain.shutdown()
            }
            let stuck = StreamClient(payload: payload(64 * 1024, seed: 2))
            stuck.start(group: chain.group, port: chain.clientPort)
            try #require(eventually { chain.target.accepted.current == 1 })
            let started = Date()
            let drain = startDrain(chain.proxyServer, within: .milliseconds(300))
            try #require(waitFor(drain.done, seconds: 10, "the drain"))
            #expect(drain.unfinished.current == 1)
            #expect(Date().timeIntervalSince(started) < 5)
            try #require(waitFor(stuck.done, "the stuck pair's close"))
            #expect(stuck.outcome.current.received.isEmpty)
        }

        @Test("A target that never answers the connect is given up after the connect timeout")
        func connectTimeout() throws {
            let silent = try SilentListener()
            var targetConnection = ConnectionOptions()
            targetConnection.connectTimeout = .milliseconds(300)
            let chain = try ProxyChain(backends, targetPort: silent.port, targetConnection: targetConnection)
            defer { chain.shutdown() }
            let started = Date()
            let client = StreamClient(payload: Array("hello?".utf8))
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, seconds: 10, "the client's close"))
            let elapsed = Date().timeIntervalSince(started)
            #expect(client.outcome.current.received.isEmpty)
            #expect(elapsed >= 0.3 && elapsed < 5, "closed after \(elapsed) s")
            #expect(chain.waitUntilIdle())
        }
    }
}

/// A listening socket whose accept queue is full: Linux drops further SYNs, so a connect to it
/// neither succeeds nor fails until the connector gives up.
final class SilentListener {
    let port: Int
    private let listener: Int32
    private var fillers: [Int32] = []

    init() throws {
        (listener, port) = try LoopbackSocket.bound(listenBacklog: 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        // A backlog of 0 holds one connection; a second one waits in SYN-RECV, a third is dropped.
        for _ in 0..<3 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Foundation.connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            fillers.append(filler)
        }
        usleep(50_000)
    }

    deinit {
        fillers.forEach { Foundation.close($0) }
        Foundation.close(listener)
    }
}
