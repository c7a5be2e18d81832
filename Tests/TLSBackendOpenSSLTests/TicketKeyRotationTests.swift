import TLSContract
import Testing
import TestSupport

@testable import TLSBackendOpenSSL

@Suite("OpenSSL ticket keys")
struct TicketKeyRotationTests {
    /// One client context against one server context, so the client's cached ticket is the one
    /// the server sealed last.
    private func handshake(_ client: any TLSContext, _ server: any TLSContext) throws -> NegotiatedParameters {
        let pair = InMemoryPair(client: try client.makeSession(), server: try server.makeSession())
        try #require(pair.handshake())
        // The TLS 1.3 ticket arrives after the handshake: let the client read it.
        try pair.server.writePlaintext([1])
        pair.pump()
        return try #require(pair.server.negotiated)
    }

    @Test("A ticket survives one key rotation, not two, and a full handshake follows")
    func rotation() throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let backend = OpenSSLBackend()
        let server = try #require(try backend.makeContext(
            .mtlsServer(identity: pki.identity(pki.server), trustRoots: pki.trustRoots)) as? OpenSSLContext)
        #expect(server.ticketKeys != nil)
        let client = try backend.makeContext(
            .mtlsClient(identity: pki.identity(pki.client), trustRoots: pki.trustRoots, serverName: "localhost"))

        #expect(try handshake(client, server).resumed == false)
        #expect(try handshake(client, server).resumed == true, "the ticket under the current key")

        server.rotateTicketKeys()
        // The next ticket is sealed under a fresh key; the one the client holds is now the previous key's.
        #expect(try handshake(client, server).resumed == true, "a ticket under the previous key is still accepted")

        // Two rotations before the client comes back: its ticket's key is gone.
        server.rotateTicketKeys()
        _ = try handshake(try backend.makeContext(
            .mtlsClient(identity: pki.identity(pki.client), trustRoots: pki.trustRoots, serverName: "localhost")), server)
        server.rotateTicketKeys()
        _ = try handshake(try backend.makeContext(
            .mtlsClient(identity: pki.identity(pki.client), trustRoots: pki.trustRoots, serverName: "localhost")), server)
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
