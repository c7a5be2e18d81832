import Foundation
import PKI
import TestSupport
import Testing
import TLSContract
@_spi(Testing) @testable import TLSBackendGnuTLS

@Suite struct BackendTests {
    @Test func nameVersionAndCapabilities() {
        let backend = GnuTLSBackend()
        #expect(backend.name == "gnutls")
        #expect(backend.libraryVersion.hasPrefix("GnuTLS 3."))
        #expect(backend.capabilities.contains([.pkcs12, .alpn, .ed25519, .ipAddressVerification]))
        #expect(backend.capabilities.contains([.tls13Resumption, .tls12Resumption]))
    }

    @Test func priorityStringFollowsThePolicy() throws {
        let both = GnuTLSPolicy.priorityString(for: Fixture.serverConfig())
        #expect(both.hasPrefix("NONE:+VERS-TLS1.3:+VERS-TLS1.2:"))
        #expect(!both.contains("CBC") && !both.contains("+RSA:") && !both.contains("SHA1"))
        let only13 = GnuTLSPolicy.priorityString(for: Fixture.serverConfig(minimumVersion: .tls13))
        #expect(only13.contains("+VERS-TLS1.3") && !only13.contains("+VERS-TLS1.2"))
        // RFC 5746: clients insist on it, servers answer it without demanding it (TLS 1.3 hellos lack it).
        #expect(both.contains(":%PARTIAL_RENEGOTIATION:") && !both.contains("SAFE_RENEGOTIATION"))
        let client = GnuTLSPolicy.priorityString(for: Fixture.clientConfig())
        #expect(client.contains(":%SAFE_RENEGOTIATION:") && !client.contains("PARTIAL_RENEGOTIATION"))
        let context = try GnuTLSContext(configuration: Fixture.serverConfig())
        #expect(context.backendName == "gnutls")
        #expect(context.priorityString == both)
    }
}

@Suite struct HandshakeTests {
    @Test func mutualTLS13InMemory() throws {
        let pair = try Fixture.pair(server: Fixture.serverConfig(), client: Fixture.clientConfig())
        #expect(pair.handshake())
        for session in [pair.client, pair.server] {
            #expect(session.isHandshakeComplete)
            let negotiated = try #require(session.negotiated)
            #expect(negotiated.version == .tls13)
            #expect(negotiated.cipherSuite == "TLS_AES_128_GCM_SHA256")
            #expect(negotiated.group == "x25519")
            #expect(negotiated.applicationProtocol == nil)
            #expect(negotiated.resumed == false)
        }
        let clientSeen = try #require(pair.server.peerIdentity)
        #expect(clientSeen.commonName == TestPKI.clientName)
        #expect(clientSeen.uris == [TestPKI.clientURI])
        let serverSeen = try #require(pair.client.peerIdentity)
        #expect(serverSeen.dnsNames.contains("localhost"))
        #expect(serverSeen.certificateChainDER.first == Fixture.pki.server.certificateDER)

        try pair.client.writePlaintext(Array("ping".utf8))
        try pair.server.writePlaintext(Array("pong".utf8))
        pair.pump()
        #expect(pair.serverEvents.plaintext == Array("ping".utf8))
        #expect(pair.clientEvents.plaintext == Array("pong".utf8))
    }

    @Test(arguments: [KeyType.ecdsaP256, .rsa2048])
    func tls12UsesECDHEWithAEAD(keyType: KeyType) throws {
        let pki = TestPKI.shared(keyType)
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(pki, maximumVersion: .tls12), client: Fixture.clientConfig(pki))
        #expect(pair.handshake())
        let negotiated = try #require(pair.client.negotiated)
        #expect(negotiated.version == .tls12)
        let expected = keyType == .ecdsaP256
            ? "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" : "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        #expect(negotiated.cipherSuite == expected)
        #expect(pair.server.negotiated?.cipherSuite == expected)
        #expect(negotiated.group == "x25519")
        #expect(pair.server.peerIdentity?.commonName == TestPKI.clientName)
    }

    @Test func ed25519AndIntermediateChains() throws {
        let pki = TestPKI.shared(.ed25519)
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(pki, certificate: pki.serverViaIntermediate),
            client: Fixture.clientConfig(pki, certificate: pki.clientViaIntermediate))
        #expect(pair.handshake())
        #expect(pair.server.peerIdentity?.certificateChainDER.count == 2)
        #expect(pair.client.peerIdentity?.certificateChainDER.count == 2)
    }

    @Test func alpnServerPreferenceWins() throws {
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(applicationProtocols: ["h2", "http/1.1"]),
            client: Fixture.clientConfig(applicationProtocols: ["http/1.1", "h2"]))
        #expect(pair.handshake())
        #expect(pair.client.negotiated?.applicationProtocol == "h2")
        #expect(pair.server.negotiated?.applicationProtocol == "h2")
    }

    @Test(arguments: ["127.0.0.1", "::1"])
    func ipAddressServerNamesAreVerifiedAgainstIPSANs(address: String) throws {
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(), client: Fixture.clientConfig(serverName: address))
        #expect(pair.handshake())
    }

    @Test func makeSessionOverridesTheServerName() throws {
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(), client: Fixture.clientConfig(serverName: "localhost"),
            serverName: "wrong.example")
        #expect(!pair.handshake())
        #expect(pair.clientEvents.failure?.reason == .certificateRejected(.wrongName))
    }

    @Test func optionalClientAuthenticationWithoutCertificate() throws {
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(clientAuthentication: .optional),
            client: Fixture.clientConfig(certificate: .some(nil)))
        #expect(pair.handshake())
        #expect(pair.server.peerIdentity == nil)
        #expect(pair.client.peerIdentity != nil)
    }

    @Test func plaintextWrittenBeforeTheHandshakeIsSentAfterIt() throws {
        let pair = try Fixture.pair(server: Fixture.serverConfig(), client: Fixture.clientConfig())
        try pair.client.writePlaintext(Array("early".utf8))
        #expect(pair.handshake())
        #expect(pair.serverEvents.plaintext == Array("early".utf8))
    }

    @Test func largeTransfersAreSplitIntoRecordsAndRespectThePlaintextLimit() throws {
        let server = try Fixture.backend.makeContext(Fixture.serverConfig()).makeSession()
        let client = try Fixture.backend.makeContext(Fixture.clientConfig()).makeSession()
        let pair = InMemoryPair(client: client, server: server)
        #expect(pair.handshake())
        var random = SeededRandom(seed: 7)
        // Half a MiB: fed at once, well within what a session buffers (TLSSessionLimits).
        let payload = random.bytes(1 << 19)
        try client.writePlaintext(payload)
        let ciphertext = client.takeCiphertext()
        // 32 records of 16 KiB, each with a 5-byte header and a 17-byte TLS 1.3 overhead.
        #expect(ciphertext.count == payload.count + 32 * 22)

        let gnutlsServer = try #require(server as? GnuTLSSession)
        gnutlsServer.plaintextLimit = 32 * 1024
        server.receiveCiphertext(ciphertext)
        guard case .plaintextReady = server.process() else {
            Issue.record("expected plaintext")
            return
        }
        #expect(server.pendingPlaintextCount == 32 * 1024)
        guard case .plaintextReady = server.process() else {
            Issue.record("process() must not decrypt past the limit")
            return
        }
        #expect(server.pendingPlaintextCount == 32 * 1024)
        var received: [UInt8] = []
        while true {
            server.takePlaintext(into: &received, maxBytes: .max)
            if case .needsInput = server.process(), server.pendingPlaintextCount == 0 { break }
        }
        expectSameBytes(received, payload)
    }

    @Test func chunkedDeliveryOneByteAtATime() throws {
        let pair = try Fixture.pair(server: Fixture.serverConfig(), client: Fixture.clientConfig(maximumVersion: .tls12))
        pair.chunking = { count in Array(repeating: 1, count: count) }
        #expect(pair.handshake())
        try pair.client.writePlaintext(Array("split".utf8))
        pair.pump()
        #expect(pair.serverEvents.plaintext == Array("split".utf8))
    }
}

@Suite struct ShutdownTests {
    @Test func closeBeforeTheHandshakeCompletesWaitsForIt() throws {
        let pair = try Fixture.pair(server: Fixture.serverConfig(), client: Fixture.clientConfig())
        try pair.client.writePlaintext(Array("one request".utf8))
        pair.client.close()
        #expect(pair.client.pendingCiphertextCount == 0)
        #expect(pair.handshake())
        #expect(pair.serverEvents.plaintext == Array("one request".utf8))
        #expect(pair.serverEvents.peerClosed)
    }

    @Test func closeNotifyIsReportedAsPeerClosedAfterTheData() throws {
        let pair = try Fixture.pair(server: Fixture.serverConfig(), client: Fixture.clientConfig())
        #expect(pair.handshake())
        try pair.client.writePlaintext(Array("bye".utf8))
        pair.client.close()
        #expect(throws: TLSError.self) { try pair.client.writePlaintext(Array("more".utf8)) }
        pair.pump()
        #expect(pair.serverEvents.plaintext == Array("bye".utf8))
        #expect(pair.serverEvents.peerClosed)
        #expect(pair.serverEvents.failure == nil)
        pair.endOfInput(to: pair.server)
        guard case .peerClosed = pair.server.process() else {
            Issue.record("a session that saw close_notify stays closed")
            return
        }
    }

    @Test func endOfInputWithoutCloseNotifyIsAnUncleanShutdown() throws {
        let pair = try Fixture.pair(server: Fixture.serverConfig(), client: Fixture.clientConfig())
        #expect(pair.handshake())
        try pair.client.writePlaintext(Array("data".utf8))
        pair.pump()
        pair.endOfInput(to: pair.server)
        #expect(pair.serverEvents.plaintext == Array("data".utf8))
        #expect(pair.serverEvents.failure?.reason == .uncleanShutdown)
        // The same failure, again and again.
        guard case .failed(let again) = pair.server.process() else {
            Issue.record("expected the failure to stick")
            return
        }
        #expect(again.reason == .uncleanShutdown)
        #expect(throws: TLSError.self) { try pair.server.writePlaintext([1]) }
    }

    @Test func endOfInputDuringTheHandshake() throws {
        let client = try Fixture.backend.makeContext(Fixture.clientConfig()).makeSession()
        guard case .needsInput = client.process() else {
            Issue.record("a client starts by sending its hello")
            return
        }
        #expect(client.pendingCiphertextCount > 0)
        client.receiveEndOfInput()
        guard case .failed(let error) = client.process() else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.reason == .handshakeFailed(.unexpectedEOF))

        let error2 = try Fixture.serverFailure(afterReceiving: [], endOfInput: true)
        #expect(error2?.reason == .handshakeFailed(.unexpectedEOF))
    }
}
