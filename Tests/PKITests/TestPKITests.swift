import Foundation
import PKI
import TLSContract
import Testing
import TestSupport
import X509

/// The conformance fixtures are what they claim to be: every good one verifies, every bad one fails
/// OpenSSL verification for exactly its own reason.
@Suite("Test PKI fixtures")
struct TestPKITests {
    static let keyTypes: [KeyType] = [.ecdsaP256, .rsa2048, .ed25519]

    @Test("Good fixtures verify for their purpose, names and chain", arguments: keyTypes)
    func goodFixtures(keyType: KeyType) throws {
        let pki = TestPKI.shared(keyType)
        let directory = try ScratchDirectory()
        defer { directory.remove() }
        let root = pki.root.certificatePEM

        for server in [pki.server, pki.serverViaIntermediate] {
            for check in [["-verify_hostname", "localhost"], ["-verify_ip", "127.0.0.1"], ["-verify_ip", "::1"]] {
                let result = try OpenSSL.verify(leaf: server.certificatePEM, root: root, untrusted: server.chainPEM,
                                                extra: ["-purpose", "sslserver"] + check, in: directory)
                #expect(result.succeeded && result.output.hasSuffix(": OK\n"), "\(check): \(result.output)")
            }
        }
        for client in [pki.client, pki.clientViaIntermediate] {
            let result = try OpenSSL.verify(leaf: client.certificatePEM, root: root, untrusted: client.chainPEM,
                                            extra: ["-purpose", "sslclient"], in: directory)
            #expect(result.succeeded && result.output.hasSuffix(": OK\n"), "\(result.output)")
            #expect(client.commonName == "client.swift-mtls.test")
            let names = try #require(try client.certificate.extensions.subjectAlternativeNames)
            #expect(Array(names) == [.dnsName("client.swift-mtls.test"),
                                     .uniformResourceIdentifier("spiffe://swift-mtls.test/client")])
        }
        #expect(pki.serverViaIntermediate.chainPEM == pki.serverViaIntermediate.certificatePEM + pki.intermediate.certificatePEM)
        #expect(pki.clientViaIntermediate.chainPEM == pki.clientViaIntermediate.certificatePEM + pki.intermediate.certificatePEM)
        #expect(pki.server.chainPEM == pki.server.certificatePEM)
        #expect(pki.root.commonName == "swift-mtls Test Root")

        // Each key belongs to its certificate, and every fixture has the set's key type.
        let all = [pki.server, pki.client, pki.serverViaIntermediate, pki.clientViaIntermediate, pki.expiredClient,
                   pki.expiredServer, pki.notYetValidClient, pki.notYetValidServer, pki.clientWithoutClientAuth,
                   pki.rogueClient, pki.rogueServer, pki.forgedClient, pki.forgedServer, pki.selfSignedClient,
                   pki.selfSignedServer, pki.serverWithWrongNames]
        for leaf in all {
            #expect(try Certificate.PrivateKey(pemEncoded: leaf.privateKeyPEM).publicKey == leaf.certificate.publicKey)
            #expect(leaf.keyType == keyType)
        }
        #expect(Set(all.map(\.certificateDER)).count == all.count)
        #expect(TestPKI.shared(keyType).server.certificateDER == pki.server.certificateDER, "generated once")
    }

    @Test("Bad fixtures fail verification for their own reason", arguments: keyTypes)
    func badFixtures(keyType: KeyType) throws {
        let pki = TestPKI.shared(keyType)
        let directory = try ScratchDirectory()
        defer { directory.remove() }
        let root = pki.root.certificatePEM

        func expectFailure(_ leaf: IssuedCertificate, _ purpose: String, _ message: String, extra: [String] = [],
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try OpenSSL.verify(leaf: leaf.certificatePEM, root: root, untrusted: leaf.chainPEM,
                                            extra: ["-purpose", purpose] + extra, in: directory)
            #expect(!result.succeeded, "\(leaf.commonName ?? "?") verified", sourceLocation: sourceLocation)
            #expect(result.output.contains(message), "\(result.output)", sourceLocation: sourceLocation)
        }
        func expectSuccess(_ leaf: IssuedCertificate, _ purpose: String, root: String, extra: [String] = [],
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try OpenSSL.verify(leaf: leaf.certificatePEM, root: root, untrusted: leaf.chainPEM,
                                            extra: ["-purpose", purpose] + extra, in: directory)
            #expect(result.succeeded, "\(result.output)", sourceLocation: sourceLocation)
        }

        try expectFailure(pki.expiredClient, "sslclient", "certificate has expired")
        try expectFailure(pki.expiredServer, "sslserver", "certificate has expired")
        try expectFailure(pki.notYetValidClient, "sslclient", "certificate is not yet valid")
        try expectFailure(pki.notYetValidServer, "sslserver", "certificate is not yet valid")
        #expect(pki.expiredClient.certificate.notValidAfter < Date())
        #expect(pki.notYetValidServer.certificate.notValidBefore > Date())

        // Missing clientAuth is the only thing wrong with it.
        try expectFailure(pki.clientWithoutClientAuth, "sslclient", "unsuitable certificate purpose")
        try expectSuccess(pki.clientWithoutClientAuth, "sslserver", root: root)

        try expectFailure(pki.rogueClient, "sslclient", "unable to get local issuer certificate")
        try expectFailure(pki.rogueServer, "sslserver", "unable to get local issuer certificate")
        try expectSuccess(pki.rogueClient, "sslclient", root: pki.rogueRoot.certificatePEM)
        try expectSuccess(pki.rogueServer, "sslserver", root: pki.rogueRoot.certificatePEM, extra: ["-verify_hostname", "localhost"])
        #expect(pki.rogueRoot.certificate.subject != pki.root.certificate.subject)

        // The forged twin matches the root by name and key identifier: only the signature gives it away.
        #expect(pki.forgedRoot.certificate.subject == pki.root.certificate.subject)
        #expect(pki.forgedRoot.certificate.publicKey != pki.root.certificate.publicKey)
        #expect(try pki.forgedClient.certificate.extensions.authorityKeyIdentifier?.keyIdentifier
                == pki.root.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
        try expectFailure(pki.forgedClient, "sslclient", "certificate signature failure")
        try expectFailure(pki.forgedServer, "sslserver", "certificate signature failure")
        try expectSuccess(pki.forgedClient, "sslclient", root: pki.forgedRoot.certificatePEM)
        try expectSuccess(pki.forgedServer, "sslserver", root: pki.forgedRoot.certificatePEM)

        try expectFailure(pki.selfSignedClient, "sslclient", "self-signed certificate")
        try expectFailure(pki.selfSignedServer, "sslserver", "self-signed certificate")
        #expect(try pki.selfSignedClient.certificate.extensions.basicConstraints == .notCertificateAuthority)

        try expectFailure(pki.serverWithWrongNames, "sslserver", "hostname mismatch", extra: ["-verify_hostname", "localhost"])
        try expectFailure(pki.serverWithWrongNames, "sslserver", "IP address mismatch", extra: ["-verify_ip", "127.0.0.1"])
        try expectSuccess(pki.serverWithWrongNames, "sslserver", root: root, extra: ["-verify_hostname", "other.example"])
    }

    @Test("Contract values carry the chain, the key and the root")
    func contractValues() throws {
        let pki = TestPKI.shared(.ecdsaP256)
        guard case .pem(let chain, let key) = pki.identity(pki.clientViaIntermediate) else {
            Issue.record("expected a PEM identity")
            return
        }
        #expect(try chain.load() == Array(pki.clientViaIntermediate.chainPEM.utf8))
        #expect(try key.load() == Array(pki.clientViaIntermediate.privateKeyPEM.utf8))
        #expect(chain.name.contains("client.swift-mtls.test"))
        #expect(pki.trustRoots.count == 1)
        #expect(try pki.trustRoots[0].load() == Array(pki.root.certificatePEM.utf8))
    }
}
