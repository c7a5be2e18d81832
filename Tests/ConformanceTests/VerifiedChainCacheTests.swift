import Foundation
import PKI
import TLSContract
import Testing
import TestSupport

/// The verified-chain cache (VerifiedChainCache) on every backend pair: a reconnect with the same
/// chain skips chain verification and gets the same identity, and nothing the full path would
/// refuse is let in by the cache.
@Suite("Verified-chain cache")
struct VerifiedChainCacheTests {
    static let fixtures = PolicyFixtures.shared

    /// One client context and one server context, connected again and again as a reconnecting
    /// service would; tickets off, so that every connection is a full handshake.
    struct Contexts {
        let client: any TLSContext
        let server: any TLSContext

        init(_ pair: BackendPair, client: TLSConfiguration, server: TLSConfiguration) throws {
            var client = client
            client.sessionTicketsEnabled = false
            var server = server
            server.sessionTicketsEnabled = false
            self.client = try pair.client.makeContext(client)
            self.server = try pair.server.makeContext(server)
        }

        init(client: any TLSContext, server: any TLSContext) {
            self.client = client
            self.server = server
        }

        func connect(serverName: String? = nil) throws -> InMemoryPair {
            let connection = InMemoryPair(client: try client.makeSession(serverName: serverName),
                                          server: try server.makeSession())
            _ = connection.handshake()
            return connection
        }

        func statistics() throws -> (client: VerifiedChainCache.Statistics, server: VerifiedChainCache.Statistics) {
            (try #require(client.verifiedChains).statistics, try #require(server.verifiedChains).statistics)
        }
    }

    private func configurations(_ version: TLSVersion) -> (client: TLSConfiguration, server: TLSConfiguration) {
        let pki = Self.fixtures.pki
        return (pki.clientConfiguration(versions: version ... version), pki.serverConfiguration(versions: version ... version))
    }

    private func describe(_ connection: InMemoryPair) -> String {
        "client: \(connection.clientEvents.failure.map { "\($0)" } ?? "ok"), server: \(connection.serverEvents.failure.map { "\($0)" } ?? "ok")"
    }

    @Test("A reconnect with the same chain is a hit on both sides, with the same identity, and not a resumption",
          arguments: BackendPair.all)
    func reconnectHits(pair: BackendPair) throws {
        for version in TLSVersion.allCases {
            let (client, server) = configurations(version)
            let contexts = try Contexts(pair, client: client, server: server)
            let first = try contexts.connect()
            try #require(first.clientEvents.handshakeCompleted && first.serverEvents.handshakeCompleted, "\(version): \(describe(first))")
            var (clientStats, serverStats) = try contexts.statistics()
            #expect(clientStats.hits == 0 && clientStats.misses == 1 && clientStats.insertions == 1, "\(version): \(clientStats)")
            #expect(serverStats.hits == 0 && serverStats.misses == 1 && serverStats.insertions == 1, "\(version): \(serverStats)")

            let second = try contexts.connect()
            try #require(second.clientEvents.handshakeCompleted && second.serverEvents.handshakeCompleted, "\(version): \(describe(second))")
            (clientStats, serverStats) = try contexts.statistics()
            #expect(clientStats.hits == 1 && clientStats.misses == 1 && clientStats.insertions == 1, "\(version): \(clientStats)")
            #expect(serverStats.hits == 1 && serverStats.misses == 1 && serverStats.insertions == 1, "\(version): \(serverStats)")
            #expect(second.server.negotiated?.resumed == false && second.client.negotiated?.resumed == false)

            let clientIdentity = try #require(first.server.peerIdentity)
            let serverIdentity = try #require(first.client.peerIdentity)
            #expect(second.server.peerIdentity == clientIdentity, "\(version)")
            #expect(second.client.peerIdentity == serverIdentity, "\(version)")
            #expect(clientIdentity.certificateChainDER == [Self.fixtures.pki.client.certificateDER])

            // Data flows over the connection that hit, both ways.
            try handshakeAndExchangeLines(try contexts.connect(), "\(version), third connection")
        }
    }

    @Test("A chain that fails verification is never stored: each attempt fails the same way", arguments: BackendPair.all)
    func failuresAreNotStored(pair: BackendPair) throws {
        let f = Self.fixtures
        let cases: [(String, IssuedCertificate, TLSError.Reason)] = [
            ("another CA's client (the library refuses)", f.pki.rogueClient, .certificateRejected(.untrustedIssuer)),
            ("a client leaf without clientAuth (the contract refuses)", f.pki.clientWithoutClientAuth,
             .certificateRejected(.wrongUsage)),
            ("an expired client", f.pki.expiredClient, .certificateRejected(.expired)),
        ]
        for (name, certificate, reason) in cases {
            let (client, server) = configurations(.tls13)
            var presenting = client
            presenting.identity = f.pki.identity(certificate)
            let contexts = try Contexts(pair, client: presenting, server: server)
            for attempt in 1...2 {
                let connection = try contexts.connect()
                let failure = try #require(connection.serverEvents.failure, "\(name), attempt \(attempt): let in")
                #expect(failure.reason == reason, "\(name), attempt \(attempt): \(failure)")
            }
            let stats = try #require(contexts.server.verifiedChains).statistics
            #expect(stats.hits == 0 && stats.insertions == 0 && stats.misses == 2, "\(name): \(stats)")
            #expect(try #require(contexts.server.verifiedChains).count == 0)
        }
    }

    @Test("A reload that removes the root starts a new generation: the cached chain fails there", arguments: BackendPair.all)
    func rootRemovedByReload(pair: BackendPair) throws {
        let pki = Self.fixtures.pki
        for version in TLSVersion.allCases {
            let (client, server) = configurations(version)
            var rotating = server
            rotating.trustRoots = [pki.trustRoot(pki.root), pki.trustRoot(pki.rogueRoot)]
            let before = try Contexts(pair, client: client, server: rotating)
            for _ in 1...2 { try #require(try before.connect().serverEvents.handshakeCompleted, "\(version)") }
            #expect(try #require(before.server.verifiedChains).statistics.hits == 1)

            var reloaded = server
            reloaded.trustRoots = [pki.trustRoot(pki.rogueRoot)]
            reloaded.sessionTicketsEnabled = false
            let after = Contexts(client: before.client, server: try pair.server.makeContext(reloaded))
            #expect(try #require(after.server.verifiedChains).generation != before.server.verifiedChains?.generation)
            let connection = try after.connect()
            let failure = try #require(connection.serverEvents.failure, "\(version): the removed root still let the client in")
            #expect(failure.reason == .certificateRejected(.untrustedIssuer), "\(version): \(failure)")
            #expect(try #require(after.server.verifiedChains).statistics.hits == 0)
        }
    }

    @Test("A leaf revoked by a CRL in a new context fails there, though the old context had it cached",
          arguments: BackendPair.all)
    func revokedInNewContext(pair: BackendPair) throws {
        let crls = RevocationTests.CRLs.shared
        for version in TLSVersion.allCases {
            let (client, server) = configurations(version)
            let before = try Contexts(pair, client: client, server: server)
            for _ in 1...2 { try #require(try before.connect().serverEvents.handshakeCompleted, "\(version)") }
            #expect(try #require(before.server.verifiedChains).statistics.hits == 1)

            var revoking = server
            revoking.crls = [.crl(crls.rootRevokingClient, label: "crl.pem")]
            revoking.sessionTicketsEnabled = false
            let after = Contexts(client: before.client, server: try pair.server.makeContext(revoking))
            for attempt in 1...2 {
                let connection = try after.connect()
                let failure = try #require(connection.serverEvents.failure, "\(version), attempt \(attempt): a revoked client got in")
                #expect(failure.reason == .certificateRejected(.revoked), "\(version): \(failure)")
            }
            #expect(try #require(after.server.verifiedChains).statistics.insertions == 0)
        }
    }

    @Test("A leaf that expires while cached fails at the next reconnect (one short-lived leaf, all pairs)")
    func expiredWhileCached() throws {
        let pki = Self.fixtures.pki
        let shortLived = try pki.root.issue(.client(name: "short-lived.swift-mtls.test", validFor: 5))
        var contexts: [(BackendPair, TLSVersion, Contexts)] = []
        for pair in BackendPair.all {
            for version in TLSVersion.allCases {
                var (client, server) = configurations(version)
                client.identity = pki.identity(shortLived)
                let reconnecting = try Contexts(pair, client: client, server: server)
                let first = try reconnecting.connect()
                try #require(first.serverEvents.handshakeCompleted, "\(pair), \(version): \(describe(first))")
                contexts.append((pair, version, reconnecting))
            }
        }
        // The cache alone, told the time: past notAfter the entry no longer answers.
        let presented = [shortLived.certificateDER]
        let cache = try #require(contexts[0].2.server.verifiedChains)
        let notAfter = shortLived.certificate.notValidAfter
        #expect(cache.probe(presentedChainDER: presented, peerRole: .client, expectedName: nil, pinnedPublicKey: nil,
                            now: notAfter.addingTimeInterval(-1)).hit != nil)
        #expect(cache.probe(presentedChainDER: presented, peerRole: .client, expectedName: nil, pinnedPublicKey: nil,
                            now: notAfter).hit == nil)

        while Date() <= notAfter.addingTimeInterval(1.5) { Thread.sleep(forTimeInterval: 0.25) }
        for (pair, version, reconnecting) in contexts {
            let connection = try reconnecting.connect()
            let failure = try #require(connection.serverEvents.failure, "\(pair), \(version): an expired leaf got in")
            #expect(failure.reason == .certificateRejected(.expired), "\(pair), \(version): \(failure)")
            // Each entry was dropped once, as out of its window (the first by the probe above).
            let stats = try #require(reconnecting.server.verifiedChains).statistics
            #expect(stats.expirations == 1 && stats.insertions == 1, "\(pair), \(version): \(stats)")
        }
    }

    @Test("The same leaf padded with an extra certificate is another key: a miss, verified in full, same identity",
          arguments: BackendPair.all)
    func paddedChainIsAnotherKey(pair: BackendPair) throws {
        let f = Self.fixtures
        let (client, server) = configurations(.tls13)
        let serverContext = try Contexts(pair, client: client, server: server).server
        let plain = Contexts(client: try Contexts(pair, client: client, server: server).client, server: serverContext)
        var padding = client
        padding.identity = f.identity(chainPEM: f.paddedClientChainPEM, keyOf: f.pki.client)
        let padded = Contexts(client: try Contexts(pair, client: padding, server: server).client, server: serverContext)

        let first = try plain.connect()
        try #require(first.serverEvents.handshakeCompleted, "\(describe(first))")
        let second = try padded.connect()
        try #require(second.serverEvents.handshakeCompleted, "\(describe(second))")
        let cache = try #require(serverContext.verifiedChains)
        #expect(cache.statistics.hits == 0 && cache.statistics.insertions == 2, "\(cache.statistics)")
        #expect(second.server.peerIdentity == first.server.peerIdentity)
        _ = try padded.connect()
        #expect(cache.statistics.hits == 1, "\(cache.statistics)")
    }

    @Test("Another expected name, or the same chain checked for the other role, misses", arguments: BackendPair.all)
    func otherNameOrRoleMisses(pair: BackendPair) throws {
        let pki = Self.fixtures.pki
        let (client, server) = configurations(.tls13)
        let contexts = try Contexts(pair, client: client, server: server)
        let cache = try #require(contexts.client.verifiedChains)
        for _ in 1...2 { try #require(try contexts.connect(serverName: "localhost").clientEvents.handshakeCompleted) }
        #expect(cache.statistics.hits == 1)

        // A name the certificate also holds: verified in full for that name.
        try #require(try contexts.connect(serverName: "127.0.0.1").clientEvents.handshakeCompleted)
        #expect(cache.statistics.hits == 1 && cache.statistics.insertions == 2, "\(cache.statistics)")
        // A name it does not hold: verified in full, refused, not stored.
        let wrong = try contexts.connect(serverName: "other.example")
        #expect(wrong.clientEvents.failure?.reason == .certificateRejected(.wrongName), "\(describe(wrong))")
        #expect(cache.statistics.hits == 1 && cache.statistics.insertions == 2, "\(cache.statistics)")

        // The key the backend stored under, and the same chain for the other role.
        let again = try contexts.connect(serverName: "localhost")
        let presented = [pki.server.certificateDER]
        #expect(cache.probe(presentedChainDER: presented, peerRole: .server, expectedName: "localhost",
                            pinnedPublicKey: nil).hit?.identity == again.client.peerIdentity)
        #expect(cache.probe(presentedChainDER: presented, peerRole: .client, expectedName: "localhost",
                            pinnedPublicKey: nil).hit == nil)
        #expect(cache.probe(presentedChainDER: presented, peerRole: .server, expectedName: "localhost",
                            pinnedPublicKey: [1, 2, 3]).hit == nil)
    }
}

/// The cache on its own: bounds, and its time window for a CRL.
@Suite("Verified-chain cache bounds and window")
struct VerifiedChainCacheUnitTests {
    let pki = PolicyFixtures.shared.pki

    private func identity() throws -> PeerIdentity {
        try PeerIdentity(certificateChainDER: [pki.client.certificateDER])
    }

    private func store(_ cache: VerifiedChainCache, name: String, now: Date = Date()) throws {
        let probe = cache.probe(presentedChainDER: [pki.client.certificateDER], peerRole: .client, expectedName: name,
                                pinnedPublicKey: nil, now: now)
        cache.insert(probe, identity: try identity(), verifiedChainDER: [pki.client.certificateDER, pki.root.certificateDER])
    }

    private func hit(_ cache: VerifiedChainCache, name: String, now: Date = Date()) -> Bool {
        cache.probe(presentedChainDER: [pki.client.certificateDER], peerRole: .client, expectedName: name,
                    pinnedPublicKey: nil, now: now).hit != nil
    }

    @Test("Bounded in entries, keeping the entries in use")
    func entryBound() throws {
        let cache = VerifiedChainCache(configuration: pki.serverConfiguration(), trustRootsDER: [pki.root.certificateDER],
                                       revocation: .empty, library: "test", capacity: 3)
        for name in ["a", "b", "c"] { try store(cache, name: name) }
        #expect(hit(cache, name: "a") && hit(cache, name: "c"))
        try store(cache, name: "d")
        #expect(cache.count == 3 && cache.statistics.evictions == 1)
        #expect(hit(cache, name: "a") && hit(cache, name: "c") && hit(cache, name: "d"))
        #expect(!hit(cache, name: "b"))
    }

    @Test("Bounded in bytes")
    func byteBound() throws {
        let entryBytes = 256 + pki.client.certificateDER.count * 2 + pki.root.certificateDER.count
        let cache = VerifiedChainCache(configuration: pki.serverConfiguration(), trustRootsDER: [pki.root.certificateDER],
                                       revocation: .empty, library: "test", capacity: 100, capacityBytes: entryBytes * 2)
        for name in ["a", "b", "c", "d"] { try store(cache, name: name) }
        #expect(cache.count == 2 && cache.bytes <= entryBytes * 2 && cache.statistics.evictions == 2)
    }

    @Test("An entry answers from its verification to the CRL's nextUpdate, not with the clock set back")
    func crlWindow() throws {
        let now = Date()
        let crl = try CertificateRevocationList(
            derEncoded: try CRLFactory.make(by: pki.root, thisUpdate: now.addingTimeInterval(-60),
                                            nextUpdate: now.addingTimeInterval(600), der: true),
            source: "crl.der")
        let nextUpdate = try #require(crl.nextUpdate)
        let cache = VerifiedChainCache(
            configuration: pki.serverConfiguration(), trustRootsDER: [pki.root.certificateDER],
            revocation: RevocationList(crls: [crl], anchorsDER: [pki.root.certificateDER]), library: "test")
        try store(cache, name: "a", now: now)
        #expect(hit(cache, name: "a", now: now.addingTimeInterval(60)))
        #expect(!hit(cache, name: "a", now: now.addingTimeInterval(-5)), "a clock set back")
        try store(cache, name: "a", now: now)
        #expect(!hit(cache, name: "a", now: nextUpdate))
        #expect(cache.statistics.expirations == 2)
    }
}

extension VerifiedChainCacheUnitTests {
    @Test("Shared by many threads at once (a context serves every loop): the bounds hold and every hit is whole")
    func concurrentUse() throws {
        let cache = VerifiedChainCache(configuration: pki.serverConfiguration(), trustRootsDER: [pki.root.certificateDER],
                                       revocation: .empty, library: "test", capacity: 16)
        let expected = try identity()
        let wrongHits = Shared(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for round in 0..<400 {
                let name = "n\((worker * 7 + round) % 40)"
                let probe = cache.probe(presentedChainDER: [pki.client.certificateDER], peerRole: .client,
                                        expectedName: name, pinnedPublicKey: nil)
                if let hit = probe.hit {
                    if hit.identity != expected { wrongHits.with { $0 += 1 } }
                } else {
                    cache.insert(probe, identity: expected,
                                 verifiedChainDER: [pki.client.certificateDER, pki.root.certificateDER])
                }
            }
        }
        #expect(wrongHits.current == 0)
        #expect(cache.count <= 16 && cache.count > 0)
        let stats = cache.statistics
        #expect(stats.hits + stats.misses == 8 * 400 && stats.insertions - stats.evictions >= cache.count, "\(stats)")
        // The byte count follows every insertion, replacement and eviction.
        let entryBytes = 256 + pki.client.certificateDER.count * 2 + pki.root.certificateDER.count
        #expect(cache.bytes == cache.count * entryBytes)
    }
}
