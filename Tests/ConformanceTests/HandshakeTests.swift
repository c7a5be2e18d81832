import PKI
import TLSContract
import Testing
import TestSupport

@Suite("Handshakes")
struct HandshakeTests {
    static let keyTypes: [KeyType] = [.ecdsaP256, .rsa2048, .ed25519]

    @Test("mTLS succeeds for each key type and version, signed by the root or an intermediate",
          arguments: BackendPair.all, keyTypes)
    func mutualTLS(pair: BackendPair, keyType: KeyType) throws {
        let pki = TestPKI.shared(keyType)
        for version in TLSVersion.allCases {
            for viaIntermediate in [false, true] {
                let serverCertificate = viaIntermediate ? pki.serverViaIntermediate : pki.server
                let clientCertificate = viaIntermediate ? pki.clientViaIntermediate : pki.client
                let connection = try pair.connect(
                    client: pki.clientConfiguration(clientCertificate, versions: version ... version),
                    server: pki.serverConfiguration(serverCertificate, versions: version ... version))
                let context = "\(version), intermediate: \(viaIntermediate)"
                try #require(connection.handshake(), "\(context): \(String(describing: connection.clientEvents.failure ?? connection.serverEvents.failure))")

                for side in [connection.client, connection.server] {
                    let negotiated = try #require(side.negotiated)
                    #expect(negotiated.version == version, "\(context)")
                    #expect(CipherSuitePolicy.allowed.values.contains(negotiated.cipherSuite),
                            "\(context): \(negotiated.cipherSuite) is outside the policy")
                    #expect(negotiated.group != nil, "\(context)")
                    #expect(!negotiated.resumed)
                }
                #expect(connection.client.negotiated == connection.server.negotiated, "\(context)")

                let seenByServer = try #require(connection.server.peerIdentity)
                let seenByClient = try #require(connection.client.peerIdentity)
                #expect(seenByServer == (try PeerIdentity(certificateChainDER: expectedChain(clientCertificate, pki, viaIntermediate))))
                #expect(seenByClient == (try PeerIdentity(certificateChainDER: expectedChain(serverCertificate, pki, viaIntermediate))))
                #expect(seenByServer.commonName == "client.swift-mtls.test")
                #expect(seenByServer.uris == ["spiffe://swift-mtls.test/client"])
                #expect(seenByClient.dnsNames == ["localhost"])
                #expect(seenByClient.ipAddresses == ["127.0.0.1", "::1"])
            }
        }
    }

    private func expectedChain(_ leaf: IssuedCertificate, _ pki: TestPKI, _ viaIntermediate: Bool) -> [[UInt8]] {
        viaIntermediate ? [leaf.certificateDER, pki.intermediate.certificateDER] : [leaf.certificateDER]
    }

    @Test("The server name may be an IP address, matched against IP SANs", arguments: BackendPair.all)
    func ipAddressServerName(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for address in ["127.0.0.1", "::1"] {
            let connection = try pair.connect(client: pki.clientConfiguration(serverName: address),
                                              server: pki.serverConfiguration())
            #expect(connection.handshake(), "\(address): \(String(describing: connection.clientEvents.failure))")
        }
    }

    @Test("ALPN picks the server's first protocol that the client offers", arguments: BackendPair.all)
    func alpn(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        var client = pki.clientConfiguration()
        client.applicationProtocols = ["h2", "http/1.1"]
        var server = pki.serverConfiguration()
        server.applicationProtocols = ["http/1.1", "h2"]
        let connection = try pair.connect(client: client, server: server)
        try #require(connection.handshake())
        #expect(connection.client.negotiated?.applicationProtocol == "http/1.1")
        #expect(connection.server.negotiated?.applicationProtocol == "http/1.1")
    }

    @Test("Optional client authentication admits a client without a certificate", arguments: BackendPair.all)
    func optionalClientAuthentication(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let connection = try pair.connect(client: pki.clientConfiguration(presentsCertificate: false),
                                          server: pki.serverConfiguration(clientAuthentication: .optional))
        try #require(connection.handshake())
        #expect(connection.server.peerIdentity == nil)
        #expect(connection.client.peerIdentity != nil)
    }

    @Test("Several trust roots at once: either CA's clients are accepted", arguments: BackendPair.all)
    func severalTrustRoots(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        var server = pki.serverConfiguration()
        server.trustRoots = [.pem(pki.rogueRoot.certificatePEM, label: "second-root.pem")] + pki.trustRoots
        for client in [pki.client, pki.rogueClient] {
            let connection = try pair.connect(client: pki.clientConfiguration(client), server: server)
            #expect(connection.handshake(), "\(String(describing: connection.serverEvents.failure))")
        }
    }
}
