import PKI
import TLSContract
import Testing
import TestSupport

/// The verification rules of `PeerVerification`, each one case, on every backend pair: the same
/// outcome, and for refusals the same `TLSError` reason, whichever backend verifies.
@Suite("Verification policy")
struct VerificationPolicyTests {
    static let fixtures = PolicyFixtures.shared

    struct Refusal: Sendable, CustomTestStringConvertible {
        let name: String
        let detector: RefusalTests.Detector
        let expected: TLSError.Reason
        let configure: @Sendable (PolicyFixtures) -> (client: TLSConfiguration, server: TLSConfiguration)
        var testDescription: String { name }
    }

    static let refusals: [Refusal] = [
        Refusal(name: "a server name found only in the subject CN (RFC 9525: SANs only)", detector: .client,
                expected: .certificateRejected(.wrongName)) { f in
            (f.pki.clientConfiguration(), f.pki.serverConfiguration(f.serverWithNameOnlyInCN))
        },
        Refusal(name: "a wildcard does not cover two labels", detector: .client, expected: .certificateRejected(.wrongName)) { f in
            (f.pki.clientConfiguration(serverName: "a.b.wild.test"), f.pki.serverConfiguration(f.wildcardServer))
        },
        Refusal(name: "a wildcard does not cover its bare parent", detector: .client, expected: .certificateRejected(.wrongName)) { f in
            (f.pki.clientConfiguration(serverName: "wild.test"), f.pki.serverConfiguration(f.wildcardServer))
        },
        Refusal(name: "a server leaf whose only purpose is anyExtendedKeyUsage", detector: .client,
                expected: .certificateRejected(.wrongUsage)) { f in
            (f.pki.clientConfiguration(), f.pki.serverConfiguration(f.serverWithOnlyAnyUsage))
        },
        Refusal(name: "a client leaf whose only purpose is anyExtendedKeyUsage", detector: .server,
                expected: .certificateRejected(.wrongUsage)) { f in
            (f.pki.clientConfiguration(f.clientWithOnlyAnyUsage), f.pki.serverConfiguration())
        },
        Refusal(name: "a server leaf for clientAuth only", detector: .client, expected: .certificateRejected(.wrongUsage)) { f in
            (f.pki.clientConfiguration(), f.pki.serverConfiguration(f.serverWithOnlyClientAuth))
        },
        Refusal(name: "a client chain longer than the limit", detector: .server, expected: .certificateRejected(.invalid)) { f in
            (f.pki.clientConfiguration(f.clientWithTooLongChain), f.pki.serverConfiguration())
        },
        Refusal(name: "a pinned server key that does not match", detector: .client,
                expected: .certificateRejected(.notAuthorized)) { f in
            var client = f.pki.clientConfiguration()
            client.pinnedServerPublicKey = [UInt8](repeating: 0xAB, count: 32)
            return (client, f.pki.serverConfiguration())
        },
        Refusal(name: "a server from the root when only the intermediate is trusted", detector: .client,
                expected: .certificateRejected(.untrustedIssuer)) { f in
            var client = f.pki.clientConfiguration()
            client.trustRoots = [f.pki.trustRoot(f.pki.intermediate)]
            return (client, f.pki.serverConfiguration())
        },
    ]

    @Test("Each rule refuses with the same reason on every pair, before any application byte", arguments: BackendPair.all, refusals)
    func refused(pair: BackendPair, refusal: Refusal) throws {
        for version in TLSVersion.allCases {
            var (client, server) = refusal.configure(Self.fixtures)
            for configuration in [\TLSConfiguration.minimumVersion, \.maximumVersion] {
                client[keyPath: configuration] = version
                server[keyPath: configuration] = version
            }
            let connection = try pair.connect(client: client, server: server)
            try connection.client.writePlaintext(Array("client secret".utf8))
            try connection.server.writePlaintext(Array("server secret".utf8))
            connection.pump()
            let detector = refusal.detector == .server ? connection.serverEvents : connection.clientEvents
            let failure = try #require(detector.failure, "\(version): the \(refusal.detector) did not refuse")
            #expect(failure.reason == refusal.expected, "\(version): \(failure)")
            #expect(connection.serverEvents.plaintext.isEmpty, "\(version): the server received application data")
            #expect(connection.clientEvents.plaintext.isEmpty, "\(version): the client received application data")
        }
    }

    struct Acceptance: Sendable, CustomTestStringConvertible {
        let name: String
        let configure: @Sendable (PolicyFixtures) -> (client: TLSConfiguration, server: TLSConfiguration)
        var testDescription: String { name }
    }

    static let acceptances: [Acceptance] = [
        Acceptance(name: "a wildcard covers one leftmost label, case-insensitively") { f in
            (f.pki.clientConfiguration(serverName: "API.Wild.Test"), f.pki.serverConfiguration(f.wildcardServer))
        },
        Acceptance(name: "leaves without an extended key usage extension are unrestricted") { f in
            (f.pki.clientConfiguration(f.clientWithoutUsage), f.pki.serverConfiguration(f.serverWithoutUsage))
        },
        Acceptance(name: "an intermediate given as the trust root is an anchor on both sides") { f in
            var client = f.pki.clientConfiguration(f.pki.clientViaIntermediate)
            var server = f.pki.serverConfiguration(f.pki.serverViaIntermediate)
            client.trustRoots = [f.pki.trustRoot(f.pki.intermediate)]
            server.trustRoots = [f.pki.trustRoot(f.pki.intermediate)]
            return (client, server)
        },
        Acceptance(name: "a pinned server key replaces the name check") { f in
            var client = f.pki.clientConfiguration(serverName: "ignored")
            client.serverName = nil
            client.pinnedServerPublicKey = try? PeerIdentity(certificateChainDER: [f.pki.server.certificateDER]).spkiSHA256
            return (client, f.pki.serverConfiguration())
        },
    ]

    @Test("What the rules allow is accepted on every pair", arguments: BackendPair.all, acceptances)
    func accepted(pair: BackendPair, acceptance: Acceptance) throws {
        for version in TLSVersion.allCases {
            var (client, server) = acceptance.configure(Self.fixtures)
            client.minimumVersion = version
            client.maximumVersion = version
            let connection = try pair.connect(client: client, server: server)
            #expect(connection.handshake(), "\(version): \(connection.clientEvents.failure.map { "\($0)" } ?? "") \(connection.serverEvents.failure.map { "\($0)" } ?? "")")
        }
    }

    @Test("The identity is the certification path: certificates a peer pads its chain with are dropped",
          arguments: BackendPair.all)
    func paddedChain(pair: BackendPair) throws {
        let f = Self.fixtures
        var client = f.pki.clientConfiguration()
        client.identity = f.identity(chainPEM: f.paddedClientChainPEM, keyOf: f.pki.client)
        let connection = try pair.connect(client: client, server: f.pki.serverConfiguration())
        try #require(connection.handshake())
        let identity = try #require(connection.server.peerIdentity)
        #expect(identity.certificateChainDER == [f.pki.client.certificateDER])
    }

    @Test("A client must name the server or pin its key: no silent 'any name'", arguments: Backend.all)
    func clientWithoutServerName(backend: Backend) throws {
        var client = Self.fixtures.pki.clientConfiguration()
        client.serverName = nil
        #expect {
            _ = try backend.backend.makeContext(client)
        } throws: { error in
            (error as? TLSError)?.reason == .configuration(file: nil, problem: .missingServerName)
        }
    }
}
