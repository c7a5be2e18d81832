import TLSContract
import Testing
import TestSupport

@testable import TLSBackendOpenSSL

/// Sealed tickets, which only TLS 1.2 uses (TLS 1.3 tickets are stateful: ServerSessionStoreTests).
@Suite("OpenSSL ticket keys")
struct TicketKeyRotationTests {
    /// One client context against one server context, so the client's cached ticket is the one
    /// the server sealed last.
    private func handshake(_ client: any TLSContext, _ server: any TLSContext) throws -> NegotiatedParameters {
        let pair = InMemoryPair(client: try client.makeSession(), server: try server.makeSession())
        try #require(pair.handshake())
        return try #require(pair.server.negotiated)
    }

    private func tls12Client(_ pki: TestPKI) throws -> any TLSContext {
        var configuration = TLSConfiguration.mtlsClient(identity: pki.identity(pki.client), trustRoots: pki.trustRoots,
                                                        serverName: "localhost")
        configuration.maximumVersion = .tls12
        return try OpenSSLBackend().makeContext(configuration)
    }

    @Test("A ticket survives one key rotation, not two, and a full handshake follows")
    func rotation() throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let backend = OpenSSLBackend()
        let server = try #require(try backend.makeContext(
            .mtlsServer(identity: pki.identity(pki.server), trustRoots: pki.trustRoots)) as? OpenSSLContext)
        #expect(server.ticketKeys != nil)
        let client = try tls12Client(pki)

        #expect(try handshake(client, server).resumed == false)
        #expect(try handshake(client, server).resumed == true, "the ticket under the current key")

        server.rotateTicketKeys()
        // The next ticket is sealed under a fresh key; the one the client holds is now the previous key's.
        #expect(try handshake(client, server).resumed == true, "a ticket under the previous key is still accepted")

        // Two rotations before the client comes back: its ticket's key is gone.
        server.rotateTicketKeys()
        _ = try handshake(try tls12Client(pki), server)
        server.rotateTicketKeys()
        _ = try handshake(try tls12Client(pki), server)
        #expect(try handshake(client, server).resumed == false, "a ticket two keys old must not resume")
        #expect(try handshake(client, server).resumed == true, "and the full handshake brought a fresh ticket")
    }

    @Test("Without tickets, the server installs no ticket keys")
    func noTickets() throws {
        let pki = TestPKI.shared(.ecdsaP256)
        var configuration = TLSConfiguration.mtlsServer(identity: pki.identity(pki.server), trustRoots: pki.trustRoots)
        configuration.sessionTicketsEnabled = false
        let server = try #require(try OpenSSLBackend().makeContext(configuration) as? OpenSSLContext)
        #expect(server.ticketKeys == nil)
    }
}
