import TLSBackends
import TLSContract
import Testing
import TestSupport

/// The proxy's TLS half-close rests on one property of the sessions: after our own `close()`
/// (close_notify sent) a session still decrypts and delivers what the peer sends, until the
/// peer's close_notify. RFC 8446 (6.1) allows it for TLS 1.3; these cases show what each backend
/// does, in both roles and on both versions.
@Suite("TLS sessions read after sending close_notify")
struct TLSHalfCloseTests {
    struct Pair: Sendable, CustomTestStringConvertible {
        let client: any TLSBackend
        let server: any TLSBackend
        static let all = TLSBackendRegistry.pairs.map { Pair(client: $0.client, server: $0.server) }
        var testDescription: String { "\(client.name) client → \(server.name) server" }
    }

    @Test("The side that closed first still receives the rest", arguments: Pair.all)
    func readAfterOwnClose(pair: Pair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            for clientClosesFirst in [true, false] {
                var serverConfiguration = TLSConfiguration.mtlsServer(identity: pki.identity(pki.server), trustRoots: pki.trustRoots)
                serverConfiguration.minimumVersion = version
                serverConfiguration.maximumVersion = version
                var clientConfiguration = TLSConfiguration.mtlsClient(identity: pki.identity(pki.client), trustRoots: pki.trustRoots,
                                                                      serverName: "localhost")
                clientConfiguration.minimumVersion = version
                clientConfiguration.maximumVersion = version
                let connection = InMemoryPair(client: try pair.client.makeContext(clientConfiguration).makeSession(),
                                              server: try pair.server.makeContext(serverConfiguration).makeSession())
                try #require(connection.handshake())
                let (first, second) = clientClosesFirst ? (connection.client, connection.server) : (connection.server, connection.client)
                first.close()
                connection.pump()
                try second.writePlaintext(Array("the rest".utf8))
                second.close()
                connection.pump()
                let firstLog = clientClosesFirst ? connection.clientEvents : connection.serverEvents
                let label = "\(version), \(clientClosesFirst ? "client" : "server") closed first"
                #expect(firstLog.plaintext == Array("the rest".utf8), "\(label)")
                #expect(firstLog.peerClosed, "\(label)")
                #expect(firstLog.failure == nil, "\(label)")
            }
        }
    }
}
