import Dispatch
import Foundation
import PKI
import TLSContract
import Testing
import TestSupport

/// Session resumption with tickets (TLS 1.3 PSK, TLS 1.2 RFC 5077) across every backend pair.
///
/// A version is expected to resume exactly when both backends claim `.tls13Resumption` /
/// `.tls12Resumption`: a backend that lacks it must say so through its capabilities (and then
/// must not resume), never by silently doing a full handshake.
@Suite("Resumption")
struct ResumptionTests {
    /// One connection between sessions of two existing contexts: handshake, then a line each way
    /// (pumping until quiet also delivers the TLS 1.3 tickets that follow the handshake).
    private func connect(
        _ client: any TLSContext, _ server: any TLSContext, serverName: String? = nil,
        _ context: String, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> InMemoryPair {
        let connection = InMemoryPair(client: try client.makeSession(serverName: serverName), server: try server.makeSession())
        try handshakeAndExchangeLines(connection, context, sourceLocation: sourceLocation)
        return connection
    }

    private func resumed(_ connection: InMemoryPair) -> (client: Bool?, server: Bool?) {
        (connection.client.negotiated?.resumed, connection.server.negotiated?.resumed)
    }

    /// Equality without dumping two DER chains into the failure message.
    private func same(_ seen: PeerIdentity?, _ expected: PeerIdentity?) -> Bool {
        let equal = seen == expected
        if !equal {
            let describe = { (identity: PeerIdentity?) in
                identity.map { "\($0.subject), chain of \($0.certificateChainDER.count)" } ?? "nobody"
            }
            Issue.record("saw \(describe(seen)), expected \(describe(expected))")
        }
        return equal
    }

    private static func capability(_ version: TLSVersion) -> TLSCapabilities {
        version == .tls13 ? .tls13Resumption : .tls12Resumption
    }

    private func bothResume(_ pair: BackendPair, _ version: TLSVersion) -> Bool {
        pair.client.capabilities.contains(Self.capability(version))
            && pair.server.capabilities.contains(Self.capability(version))
    }

    @Test("A second session from the same client context resumes, with the same identities on both sides",
          arguments: BackendPair.all)
    func resumes(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            let expected = bothResume(pair, version)
            for viaIntermediate in [false, true] {
                let context = "\(version), intermediate: \(viaIntermediate)"
                let client = try pair.client.makeContext(pki.clientConfiguration(
                    viaIntermediate ? pki.clientViaIntermediate : pki.client, versions: version ... version))
                let server = try pair.server.makeContext(pki.serverConfiguration(
                    viaIntermediate ? pki.serverViaIntermediate : pki.server, versions: version ... version))

                let full = try connect(client, server, context)
                #expect(resumed(full) == (false, false), "\(context): the first handshake cannot resume")
                let clientSeen = try #require(full.server.peerIdentity, "\(context)")
                let serverSeen = try #require(full.client.peerIdentity, "\(context)")
                #expect(clientSeen.certificateChainDER.count == (viaIntermediate ? 2 : 1), "\(context)")

                // The second from the full handshake's ticket, the third from a ticket issued on a
                // resumed connection.
                for round in ["second", "third"] {
                    let again = try connect(client, server, "\(context), \(round) connection")
                    #expect(resumed(again) == (expected, expected),
                            "\(context), \(round) connection: capabilities say resumption \(expected ? "works" : "is unsupported")")
                    #expect(same(again.server.peerIdentity, clientSeen), "\(context), \(round): the server's view of the client changed")
                    #expect(same(again.client.peerIdentity, serverSeen), "\(context), \(round): the client's view of the server changed")
                    for side in [again.client, again.server] {
                        let negotiated = try #require(side.negotiated)
                        #expect(negotiated.version == version, "\(context), \(round)")
                        #expect(CipherSuitePolicy.allowed.values.contains(negotiated.cipherSuite), "\(context), \(round)")
                        if version == .tls13 {
                            // psk_dhe_ke: a resumed TLS 1.3 handshake still does a fresh ECDHE.
                            #expect(negotiated.group != nil, "\(context), \(round): resumed without a key exchange")
                        }
                    }
                    #expect(again.client.negotiated?.cipherSuite == again.server.negotiated?.cipherSuite, "\(context), \(round)")
                    #expect(again.client.negotiated?.group == again.server.negotiated?.group, "\(context), \(round)")
                }
            }
        }
    }

    @Test("A ticket from one server context is refused by another with other keys, and a full handshake follows",
          arguments: BackendPair.all)
    func otherServerRefusesTicket(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            let context = "\(version)"
            let client = try pair.client.makeContext(pki.clientConfiguration(versions: version ... version))
            // Same configuration, same certificates: only the ticket keys differ.
            let first = try pair.server.makeContext(pki.serverConfiguration(versions: version ... version))
            let second = try pair.server.makeContext(pki.serverConfiguration(versions: version ... version))

            let full = try connect(client, first, context)
            let refused = try connect(client, second, "\(context), other server")
            #expect(resumed(refused) == (false, false), "\(context): another server context accepted the ticket")
            #expect(same(refused.server.peerIdentity, full.server.peerIdentity), "\(context)")
            #expect(same(refused.client.peerIdentity, full.client.peerIdentity), "\(context)")

            // The full handshake brought a ticket from the second server, which it accepts.
            let expected = bothResume(pair, version)
            let back = try connect(client, second, "\(context), other server again")
            #expect(resumed(back) == (expected, expected), "\(context)")
        }
    }

    @Test("With tickets off on either side, nothing is resumed", arguments: BackendPair.all)
    func ticketsOff(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            for side in ["server", "client"] {
                let context = "\(version), tickets off on the \(side)"
                var clientConfiguration = pki.clientConfiguration(versions: version ... version)
                var serverConfiguration = pki.serverConfiguration(versions: version ... version)
                if side == "server" { serverConfiguration.sessionTicketsEnabled = false }
                if side == "client" { clientConfiguration.sessionTicketsEnabled = false }
                let client = try pair.client.makeContext(clientConfiguration)
                let server = try pair.server.makeContext(serverConfiguration)
                for round in 1...3 {
                    let connection = try connect(client, server, "\(context), connection \(round)")
                    #expect(resumed(connection) == (false, false), "\(context), connection \(round)")
                    #expect(connection.server.peerIdentity?.commonName == TestPKI.clientName, "\(context)")
                }
            }
        }
    }

    @Test("Resumption does not bypass client authentication", arguments: BackendPair.all)
    func clientAuthentication(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            let expected = bothResume(pair, version)
            let server = try pair.server.makeContext(pki.serverConfiguration(versions: version ... version))

            // A resumed handshake still yields the client's identity on the server.
            let client = try pair.client.makeContext(pki.clientConfiguration(versions: version ... version))
            _ = try connect(client, server, "\(version)")
            let again = try connect(client, server, "\(version), again")
            #expect(resumed(again) == (expected, expected), "\(version)")
            let seen = try #require(again.server.peerIdentity, "\(version): a resumed session lost the client's identity")
            #expect(seen.commonName == TestPKI.clientName)
            #expect(seen.uris == [TestPKI.clientURI])
            #expect(seen.certificateChainDER == [pki.client.certificateDER])

            // A client without a certificate gets no ticket from a server that requires one, so it
            // is refused every time, never let in by resumption.
            let anonymous = try pair.client.makeContext(pki.clientConfiguration(presentsCertificate: false, versions: version ... version))
            for round in 1...2 {
                let connection = InMemoryPair(client: try anonymous.makeSession(), server: try server.makeSession())
                try connection.client.writePlaintext(Array("let me in".utf8))
                connection.pump()
                let failure = try #require(connection.serverEvents.failure, "\(version), attempt \(round): the server let it in")
                #expect(failure.reason == .certificateRejected(.missing), "\(version), attempt \(round): \(failure)")
                #expect(connection.serverEvents.plaintext.isEmpty, "\(version), attempt \(round)")
            }

            // Where the certificate is optional, a client that sent none resumes as nobody.
            let optionalServer = try pair.server.makeContext(
                pki.serverConfiguration(clientAuthentication: .optional, versions: version ... version))
            _ = try connect(anonymous, optionalServer, "\(version), optional")
            let anonymousAgain = try connect(anonymous, optionalServer, "\(version), optional, again")
            #expect(resumed(anonymousAgain) == (expected, expected), "\(version), optional")
            #expect(anonymousAgain.server.peerIdentity == nil, "\(version), optional")
        }
    }

    @Test("Sessions from one client context resume on many threads at once", arguments: BackendPair.all)
    func concurrentResumption(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            let expected = bothResume(pair, version)
            let client = try pair.client.makeContext(pki.clientConfiguration(versions: version ... version))
            let server = try pair.server.makeContext(pki.serverConfiguration(versions: version ... version))
            _ = try connect(client, server, "\(version), first")

            let threads = 8
            let perThread = 8
            let outcomes = Outcomes()
            DispatchQueue.concurrentPerform(iterations: threads) { _ in
                for _ in 0..<perThread {
                    // Every session is made, driven and freed on this thread; only the contexts are shared.
                    guard let clientSession = try? client.makeSession(), let serverSession = try? server.makeSession() else {
                        outcomes.record(handshake: false, resumed: false, identified: false)
                        continue
                    }
                    let connection = InMemoryPair(client: clientSession, server: serverSession)
                    let completed = connection.handshake()
                    outcomes.record(handshake: completed,
                                    resumed: connection.client.negotiated?.resumed == true && connection.server.negotiated?.resumed == true,
                                    identified: connection.server.peerIdentity?.commonName == TestPKI.clientName)
                }
            }
            let (handshakes, resumed, identified) = outcomes.totals
            #expect(handshakes == threads * perThread, "\(version)")
            #expect(identified == threads * perThread, "\(version)")
            #expect(resumed == (expected ? threads * perThread : 0), "\(version)")
        }
    }

    @Test("A session saved for one server name is never offered to another: that name is still verified",
          arguments: BackendPair.all)
    func sessionsAreKeyedByServerName(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            let expected = bothResume(pair, version)
            let client = try pair.client.makeContext(pki.clientConfiguration(serverName: "localhost", versions: version ... version))
            let server = try pair.server.makeContext(pki.serverConfiguration(versions: version ... version))
            _ = try connect(client, server, "\(version), localhost")

            // The certificate also names 127.0.0.1: a full handshake, then that name's own ticket.
            let byAddress = try connect(client, server, serverName: "127.0.0.1", "\(version), 127.0.0.1")
            #expect(resumed(byAddress) == (false, false), "\(version): a ticket for localhost was used for 127.0.0.1")
            let byAddressAgain = try connect(client, server, serverName: "127.0.0.1", "\(version), 127.0.0.1 again")
            #expect(resumed(byAddressAgain) == (expected, expected), "\(version)")

            // A name the certificate does not carry fails verification, ticket or not.
            let wrong = InMemoryPair(client: try client.makeSession(serverName: "other.example"), server: try server.makeSession())
            wrong.pump()
            let failure = try #require(wrong.clientEvents.failure, "\(version): the client accepted the wrong name")
            #expect(failure.reason == .certificateRejected(.wrongName), "\(version): \(failure)")
            #expect(wrong.client.negotiated?.resumed != true)

            let home = try connect(client, server, "\(version), localhost again")
            #expect(resumed(home) == (expected, expected), "\(version)")
        }
    }
}

/// Tallies from the concurrent test's threads.
private final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var handshakes = 0
    private var resumed = 0
    private var identified = 0

    func record(handshake: Bool, resumed: Bool, identified: Bool) {
        lock.withLock {
            if handshake { handshakes += 1 }
            if resumed { self.resumed += 1 }
            if identified { self.identified += 1 }
        }
    }

    var totals: (Int, Int, Int) { lock.withLock { (handshakes, resumed, identified) } }
}
