import Foundation
import Loop
import Proxy
import TLSContract
import Testing
import TestSupport

/// The proxy contract, written once and run for every client×server backend pair: a plain client →
/// proxy client → (mTLS) → proxy server → a plain target in this process.
extension ProxySuite {
    @Suite("Forwarding through proxy client → proxy server")
    struct ForwardingTests {
        @Test("16 MiB come back byte-exact", arguments: BackendPair.all)
        func sixteenMebibytes(backends: BackendPair) throws {
            let chain = try ProxyChain(backends)
            defer { chain.shutdown() }
            let client = StreamClient(payload: payload(16 << 20, seed: 16))
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the 16 MiB echo"))
            let outcome = client.outcome.current
            #expect(outcome.error == nil)
            #expect(outcome.received.count == client.payload.count)
            #expect(outcome.received == client.payload)
            #expect(chain.waitUntilIdle())
            #expect(chain.target.accepted.current == 1)
            let server = chain.proxyServer.pairs.snapshot
            #expect(server.bytesToTarget == UInt64(client.payload.count))
            #expect(server.bytesToClient == UInt64(client.payload.count))
        }

        @Test("50 concurrent connections, each byte-exact", arguments: BackendPair.all)
        func fiftyConcurrent(backends: BackendPair) throws {
            let chain = try ProxyChain(backends)
            defer { chain.shutdown() }
            let clients = (0..<50).map { StreamClient(payload: payload(32 * 1024 + $0 * 1024, seed: UInt64($0))) }
            clients.forEach { $0.start(group: chain.group, port: chain.clientPort) }
            for (index, client) in clients.enumerated() {
                try #require(waitFor(client.done, "connection \(index)"))
                let outcome = client.outcome.current
                #expect(outcome.error == nil, "connection \(index)")
                #expect(outcome.received == client.payload, "connection \(index)")
            }
            #expect(chain.waitUntilIdle())
            #expect(chain.target.accepted.current == 50)
            #expect(chain.proxyServer.pairs.snapshot.finished == 50)
            #expect(chain.proxyClient.pairs.snapshot.finished == 50)
        }

        @Test("A client that shuts down writing still receives the whole echo", arguments: BackendPair.all)
        func clientHalfClose(backends: BackendPair) throws {
            let chain = try ProxyChain(backends)
            defer { chain.shutdown() }
            // The echo target ends its half only after the client's end reached it through both
            // proxies and it had echoed everything before that end.
            let client = StreamClient(payload: payload(1 << 20, seed: 7), ending: .halfCloseAfterSending)
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the half-closed echo"))
            let outcome = client.outcome.current
            #expect(outcome.error == nil)
            #expect(outcome.sawPeerEnd)
            #expect(outcome.received == client.payload)
            #expect(chain.waitUntilIdle())
        }

        @Test("A target that ends its half first still receives what the client sends", arguments: BackendPair.all)
        func targetHalfClose(backends: BackendPair) throws {
            let greeting = Array("hello, and that is all from me\n".utf8)
            let chain = try ProxyChain(backends, target: .greetThenListen(greeting))
            defer { chain.shutdown() }
            let client = StreamClient(payload: payload(512 * 1024, seed: 8), ending: .halfCloseAfterSending,
                                      expectedReply: greeting.count, sendsAfterPeerEnds: true)
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the exchange"))
            let outcome = client.outcome.current
            #expect(outcome.error == nil)
            #expect(outcome.received == greeting)
            #expect(outcome.sawPeerEnd)
            #expect(eventually { chain.target.received.current.count == 1 })
            #expect(chain.target.received.current.first == client.payload)
        }

        @Test("When one side closes, the other is closed after its queued bytes", arguments: [BackendPair.single])
        func closePropagates(backends: BackendPair) throws {
            let chain = try ProxyChain(backends)
            defer { chain.shutdown() }
            // The client closes (not a half-close) the moment its 4 MiB are back: by then every
            // byte has crossed, and both pairs must wind down on their own.
            let client = StreamClient(payload: payload(4 << 20, seed: 9))
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the echo"))
            #expect(client.outcome.current.received == client.payload)
            #expect(chain.waitUntilIdle())
            #expect(chain.proxyServer.pairs.snapshot.finished == 1)
        }

        @Test("A target that refuses the connection closes the client", arguments: [BackendPair.single])
        func unreachableTarget(backends: BackendPair) throws {
            let chain = try ProxyChain(backends)
            defer { chain.shutdown() }
            chain.target.shutdown()  // nothing listens on the target's port any more
            let client = StreamClient(payload: Array("anyone there?".utf8))
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the client's close"))
            #expect(client.outcome.current.received.isEmpty)
            #expect(chain.waitUntilIdle())
            #expect(chain.proxyServer.pairs.snapshot.targetConnectionsAttempted == 1)
        }
    }
}
