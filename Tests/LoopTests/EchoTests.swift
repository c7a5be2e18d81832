import Foundation
import Loop
import TLSContract
import Testing
import TestSupport

extension LoopSuite {
    @Suite("Loop: echo over loopback")
    struct EchoTests {
        @Test("Byte-exact echo of 1 byte, 64 KiB and 16 MiB", arguments: SocketPair.all)
        func echo(pair: SocketPair) throws {
            let group = LoopGroup(count: 2)
            defer { group.shutdown() }
            let (clientContext, serverContext) = try pair.contexts()
            let closes = Shared<[String]>([])
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: serverContext) {
                EchoHandler(closes: closes)
            }
            defer { server.shutdown() }
            var random = SeededRandom(seed: 11)
            for size in [1, 64 * 1024, 16 << 20] {
                let payload = random.bytes(size)
                let client = EchoClient(payload: payload)
                TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: server.port),
                                  tls: clientContext, options: .streamingClient) { client }
                guard waitFor(client.done, "the \(size)-byte echo") else { return }
                let outcome = client.outcome.current
                #expect(outcome.error == nil, "\(size): \(outcome.error ?? "")")
                #expect(outcome.identity == "localhost")
                #expect(outcome.received.count == size)
                expectSameBytes(outcome.received, payload, "\(size) bytes came back different")
            }
        }

        @Test("With either accept strategy (hand-off, or a listener per loop), every connection is served",
              arguments: SocketPair.all, TCPServer.AcceptStrategy.allCases)
        func acceptStrategies(pair: SocketPair, strategy: TCPServer.AcceptStrategy) throws {
            let group = LoopGroup(count: 2)
            defer { group.shutdown() }
            let (clientContext, serverContext) = try pair.contexts()
            let closes = Shared<[String]>([])
            var options = TCPServer.Options()
            options.acceptStrategy = strategy
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: serverContext,
                                       options: options) { EchoHandler(closes: closes) }
            defer { server.shutdown() }
            let clients = (0..<20).map { EchoClient(payload: Array("hand-off \($0)".utf8)) }
            for client in clients {
                TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: server.port), tls: clientContext) { client }
            }
            for client in clients {
                guard waitFor(client.done, "a hand-off echo") else { return }
                #expect(client.outcome.current.error == nil, "\(client.outcome.current.error ?? "")")
                expectSameBytes(client.outcome.current.received, client.payload)
            }
        }

        @Test("Plain TCP uses the same API")
        func plainEcho() throws {
            let group = LoopGroup(count: 1)
            defer { group.shutdown() }
            let closes = Shared<[String]>([])
            let server = try TCPServer(group: group, listen: HostAndPort(host: "::1", port: 0), tls: nil) {
                EchoHandler(closes: closes)
            }
            defer { server.shutdown() }
            let payload = SeededRandom(seed: 2).bytesOf(100_000)
            let client = EchoClient(payload: payload)
            TCPClient.connect(on: group.next(), to: HostAndPort(host: "::1", port: server.port), tls: nil) { client }
            guard waitFor(client.done, "the plain echo") else { return }
            expectSameBytes(client.outcome.current.received, payload)
            #expect(client.outcome.current.error == nil)
        }

        @Test("Names are resolved, and a refused connection is a clean error")
        func resolutionAndRefusal() throws {
            let group = LoopGroup(count: 1)
            defer { group.shutdown() }
            let closes = Shared<[String]>([])
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: nil) {
                EchoHandler(closes: closes)
            }
            let port = server.port
            let byName = EchoClient(payload: Array("hi".utf8))
            TCPClient.connect(on: group.next(), to: HostAndPort(host: "localhost", port: port), tls: nil) { byName }
            if waitFor(byName.done, "the echo by name") {
                // localhost may resolve to ::1 first, where nothing listens: either answer is clean.
                let outcome = byName.outcome.current
                #expect(outcome.received == Array("hi".utf8) || outcome.error != nil)
            }
            server.shutdown()
            // Not the freed port: a test running in parallel may have taken it already.
            let closed = try ClosedPort()
            let refused = EchoClient(payload: [1])
            TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: closed.port), tls: nil) { refused }
            guard waitFor(refused.done, "the refused connection") else { return }
            #expect(refused.outcome.current.error?.contains("connection refused") == true, "\(refused.outcome.current.error ?? "nil")")
            withExtendedLifetime(closed) {}
        }
    }
}

extension SeededRandom {
    func bytesOf(_ count: Int) -> [UInt8] {
        var copy = self
        return copy.bytes(count)
    }
}
