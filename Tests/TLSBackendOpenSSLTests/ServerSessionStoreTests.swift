import COpenSSL
import Foundation
import TLSContract
import Testing
import TestSupport

@testable import TLSBackendOpenSSL

/// The server's store of TLS 1.3 sessions behind its stateful tickets.
@Suite("OpenSSL server session store")
struct ServerSessionStoreTests {
    private let pki = TestPKI.shared(.ecdsaP256)

    private func server(capacity: Int = OpenSSLServerSessionStore.defaultCapacity) throws -> OpenSSLContext {
        try OpenSSLContext(configuration: .mtlsServer(identity: pki.identity(pki.server), trustRoots: pki.trustRoots),
                           sessionStoreCapacity: capacity)
    }

    private func client(maximumVersion: TLSVersion = .tls13, viaIntermediate: Bool = false) throws -> any TLSContext {
        var configuration = TLSConfiguration.mtlsClient(
            identity: pki.identity(viaIntermediate ? pki.clientViaIntermediate : pki.client), trustRoots: pki.trustRoots,
            serverName: "localhost")
        configuration.maximumVersion = maximumVersion
        return try OpenSSLBackend().makeContext(configuration)
    }

    /// One connection; true if it resumed. Pumping until quiet delivers the ticket that follows.
    private func resumes(_ client: any TLSContext, _ server: OpenSSLContext,
                         sourceLocation: SourceLocation = #_sourceLocation) throws -> Bool {
        let pair = InMemoryPair(client: try client.makeSession(), server: try server.makeSession())
        try #require(pair.handshake(), sourceLocation: sourceLocation)
        return try #require(pair.server.negotiated, sourceLocation: sourceLocation).resumed
    }

    @Test("TLS 1.3 keeps one session per ticket issued, resumed or not; TLS 1.2 tickets carry theirs")
    func oneSessionPerTLS13Ticket() throws {
        let server = try server()
        let store = try #require(server.sessionStore)
        let tls13 = try client()
        #expect(try resumes(tls13, server) == false)
        #expect(store.count == 1)
        #expect(try resumes(tls13, server) == true)
        #expect(try resumes(tls13, server) == true)
        #expect(store.count == 3, "each resumption brings a new ticket, and the used ones stay usable")

        #expect(store.chainCount == 1, "sessions of one client share its chain")

        let tls12 = try client(maximumVersion: .tls12)
        #expect(try resumes(tls12, server) == false)
        #expect(try resumes(tls12, server) == true)
        #expect(store.count == 3, "TLS 1.2 sessions are sealed into their tickets, not stored")
    }

    @Test("A full store drops its oldest session first: that client alone falls back to a full handshake")
    func capacity() throws {
        let server = try server(capacity: 2)
        let store = try #require(server.sessionStore)
        let first = try client(), second = try client(), third = try client()
        for client in [first, second, third] { #expect(try resumes(client, server) == false) }
        #expect(store.count == 2)
        #expect(try resumes(first, server) == false, "its session was the oldest, and was dropped")
        // The store now holds the third's and the first's new one.
        #expect(try resumes(third, server) == true)
        #expect(try resumes(first, server) == true)
        #expect(store.count == 2)
    }

    @Test("A full store drops sessions already resumed from before any client's newest one")
    func supersededFirst() throws {
        let server = try server(capacity: 3)
        let away = try client(), busy = try client()
        #expect(try resumes(away, server) == false)
        #expect(try resumes(busy, server) == false)
        // Each resumption brings a new ticket and supersedes the session it resumed from.
        for _ in 1...5 { #expect(try resumes(busy, server) == true) }
        #expect(server.sessionStore?.count == 3)
        #expect(try resumes(away, server) == true, "the oldest session, but the newest of its client")
    }

    @Test("A client chain is kept once, and goes with the last session that carries it")
    func sharedChains() throws {
        let server = try server(capacity: 3)
        let store = try #require(server.sessionStore)
        let leafOnly = try client(), withIntermediate = try client(viaIntermediate: true)
        _ = try resumes(leafOnly, server)
        _ = try resumes(leafOnly, server)
        #expect(store.count == 2)
        #expect(store.chainCount == 1)
        _ = try resumes(withIntermediate, server)
        #expect(store.chainCount == 2)
        // Three more sessions of the other chain: the first pushes out the superseded session, the
        // second the leaf-only client's newest, the third the oldest of their own.
        for _ in 1...3 { _ = try resumes(try client(viaIntermediate: true), server) }
        #expect(store.count == 3)
        #expect(store.chainCount == 1, "the leaf-only client's sessions are all gone, and its chain with them")
    }

    @Test("Expired sessions do not resume, and leave the store as new ones arrive")
    func expiry() throws {
        let server = try server()
        let store = try #require(server.sessionStore)
        // Sessions made from here on are valid for one second.
        _ = SSL_CTX_set_timeout(server.ctx, 1)
        let client = try client()
        _ = try resumes(client, server)
        Thread.sleep(forTimeInterval: 2.1)
        #expect(try resumes(client, server) == false)
        #expect(store.count == 1, "the expired session was dropped when the new one arrived")
    }

    @Test("Without tickets, the server keeps no store")
    func noTickets() throws {
        var configuration = TLSConfiguration.mtlsServer(identity: pki.identity(pki.server), trustRoots: pki.trustRoots)
        configuration.sessionTicketsEnabled = false
        let server = try OpenSSLContext(configuration: configuration)
        #expect(server.sessionStore == nil)
    }
}
