import Foundation
import Loop
import TLSContract
import Testing
import TestSupport

extension LoopSuite {
    @Suite("Loop: many connections")
    struct ConcurrencyTests {
        @Test("1,000 concurrent connections each handshake and echo 10 round trips", arguments: SocketPair.all)
        func thousandConnections(pair: SocketPair) throws {
            let group = LoopGroup(count: 2)
            defer { group.shutdown() }
            let (clientContext, serverContext) = try pair.contexts()
            let closes = Shared<[String]>([])
            var options = TCPServer.Options()
            options.connection.handshakeTimeout = .seconds(60)
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: serverContext,
                                       options: options) { EchoHandler(closes: closes) }
            defer { server.shutdown() }
            var clientOptions = ConnectionOptions()
            clientOptions.handshakeTimeout = .seconds(60)
            clientOptions.connectTimeout = .seconds(60)
            let clients = (0..<1000).map { index in EchoClient(payload: Array("round trip \(index)".utf8), roundTrips: 10) }
            for client in clients {
                TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: server.port), tls: clientContext,
                                  options: clientOptions) { client }
            }
            var failures: [String] = []
            for client in clients {
                guard waitFor(client.done, seconds: 180, "1,000 connections") else { return }
                let outcome = client.outcome.current
                if let error = outcome.error { failures.append(error) }
                if outcome.received != Array(repeating: client.payload, count: 10).flatMap({ $0 }) {
                    failures.append("wrong echo")
                }
            }
            #expect(failures.isEmpty, "\(failures.count) failed, e.g. \(failures.prefix(3))")
        }
    }
}
