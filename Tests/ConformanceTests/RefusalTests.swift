import PKI
import TLSContract
import Testing
import TestSupport

/// Each refusal must be reported with the same reason by whichever backend detects it, and the
/// other side must never receive an application byte.
@Suite("Refusals")
struct RefusalTests {
    enum Detector { case server, client }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let detector: Detector
        let expected: TLSError.Reason
        let configure: @Sendable (TestPKI, TLSVersion) -> (client: TLSConfiguration, server: TLSConfiguration)
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "no client certificate when one is required", detector: .server, expected: .certificateRejected(.missing)) { pki, v in
            (pki.clientConfiguration(presentsCertificate: false, versions: v...v), pki.serverConfiguration(versions: v...v))
        },
        Case(name: "a client certificate from a rogue CA", detector: .server, expected: .certificateRejected(.untrustedIssuer)) { pki, v in
            (pki.clientConfiguration(pki.rogueClient, versions: v...v), pki.serverConfiguration(versions: v...v))
        },
        Case(name: "a client certificate from a forged CA with the trusted CA's subject", detector: .server,
             expected: .certificateRejected(.untrustedIssuer)) { pki, v in
            (pki.clientConfiguration(pki.forgedClient, versions: v...v), pki.serverConfiguration(versions: v...v))
        },
        Case(name: "a self-signed client certificate", detector: .server, expected: .certificateRejected(.untrustedIssuer)) { pki, v in
            (pki.clientConfiguration(pki.selfSignedClient, versions: v...v), pki.serverConfiguration(versions: v...v))
        },
        Case(name: "an expired client certificate", detector: .server, expected: .certificateRejected(.expired)) { pki, v in
            (pki.clientConfiguration(pki.expiredClient, versions: v...v), pki.serverConfiguration(versions: v...v))
        },
        Case(name: "a client certificate not valid yet", detector: .server, expected: .certificateRejected(.notYetValid)) { pki, v in
            (pki.clientConfiguration(pki.notYetValidClient, versions: v...v), pki.serverConfiguration(versions: v...v))
        },
        Case(name: "a client certificate without the clientAuth usage", detector: .server,
             expected: .certificateRejected(.wrongUsage)) { pki, v in
            (pki.clientConfiguration(pki.clientWithoutClientAuth, versions: v...v), pki.serverConfiguration(versions: v...v))
        },
        Case(name: "an expired server certificate", detector: .client, expected: .certificateRejected(.expired)) { pki, v in
            (pki.clientConfiguration(versions: v...v), pki.serverConfiguration(pki.expiredServer, versions: v...v))
        },
        Case(name: "a server certificate not valid yet", detector: .client, expected: .certificateRejected(.notYetValid)) { pki, v in
            (pki.clientConfiguration(versions: v...v), pki.serverConfiguration(pki.notYetValidServer, versions: v...v))
        },
        Case(name: "a server certificate from a rogue CA", detector: .client, expected: .certificateRejected(.untrustedIssuer)) { pki, v in
            (pki.clientConfiguration(versions: v...v), pki.serverConfiguration(pki.rogueServer, versions: v...v))
        },
        Case(name: "a server certificate from the forged same-subject CA", detector: .client,
             expected: .certificateRejected(.untrustedIssuer)) { pki, v in
            (pki.clientConfiguration(versions: v...v), pki.serverConfiguration(pki.forgedServer, versions: v...v))
        },
        Case(name: "a server name not in the server's SANs", detector: .client, expected: .certificateRejected(.wrongName)) { pki, v in
            (pki.clientConfiguration(versions: v...v), pki.serverConfiguration(pki.serverWithWrongNames, versions: v...v))
        },
        Case(name: "an IP address not in the server's SANs", detector: .client, expected: .certificateRejected(.wrongName)) { pki, v in
            (pki.clientConfiguration(serverName: "10.9.8.7", versions: v...v), pki.serverConfiguration(versions: v...v))
        },
    ]

    @Test("A bad peer is refused with the matching reason, and no application byte crosses",
          arguments: BackendPair.all, cases)
    func refused(pair: BackendPair, refusal: Case) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            let (clientConfiguration, serverConfiguration) = refusal.configure(pki, version)
            let connection = try pair.connect(client: clientConfiguration, server: serverConfiguration)
            // Both sides try to talk as early as the contract lets them.
            try connection.client.writePlaintext(Array("client secret".utf8))
            try connection.server.writePlaintext(Array("server secret".utf8))
            connection.pump()

            let detector = refusal.detector == .server ? connection.serverEvents : connection.clientEvents
            let other = refusal.detector == .server ? connection.clientEvents : connection.serverEvents
            let failure = try #require(detector.failure, "\(version): the \(refusal.detector) did not refuse")
            #expect(failure.reason == refusal.expected, "\(version): \(failure)")
            #expect(!detector.handshakeCompleted, "\(version)")
            #expect(connection.serverEvents.plaintext.isEmpty, "\(version): the server received application data")
            #expect(connection.clientEvents.plaintext.isEmpty, "\(version): the client received application data")
            // The other side learns of it through an alert, not a silent hang.
            let otherFailure = try #require(other.failure, "\(version): the peer was not told")
            #expect(otherFailure.reason.isPeerAlert, "\(version): \(otherFailure)")
        }
    }

    @Test("A client offering only TLS 1.1 is refused", arguments: Backend.all)
    func tls11Client(backend: Backend) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let server = try backend.backend.makeContext(pki.serverConfiguration()).makeSession()
        server.receiveCiphertext(RawHandshake.clientHello(legacyVersion: 0x0302, cipherSuites: [0xC013, 0xC009, 0x002F]))
        try expectFailure(server, .noSharedVersion)
        #expect(server.pendingCiphertextCount > 0, "no alert was sent")
    }

    @Test("A client offering only CBC suites is refused", arguments: Backend.all)
    func cbcOnlyClient(backend: Backend) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let server = try backend.backend.makeContext(pki.serverConfiguration()).makeSession()
        server.receiveCiphertext(RawHandshake.clientHello(legacyVersion: 0x0303, cipherSuites: RawHandshake.cbcOnlySuites))
        try expectFailure(server, .noSharedCipher)
    }

    @Test("A server answering with TLS 1.1 is refused", arguments: Backend.all)
    func tls11Server(backend: Backend) throws {
        let client = try backend.backend.makeContext(TestPKI.shared(.ecdsaP256).clientConfiguration()).makeSession()
        #expect(isNeedsInput(client.process()))
        #expect(client.pendingCiphertextCount > 0)
        _ = client.takeCiphertext()
        client.receiveCiphertext(RawHandshake.serverHello(version: 0x0302, cipherSuite: 0xC013))
        try expectFailure(client, .noSharedVersion)
    }

    @Test("A server choosing a CBC suite is refused", arguments: Backend.all)
    func cbcServer(backend: Backend) throws {
        let client = try backend.backend.makeContext(TestPKI.shared(.ecdsaP256).clientConfiguration()).makeSession()
        _ = client.process()
        _ = client.takeCiphertext()
        client.receiveCiphertext(RawHandshake.serverHello(version: 0x0303, cipherSuite: 0xC013))
        try expectFailure(client, .noSharedCipher)
    }

    private func isNeedsInput(_ progress: TLSProgress) -> Bool {
        if case .needsInput = progress { return true }
        return false
    }
}

/// Runs `process()` until the session stops and checks that it failed for `reason`.
func expectFailure(_ session: any TLSSession, _ reason: TLSError.Reason, sourceLocation: SourceLocation = #_sourceLocation) throws {
    for _ in 0..<100 {
        switch session.process() {
        case .failed(let error):
            #expect(error.reason == reason, "\(error)", sourceLocation: sourceLocation)
            return
        case .needsInput, .peerClosed:
            Issue.record("the session did not fail; expected \(reason)", sourceLocation: sourceLocation)
            return
        case .handshakeComplete, .plaintextReady:
            continue
        }
    }
}
