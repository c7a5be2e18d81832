import Foundation
import PKI
import TLSContract
import Testing
import TestSupport

/// Certificate revocation lists (`TLSConfiguration.crls`) on every backend pair: the same refusal,
/// with the same reason and a message naming the serial, whichever backend checks; CRLs made by
/// `openssl ca -gencrl` (see RevocationList for the rule).
@Suite("Revocation")
struct RevocationTests {
    /// The CRLs every case uses, made once (each costs an openssl process).
    struct CRLs: Sendable {
        let pki = TestPKI.shared(.ecdsaP256)
        /// By the root: the client and the server leaves.
        let rootRevokingClient: [UInt8]
        let rootRevokingServer: [UInt8]
        /// By the root: nothing revoked.
        let rootEmpty: [UInt8]
        /// By the root, DER: the client.
        let rootRevokingClientDER: [UInt8]
        /// By the root: the intermediate itself.
        let rootRevokingIntermediate: [UInt8]
        /// By the intermediate (not a trust root): its client leaf.
        let intermediateRevokingClient: [UInt8]
        /// By the rogue root, listing the serial of our client: another issuer's CRL.
        let rogueListingClientSerial: [UInt8]
        /// By the root, nextUpdate yesterday: expired.
        let rootExpired: [UInt8]
        /// Names the root as issuer but is signed by the forged twin's key.
        let forgedRevokingNothing: [UInt8]

        static let shared: CRLs = {
            do { return try CRLs() } catch { fatalError("cannot make the test CRLs: \(error)") }
        }()

        init() throws {
            let pki = TestPKI.shared(.ecdsaP256)
            rootRevokingClient = try CRLFactory.make(by: pki.root, revoking: [pki.client])
            rootRevokingServer = try CRLFactory.make(by: pki.root, revoking: [pki.server])
            rootEmpty = try CRLFactory.make(by: pki.root)
            rootRevokingClientDER = try CRLFactory.make(by: pki.root, revoking: [pki.client], der: true)
            let intermediateSerial = try CertificateSummary(derEncoded: pki.intermediate.certificateDER).serialHex
            rootRevokingIntermediate = try CRLFactory.make(by: pki.root, revokingSerials: [intermediateSerial])
            intermediateRevokingClient = try CRLFactory.make(by: pki.intermediate, revoking: [pki.clientViaIntermediate])
            rogueListingClientSerial = try CRLFactory.make(by: pki.rogueRoot, revoking: [pki.client])
            rootExpired = try CRLFactory.make(by: pki.root, thisUpdate: Date().addingTimeInterval(-3 * 86400),
                                              nextUpdate: Date().addingTimeInterval(-86400))
            forgedRevokingNothing = try CRLFactory.make(by: pki.forgedRoot)
        }
    }

    private func serial(_ certificate: IssuedCertificate) throws -> String {
        try CertificateSummary(derEncoded: certificate.certificateDER).serialHex
    }

    /// Connects, both sides trying to talk at once; returns the pair after pumping.
    private func run(_ pair: BackendPair, client: TLSConfiguration, server: TLSConfiguration) throws -> InMemoryPair {
        let connection = try pair.connect(client: client, server: server)
        try connection.client.writePlaintext(Array("client secret".utf8))
        try connection.server.writePlaintext(Array("server secret".utf8))
        connection.pump()
        return connection
    }

    private func expectRefused(_ connection: InMemoryPair, by detector: String, _ reason: TLSError.Reason,
                               alert: TLSAlert?, mentioning words: [String], _ context: String,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (seen, other) = detector == "server"
            ? (connection.serverEvents, connection.clientEvents) : (connection.clientEvents, connection.serverEvents)
        let failure = try #require(seen.failure, "\(context): the \(detector) let the peer in", sourceLocation: sourceLocation)
        #expect(failure.reason == reason, "\(context): \(failure)", sourceLocation: sourceLocation)
        for word in words {
            #expect(failure.detail.contains(word), "\(context): '\(word)' is not in \(failure)", sourceLocation: sourceLocation)
        }
        #expect(connection.serverEvents.plaintext.isEmpty && connection.clientEvents.plaintext.isEmpty,
                "\(context): application data crossed", sourceLocation: sourceLocation)
        let told = try #require(other.failure, "\(context): the peer was not told", sourceLocation: sourceLocation)
        if let alert {
            #expect(told.reason == .peerSentAlert(alert), "\(context): \(told)", sourceLocation: sourceLocation)
        }
    }

    @Test("A revoked client is refused by the server as .revoked, naming its serial; the client hears certificate_revoked",
          arguments: BackendPair.all)
    func revokedClient(pair: BackendPair) throws {
        let crls = CRLs.shared
        let pki = crls.pki
        for version in TLSVersion.allCases {
            for (label, bytes) in [("PEM", crls.rootRevokingClient), ("DER", crls.rootRevokingClientDER)] {
                var server = pki.serverConfiguration(versions: version...version)
                server.crls = [.crl(bytes, label: "crl.\(label.lowercased())")]
                let connection = try run(pair, client: pki.clientConfiguration(versions: version...version), server: server)
                try expectRefused(connection, by: "server", .certificateRejected(.revoked), alert: .certificateRevoked,
                                  mentioning: [try serial(pki.client), "crl.\(label.lowercased())"], "\(version), \(label)")
            }
        }
    }

    @Test("A revoked server is refused by the client as .revoked, naming its serial", arguments: BackendPair.all)
    func revokedServer(pair: BackendPair) throws {
        let crls = CRLs.shared
        let pki = crls.pki
        for version in TLSVersion.allCases {
            var client = pki.clientConfiguration(versions: version...version)
            client.crls = [.crl(crls.rootRevokingServer, label: "crl.pem")]
            let connection = try run(pair, client: client, server: pki.serverConfiguration(versions: version...version))
            try expectRefused(connection, by: "client", .certificateRejected(.revoked), alert: .certificateRevoked,
                              mentioning: [try serial(pki.server)], "\(version)")
        }
    }

    @Test("Intermediates are checked too: a revoked intermediate, and a CRL signed by an intermediate",
          arguments: BackendPair.all)
    func intermediates(pair: BackendPair) throws {
        let crls = CRLs.shared
        let pki = crls.pki
        let intermediateSerial = try CertificateSummary(derEncoded: pki.intermediate.certificateDER).serialHex
        for version in TLSVersion.allCases {
            let cases: [(String, [UInt8], String)] = [
                ("the root revoked the intermediate", crls.rootRevokingIntermediate, intermediateSerial),
                ("the intermediate revoked the leaf", crls.intermediateRevokingClient, try serial(pki.clientViaIntermediate)),
            ]
            for (name, bytes, revokedSerial) in cases {
                var server = pki.serverConfiguration(versions: version...version)
                server.crls = [.crl(bytes, label: "crl.pem")]
                let client = pki.clientConfiguration(pki.clientViaIntermediate, versions: version...version)
                let connection = try run(pair, client: client, server: server)
                try expectRefused(connection, by: "server", .certificateRejected(.revoked), alert: .certificateRevoked,
                                  mentioning: [revokedSerial], "\(version), \(name)")
            }
        }
    }

    @Test("CRLs that do not cover the peer change nothing: another CA's, an empty one, and the intermediate's for a root-issued leaf",
          arguments: BackendPair.all)
    func unrelatedCRLs(pair: BackendPair) throws {
        let crls = CRLs.shared
        let pki = crls.pki
        for version in TLSVersion.allCases {
            let cases: [(String, [[UInt8]])] = [
                ("a rogue CA's CRL listing the client's serial", [crls.rogueListingClientSerial]),
                ("an empty CRL of the root", [crls.rootEmpty]),
                ("the intermediate's CRL", [crls.intermediateRevokingClient]),
                ("all three", [crls.rogueListingClientSerial, crls.rootEmpty, crls.intermediateRevokingClient]),
            ]
            for (name, list) in cases {
                var server = pki.serverConfiguration(versions: version...version)
                server.crls = list.enumerated().map { .crl($1, label: "crl-\($0).pem") }
                var client = pki.clientConfiguration(versions: version...version)
                client.crls = server.crls
                let connection = try pair.connect(client: client, server: server)
                #expect(connection.handshake(), "\(version), \(name): \(String(describing: connection.serverEvents.failure ?? connection.clientEvents.failure))")
                #expect(connection.server.peerIdentity?.commonName == TestPKI.clientName, "\(version), \(name)")
            }
        }
    }

    @Test("One PEM file may hold several CRLs, one per issuer", arguments: BackendPair.all)
    func concatenated(pair: BackendPair) throws {
        let crls = CRLs.shared
        let pki = crls.pki
        let bundle = crls.rootRevokingClient + crls.intermediateRevokingClient
        for version in TLSVersion.allCases {
            var server = pki.serverConfiguration(versions: version...version)
            server.crls = [.crl(bundle, label: "bundle.pem")]
            for leaf in [pki.client, pki.clientViaIntermediate] {
                let connection = try run(pair, client: pki.clientConfiguration(leaf, versions: version...version), server: server)
                try expectRefused(connection, by: "server", .certificateRejected(.revoked), alert: .certificateRevoked,
                                  mentioning: [try serial(leaf)], "\(version), \(leaf.commonName ?? "")")
            }
        }
    }

    @Test("A CRL past its nextUpdate refuses the peers it covers as .crlExpired, on both sides", arguments: BackendPair.all)
    func expiredCRL(pair: BackendPair) throws {
        let crls = CRLs.shared
        let pki = crls.pki
        for version in TLSVersion.allCases {
            var server = pki.serverConfiguration(versions: version...version)
            server.crls = [.crl(crls.rootExpired, label: "old.pem")]
            let byServer = try run(pair, client: pki.clientConfiguration(versions: version...version), server: server)
            try expectRefused(byServer, by: "server", .certificateRejected(.crlExpired), alert: .certificateExpired,
                              mentioning: ["old.pem", "nextUpdate"], "\(version), server")

            var client = pki.clientConfiguration(versions: version...version)
            client.crls = [.crl(crls.rootExpired, label: "old.pem")]
            let byClient = try run(pair, client: client, server: pki.serverConfiguration(versions: version...version))
            try expectRefused(byClient, by: "client", .certificateRejected(.crlExpired), alert: nil,
                              mentioning: ["old.pem"], "\(version), client")
        }
    }

    @Test("A CRL naming our CA but signed by another key refuses that CA's certificates as .invalid", arguments: BackendPair.all)
    func forgedCRL(pair: BackendPair) throws {
        let crls = CRLs.shared
        let pki = crls.pki
        for version in TLSVersion.allCases {
            var server = pki.serverConfiguration(versions: version...version)
            server.crls = [.crl(crls.forgedRevokingNothing, label: "forged.pem")]
            let connection = try run(pair, client: pki.clientConfiguration(versions: version...version), server: server)
            try expectRefused(connection, by: "server", .certificateRejected(.invalid), alert: nil,
                              mentioning: ["forged.pem", "not signed"], "\(version)")
        }
    }

    @Test("A CRL file that is not a CRL is a configuration error naming the file", arguments: Backend.all)
    func badCRLFile(backend: Backend) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let bad: [(String, [UInt8])] = [
            ("garbage.pem", Array("not a crl at all\n".utf8)),
            ("empty.pem", []),
            ("certificate.pem", Array(pki.client.certificatePEM.utf8)),
            ("cut.pem", Array("-----BEGIN X509 CRL-----\nMIIB\n".utf8)),
            ("bad-base64.pem", Array("-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n".utf8)),
            ("truncated.der", Array(CRLs.shared.rootRevokingClientDER.prefix(40))),
        ]
        for (name, bytes) in bad {
            for role in [TLSConfiguration.Role.server, .client] {
                var configuration = role == .server ? pki.serverConfiguration() : pki.clientConfiguration()
                configuration.crls = [.crl(CRLs.shared.rootEmpty, label: "good.pem"), .crl(bytes, label: name)]
                do {
                    _ = try backend.backend.makeContext(configuration)
                    Issue.record("\(name), \(role): accepted")
                } catch {
                    #expect(error.reason == .configuration(file: name, problem: .invalidCRL), "\(name), \(role): \(error)")
                }
            }
        }
        var missing = pki.serverConfiguration()
        missing.crls = [.file("/nonexistent/crl.pem")]
        #expect(throws: TLSError.self) { _ = try backend.backend.makeContext(missing) }
    }

    @Test("A resumed handshake is re-checked against the CRLs: once the CRL has expired, the ticket does not get the peer in",
          .timeLimit(.minutes(1)), arguments: BackendPair.all)
    func resumedAfterCRLExpiry(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        // Short-lived: valid for the full handshakes below, expired when they resume.
        let expiry = Date().addingTimeInterval(4)
        let crl = try CRLFactory.make(by: pki.root, thisUpdate: Date().addingTimeInterval(-60), nextUpdate: expiry)
        var sides: [(String, version: TLSVersion, client: any TLSContext, server: any TLSContext)] = []
        for version in TLSVersion.allCases {
            let capability: TLSCapabilities = version == .tls13 ? .tls13Resumption : .tls12Resumption
            guard pair.client.capabilities.contains(capability), pair.server.capabilities.contains(capability) else { continue }
            for side in ["server", "client"] {
                var client = pki.clientConfiguration(versions: version...version)
                var server = pki.serverConfiguration(versions: version...version)
                if side == "server" { server.crls = [.crl(crl, label: "short.pem")] } else { client.crls = [.crl(crl, label: "short.pem")] }
                let clientContext = try pair.client.makeContext(client)
                let serverContext = try pair.server.makeContext(server)
                let full = InMemoryPair(client: try clientContext.makeSession(), server: try serverContext.makeSession())
                try #require(full.handshake(), "\(version), CRL on the \(side): \(String(describing: full.serverEvents.failure ?? full.clientEvents.failure))")
                try full.client.writePlaintext(Array("ping".utf8))
                full.pump()  // delivers the TLS 1.3 ticket
                sides.append((side, version, clientContext, serverContext))
            }
        }
        Thread.sleep(until: expiry.addingTimeInterval(1.2))
        for (side, version, clientContext, serverContext) in sides {
            let again = InMemoryPair(client: try clientContext.makeSession(), server: try serverContext.makeSession())
            again.pump()
            let seen = side == "server" ? again.serverEvents : again.clientEvents
            let session = side == "server" ? again.server : again.client
            let failure = try #require(seen.failure, "\(version), CRL on the \(side): the resumed peer got in")
            #expect(failure.reason == .certificateRejected(.crlExpired), "\(version), \(side): \(failure)")
            #expect(session.negotiated?.resumed == true || failure.detail.hasPrefix("resumed session"),
                    "\(version), \(side): not refused on the resumed path: \(failure)")
        }
    }

    @Test("PeerVerification.checkResumed refuses a chain its context's CRLs revoke, and admits it without them")
    func checkResumedRevocation() throws {
        let crls = CRLs.shared
        let pki = crls.pki
        let anchors = [pki.root.certificateDER]
        let chain = [pki.client.certificateDER]
        _ = try PeerVerification.checkResumed(chainDER: chain)
        _ = try PeerVerification.checkResumed(
            chainDER: chain, revocation: RevocationList(crls: try CertificateRevocationList.parse(crls.rootEmpty, source: "empty.pem"),
                                                        anchorsDER: anchors))
        let revoking = RevocationList(crls: try CertificateRevocationList.parse(crls.rootRevokingClient, source: "crl.pem"),
                                      anchorsDER: anchors)
        #expect(revoking.entryCount == 1)
        do {
            _ = try PeerVerification.checkResumed(chainDER: chain, revocation: revoking)
            Issue.record("a revoked chain was resumed")
        } catch {
            #expect(error.reason == .certificateRejected(.revoked))
            #expect(error.detail.contains(try serial(pki.client)), "\(error)")
        }
        // The intermediate's leaf, with the intermediate from the ticket: revoked through the intermediate's CRL.
        let viaIntermediate = [pki.clientViaIntermediate.certificateDER, pki.intermediate.certificateDER]
        let intermediateCRL = RevocationList(crls: try CertificateRevocationList.parse(crls.intermediateRevokingClient, source: "int.pem"),
                                             anchorsDER: anchors)
        #expect(throws: TLSError.self) { _ = try PeerVerification.checkResumed(chainDER: viaIntermediate, revocation: intermediateCRL) }
        _ = try PeerVerification.checkResumed(chainDER: chain, revocation: intermediateCRL)
    }

    @Test("CRLs parse as openssl wrote them: issuer, dates, serials")
    func parsing() throws {
        let crls = CRLs.shared
        let pki = crls.pki
        let parsed = try CertificateRevocationList.parse(crls.rootRevokingClient, source: "crl.pem")
        #expect(parsed.count == 1)
        let crl = try #require(parsed.first)
        #expect(crl.issuer == pki.root.subject)
        #expect(crl.revoked.count == 1)
        #expect(crl.nextUpdate.map { $0 > Date() } == true)
        #expect(crl.thisUpdate < Date())
        let der = try CertificateRevocationList.parse(crls.rootRevokingClientDER, source: "crl.der")
        #expect(der.first?.revoked.keys.sorted { $0.lexicographicallyPrecedes($1) } == crl.revoked.keys.sorted { $0.lexicographicallyPrecedes($1) })
        let two = try CertificateRevocationList.parse(crls.rootRevokingClient + crls.intermediateRevokingClient, source: "two.pem")
        #expect(two.map(\.issuer) == [pki.root.subject, pki.intermediate.subject])
    }
}
