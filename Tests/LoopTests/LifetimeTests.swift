import Foundation
import Loop
import TLSContract
import Testing
import TestSupport

/// Answers every request with `responseBytes` and closes: the server is writing exactly when a
/// hostile client closes or resets. Counts how connections ended.
final class BlastHandler: ConnectionHandler, @unchecked Sendable {
    let responseBytes: Int
    let closes: Shared<Int>
    init(responseBytes: Int, closes: Shared<Int>) {
        self.responseBytes = responseBytes
        self.closes = closes
    }
    func connectionDidEstablish(_ connection: Connection) {}
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        try? connection.write([UInt8](repeating: 0x42, count: responseBytes))
        connection.close()
    }
    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        closes.with { $0 += 1 }
    }
}

/// How a hostile client ends its connection after sending a request.
enum HostileEnding: CaseIterable, Sendable {
    /// FIN without reading the answer.
    case closeWithoutReading
    /// RST without reading the answer.
    case resetWithoutReading
    /// close_notify, then RST at once.
    case resetAfterCloseNotify
    /// close_notify and FIN right behind the request.
    case closeNotifyThenClose
}

extension LoopSuite {
    @Suite("Loop: connection and loop lifetimes")
    struct LifetimeTests {
        static let request = Array("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)

        @Test("Clients that close or reset while the server writes, 250 times a pair: the server stays up, serves, leaks nothing",
              arguments: SocketPair.all)
        func closeWhileServerWrites(pair: SocketPair) throws {
            let (clientContext, serverContext) = try pair.contexts()
            var serverPort = 0
            do {
                let group = LoopGroup(count: 2)
                defer { group.shutdown() }
                let closes = Shared(0)
                var options = TCPServer.Options()
                // Short, so that a timer armed on a dead connection would fire within the test.
                options.connection.closeTimeout = .milliseconds(200)
                let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0),
                                           tls: serverContext, options: options) {
                    BlastHandler(responseBytes: 256 * 1024, closes: closes)
                }
                defer { server.shutdown() }
                serverPort = server.port
                let rounds = 250
                var failures: [String] = []
                for round in 0..<rounds {
                    do {
                        let peer = try BlockingTLSPeer(port: server.port, context: clientContext)
                        try peer.write(Self.request)
                        switch HostileEnding.allCases[round % HostileEnding.allCases.count] {
                        case .closeWithoutReading: peer.socket.close()
                        case .resetWithoutReading: peer.socket.reset()
                        case .resetAfterCloseNotify: peer.sendCloseNotify(); peer.socket.reset()
                        case .closeNotifyThenClose: peer.sendCloseNotify(); peer.socket.close()
                        }
                    } catch {
                        failures.append("\(error)")
                    }
                }
                #expect(failures.isEmpty, "\(failures.count) handshakes failed, first: \(failures.first ?? "")")
                // Every connection ends, and any close timer armed along the way has had time to fire.
                for _ in 0..<1000 where closes.current < rounds { usleep(10_000) }
                #expect(closes.current == rounds)
                usleep(400_000)
                let outcome = try #require(echoOnce(group, port: server.port, tls: clientContext, reply: 256 * 1024))
                #expect(outcome.error == nil, "\(outcome.error ?? "")")
                #expect(outcome.received.count == 256 * 1024)
            }
            // The loops are gone: no socket of this process touches the server's port any more.
            #expect(openSockets(touchingPort: serverPort).isEmpty, "leaked: \(openSockets(touchingPort: serverPort))")
        }

        @Test("The server's TLS context is released once the server and its loops are gone", arguments: SocketPair.all)
        func contextReleased(pair: SocketPair) throws {
            weak var weakServerContext: AnyObject?
            do {
                let (clientContext, serverContext) = try pair.contexts()
                weakServerContext = serverContext
                for strategy in TCPServer.AcceptStrategy.allCases {
                    let group = LoopGroup(count: 2)
                    var options = TCPServer.Options()
                    options.acceptStrategy = strategy
                    let closes = Shared<[String]>([])
                    let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0),
                                               tls: serverContext, options: options) { EchoHandler(closes: closes) }
                    let idle = IdleClient()
                    TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: server.port),
                                      tls: clientContext) { idle }
                    _ = waitFor(idle.established, "a client to connect")
                    // The loops go away under an open connection: its handler still hears of the close.
                    group.shutdown()
                    #expect(idle.closed.wait(timeout: .now()) == .success, "the client's handler was never told")
                    for _ in 0..<100 where closes.current.isEmpty { usleep(10_000) }
                    #expect(closes.current.count == 1, "the server's handler was never told: \(closes.current)")
                    server.shutdown()
                }
            }
            #expect(weakServerContext == nil, "a reference cycle keeps the server's TLS context alive")
        }

        @Test("A session that cannot be built closes that connection only: the listener keeps accepting",
              arguments: TCPServer.AcceptStrategy.allCases, [1, 2])
        func sessionFailureKeepsListening(strategy: TCPServer.AcceptStrategy, loops: Int) throws {
            let pair = SocketPair.all[0]
            let (clientContext, serverContext) = try pair.contexts()
            let group = LoopGroup(count: loops)
            defer { group.shutdown() }
            let failuresLeft = Shared(1)
            var options = TCPServer.Options()
            options.acceptStrategy = strategy
            options.beforeSession = {
                struct InjectedFailure: Error {}
                if failuresLeft.with({ left in defer { left -= 1 }; return left > 0 }) { throw InjectedFailure() }
            }
            let closes = Shared<[String]>([])
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: serverContext,
                                       options: options) { EchoHandler(closes: closes) }
            defer { server.shutdown() }
            let refused = try #require(echoOnce(group, port: server.port, tls: clientContext))
            #expect(refused.error != nil, "the injected failure did not refuse the first client")
            for _ in 0..<3 {
                let outcome = try #require(echoOnce(group, port: server.port, tls: clientContext))
                #expect(outcome.error == nil, "\(outcome.error ?? "")")
                #expect(outcome.received == Array("ping".utf8))
            }
        }

        @Test("A loop that has shut down refuses work instead of touching freed handles")
        func executeAfterShutdown() throws {
            let loop = EventLoop(name: "short-lived")
            loop.start()
            #expect(try loop.submitAndWait { 42 } == 42)
            loop.shutdown()
            loop.shutdown()  // a second call does nothing
            #expect(!loop.execute {})
            #expect(throws: EventLoopShutDown.self) { try loop.submitAndWait { 1 } }
        }

        @Test("A second server on a port one of ours holds fails with 'address already in use'",
              arguments: TCPServer.AcceptStrategy.allCases, TCPServer.AcceptStrategy.allCases)
        func secondServerOnHeldPort(first: TCPServer.AcceptStrategy, second: TCPServer.AcceptStrategy) throws {
            let group = LoopGroup(count: 2)
            defer { group.shutdown() }
            var options = TCPServer.Options()
            options.acceptStrategy = first
            let closes = Shared<[String]>([])
            let held = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: nil,
                                     options: options) { EchoHandler(closes: closes) }
            defer { held.shutdown() }
            // Amplified, so that other suites opening and closing descriptors meanwhile cannot hide or
            // fake a leak: 200 refused listens must not leave 200 descriptors behind.
            let descriptorsBefore = openDescriptorCount()
            options.acceptStrategy = second
            for _ in 0..<200 {
                #expect {
                    _ = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: held.port), tls: nil,
                                      options: options) { EchoHandler(closes: closes) }
                } throws: { error in
                    "\(error)".contains("address already in use")
                }
            }
            #expect(openDescriptorCount() - descriptorsBefore < 50, "failed listens leaked descriptors")
        }

        @Test("A peer trickling an unfinished record is closed at the idle timeout; a good client is served meanwhile",
              arguments: SocketPair.all)
        func tricklingPeerTimesOut(pair: SocketPair) throws {
            let (clientContext, serverContext) = try pair.contexts()
            let group = LoopGroup(count: 1)
            defer { group.shutdown() }
            var options = TCPServer.Options()
            options.connection.idleTimeout = .milliseconds(700)
            let closes = Shared<[String]>([])
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: serverContext,
                                       options: options) { EchoHandler(closes: closes) }
            defer { server.shutdown() }
            let trickler = try BlockingTLSPeer(port: server.port, context: clientContext)
            // An application-data record header announcing 1,000 bytes, then one byte every 100 ms.
            trickler.socket.send([0x17, 0x03, 0x03, 0x03, 0xE8])
            let started = Date()
            var closedAfter: TimeInterval?
            while Date().timeIntervalSince(started) < 5 {
                // Whatever the server sends (tickets) is read and dropped; its close ends the wait.
                var status = pollfd(fd: trickler.socket.fd, events: Int16(POLLIN), revents: 0)
                if poll(&status, 1, 0) > 0 {
                    var buffer = [UInt8](repeating: 0, count: 16 * 1024)
                    if recv(trickler.socket.fd, &buffer, buffer.count, 0) <= 0 {
                        closedAfter = Date().timeIntervalSince(started)
                        break
                    }
                }
                usleep(100_000)
                trickler.socket.send([0])
                if Date().timeIntervalSince(started) > 0.3 && closes.current.isEmpty {
                    let clock = ContinuousClock()
                    var outcome: EchoClient.Outcome?
                    let elapsed = clock.measure { outcome = echoOnce(group, port: server.port, tls: clientContext) }
                    #expect(outcome?.error == nil)
                    #expect(elapsed < .seconds(1), "a good client waited \(elapsed) behind a trickling peer")
                }
            }
            trickler.socket.close()
            let closedAt = try #require(closedAfter, "a trickling peer held its connection for 5 s past a 0.7 s idle timeout")
            #expect(closedAt < 2.5)
            #expect(closes.current.contains { $0.contains("idle") }, "\(closes.current)")
        }
    }
}

/// One echo round trip with a new client; nil if it never finished. `reply` > 0 expects that many
/// bytes back instead of the echo (for the blast handler).
func echoOnce(_ group: LoopGroup, port: Int, tls: any TLSContext, reply: Int = 0) -> EchoClient.Outcome? {
    let client = EchoClient(payload: Array("ping".utf8), expectedReply: reply)
    TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: port), tls: tls) { client }
    guard waitFor(client.done, seconds: 20, "a valid client") else { return nil }
    return client.outcome.current
}
