import Foundation
import Loop
import TLSContract
import Testing
import TestSupport

/// Peers that stall, reset or vanish must cost the server nothing but their own slot.
extension LoopSuite {
    @Suite("Loop: stalled and faulty peers")
    struct FaultTests {
        private func startServer(_ pair: SocketPair, group: LoopGroup, handshakeTimeout: Duration = .seconds(10),
                                 closes: Shared<[String]>) throws -> (TCPServer, any TLSContext) {
            let (clientContext, serverContext) = try pair.contexts()
            var options = TCPServer.Options()
            options.connection.handshakeTimeout = handshakeTimeout
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: serverContext,
                                       options: options) { EchoHandler(closes: closes) }
            return (server, clientContext)
        }

        @Test("A silent peer and half a ClientHello do not delay a valid client, and time out", arguments: SocketPair.all)
        func stalledPeers(pair: SocketPair) throws {
            let group = LoopGroup(count: 1)
            defer { group.shutdown() }
            let closes = Shared<[String]>([])
            let (server, clientContext) = try startServer(pair, group: group, handshakeTimeout: .milliseconds(800), closes: closes)
            defer { server.shutdown() }

            let silent = try RawSocket(port: server.port)
            defer { silent.close() }
            let halfHello = try RawSocket(port: server.port)
            defer { halfHello.close() }
            let hello = RawHandshake.clientHello(legacyVersion: 0x0303, cipherSuites: [0x1301, 0xC02B])
            halfHello.send(Array(hello.prefix(hello.count / 2)))

            // One loop serves all three: the valid client must get through while the others stall.
            let outcome = try #require(echoOnce(group, port: server.port, tls: clientContext))
            #expect(outcome.error == nil, "\(outcome.error ?? "")")
            #expect(outcome.received == Array("ping".utf8))
            #expect(!closes.current.contains { $0.contains("did not finish in time") },
                    "a stalled peer timed out before the valid client finished")

            #expect(silent.waitForPeerClose(), "the silent peer was never closed")
            #expect(halfHello.waitForPeerClose(), "the half-hello peer was never closed")
            // The socket closes a loop iteration before the close callback reports it.
            for _ in 0..<300 where closes.current.count < 3 { usleep(10_000) }
            let timeouts = closes.current.filter { $0.contains("did not finish in time") }
            #expect(timeouts.count == 2, "\(closes.current)")
        }

        @Test("Resets, half-closes and EOF mid-handshake give clean errors and leak no descriptor",
              arguments: SocketPair.all)
        func resetsAndHalfCloses(pair: SocketPair) throws {
            var serverPort = 0
            do {
                let group = LoopGroup(count: 2)
                defer { group.shutdown() }
                let closes = Shared<[String]>([])
                let (server, clientContext) = try startServer(pair, group: group, closes: closes)
                defer { server.shutdown() }
                serverPort = server.port

                // A reset in the middle of the handshake.
                let resetter = try RawSocket(port: server.port)
                let hello = RawHandshake.clientHello(legacyVersion: 0x0303, cipherSuites: [0x1301, 0xC02B])
                resetter.send(Array(hello.prefix(40)))
                resetter.reset()
                // A half-close (FIN) in the middle of the handshake.
                let halfCloser = try RawSocket(port: server.port)
                halfCloser.send(Array(hello.prefix(40)))
                halfCloser.shutdownWrite()
                #expect(halfCloser.waitForPeerClose())
                halfCloser.close()

                // A reset in the middle of a transfer, from a TLS client.
                let transfer = ResettingClient(afterBytes: 100_000)
                TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: server.port), tls: clientContext,
                                  options: .streamingClient) { transfer }
                _ = waitFor(transfer.done, "the resetting client")

                // The server still serves.
                let outcome = try #require(echoOnce(group, port: server.port, tls: clientContext))
                #expect(outcome.error == nil, "\(outcome.error ?? "")")

                // Wait until the server has seen all four connections end (a guard, not a measurement).
                for _ in 0..<300 where closes.current.count < 4 { usleep(10_000) }
                let seen = closes.current
                #expect(seen.contains { $0.contains("connection reset") }, "\(seen)")
                #expect(seen.contains { $0.contains("closed during the handshake") }, "\(seen)")
                #expect(seen.count >= 4, "\(seen)")
            }
            // Loops and their sockets are gone: no socket of this process touches the server's port.
            #expect(openSockets(touchingPort: serverPort).isEmpty, "\(openSockets(touchingPort: serverPort))")
        }

        @Test("A graceful server shutdown sends close_notify to open connections", arguments: SocketPair.all)
        func gracefulShutdown(pair: SocketPair) throws {
            let group = LoopGroup(count: 2)
            defer { group.shutdown() }
            let closes = Shared<[String]>([])
            let (server, clientContext) = try startServer(pair, group: group, closes: closes)
            let idlers = (0..<10).map { _ in IdleClient() }
            for idler in idlers {
                TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: server.port), tls: clientContext) { idler }
                _ = waitFor(idler.established, "an idle client to connect")
            }
            #expect(server.connectionCount == 10)
            server.shutdown(graceful: true)
            for idler in idlers {
                guard waitFor(idler.closed, "an idle client to be closed") else { continue }
                #expect(idler.closeError.current == nil, "\(idler.closeError.current ?? "")")
            }
            #expect(closes.current.count == 10)
            #expect(closes.current.allSatisfy { $0 == "clean" }, "\(closes.current)")
        }
    }
}

/// Connects, then sits there until the server closes it.
final class IdleClient: ConnectionHandler, @unchecked Sendable {
    let established = DispatchSemaphore(value: 0)
    let closed = DispatchSemaphore(value: 0)
    let closeError = Shared<String?>(nil)
    func connectionDidEstablish(_ connection: Connection) { established.signal() }
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {}
    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        closeError.with { $0 = error.map { "\($0)" } }
        established.signal()
        closed.signal()
    }
}

/// Streams data and resets the connection once `afterBytes` have been echoed back.
final class ResettingClient: ConnectionHandler, @unchecked Sendable {
    let afterBytes: Int
    let done = DispatchSemaphore(value: 0)
    private var received = 0
    init(afterBytes: Int) { self.afterBytes = afterBytes }
    func connectionDidEstablish(_ connection: Connection) {
        try? connection.write([UInt8](repeating: 7, count: afterBytes * 2))
    }
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        received += bytes.count
        if received >= afterBytes { connection.reset() }
    }
    func connectionDidClose(_ connection: Connection, error: ConnectionError?) { done.signal() }
}
