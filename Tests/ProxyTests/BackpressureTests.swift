import Foundation
import Loop
import Proxy
import Testing
import TestSupport

extension ProxySuite {
    @Suite("Backpressure through the proxies")
    struct BackpressureTests {
        /// What one pair may hold at most: per direction, a connection's high-water mark plus the
        /// one read (the loop's 256 KiB buffer) that was already in when its source was paused, for
        /// both directions at once, and a TLS record's worth of slack.
        static let boundPerPair = 2 * (256 * 1024 + 256 * 1024) + 64 * 1024

        /// The payload must outgrow what the kernel absorbs on the slow end's socket before the
        /// pump's own queue fills: the sender's socket buffer grows to at most `tcp_wmem`'s 4 MiB,
        /// and a receiver that never reads keeps its initial 128 KiB. Further upstream Linux lets
        /// buffers grow much larger (tens of MiB on this path), so whether the client itself stalls
        /// depends on the kernel's tuning: what is ours to check is that the proxy next to the slow
        /// end stopped reading and that no pair held more than the bound.
        static let payloadSize = 6 << 20

        @Test("A target that stops reading pauses the proxy's client side; each pair holds a bounded amount",
              arguments: BackendPair.all)
        func slowTarget(backends: BackendPair) throws {
            try expectHeldBack(backends, slowTarget: true)
        }

        /// One pair only: the pump's logic does not depend on the backends, and in a debug build
        /// every pair with OpenSSL costs seconds per 6 MiB (see `OpenSSLSession.takeCiphertext`).
        @Test("A client that stops reading pauses the proxy's target side; each pair holds a bounded amount")
        func slowClient() throws {
            try expectHeldBack(.single, slowTarget: false)
        }

        /// Streams the payload through an echo while one end reads nothing, until the proxy next
        /// to it has stopped reading from the other side; then lets that end read, and expects every
        /// byte back.
        func expectHeldBack(_ backends: BackendPair, slowTarget: Bool, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let gate = ReadGate()
            let chain = try ProxyChain(backends, targetGate: slowTarget ? gate : nil)
            defer { chain.shutdown() }
            let nextToSlowEnd = slowTarget ? chain.proxyServer : chain.proxyClient
            let client = StreamClient(payload: payload(Self.payloadSize, seed: 24), readGate: slowTarget ? nil : gate)
            client.start(group: chain.group, port: chain.clientPort)
            let paused = eventually(seconds: 30) { nextToSlowEnd.pairs.snapshot.pausesForBackpressure > 0 }
            #expect(paused, "the proxy next to the slow end never stopped reading", sourceLocation: sourceLocation)
            gate.open()
            try #require(waitFor(client.done, "the echo after the reader woke up", sourceLocation: sourceLocation))
            let outcome = client.outcome.current
            #expect(outcome.error == nil, sourceLocation: sourceLocation)
            #expect(outcome.received == client.payload, sourceLocation: sourceLocation)
            #expect(chain.waitUntilIdle(), sourceLocation: sourceLocation)
            for (name, proxy) in [("proxy server", chain.proxyServer), ("proxy client", chain.proxyClient)] {
                let peak = proxy.pairs.snapshot.peakBytesHeldByOnePair
                #expect(peak <= Self.boundPerPair, "the \(name)'s pair held \(peak) bytes", sourceLocation: sourceLocation)
            }
        }
    }
}
