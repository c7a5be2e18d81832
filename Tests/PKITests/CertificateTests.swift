import Foundation
import PKI
import SwiftASN1
import Testing
import X509

/// Leaves and intermediates from one key type, checked by OpenSSL and by parsing them back.
@Suite("Certificates")
struct CertificateTests {
    static let serverNames = ["localhost", "127.0.0.1", "::1"]
    static let spiffeID = "spiffe://swift-mtls.test/workload"

    @Test("Root, intermediate and leaves verify with openssl and carry the right extensions", arguments: KeyType.allCases)
    func chainsAndExtensions(keyType: KeyType) throws {
        let directory = try ScratchDirectory()
        defer { directory.remove() }
        let root = try CertificateAuthority.makeRoot(commonName: "PKI Test Root", keyType: keyType)
        let intermediate = try root.makeIntermediate(commonName: "PKI Test Intermediate", keyType: keyType)
        let server = try root.issue(.server(names: Self.serverNames, keyType: keyType))
        let client = try intermediate.issue(.client(name: Self.spiffeID, keyType: keyType))

        // Chains.
        #expect(root.chainPEM == "")
        #expect(intermediate.chainPEM == intermediate.certificatePEM)
        #expect(server.chainPEM == server.certificatePEM)
        #expect(client.chainPEM == client.certificatePEM + intermediate.certificatePEM)
        #expect(!client.chainPEM.contains(root.certificatePEM))

        let serverResult = try OpenSSL.verify(
            leaf: server.certificatePEM, root: root.certificatePEM,
            extra: ["-purpose", "sslserver", "-verify_hostname", "localhost"], in: directory)
        #expect(serverResult.succeeded && serverResult.output.hasSuffix(": OK\n"), "\(serverResult.output)")
        for ip in ["127.0.0.1", "::1"] {
            let result = try OpenSSL.verify(leaf: server.certificatePEM, root: root.certificatePEM,
                                            extra: ["-purpose", "sslserver", "-verify_ip", ip], in: directory)
            #expect(result.succeeded, "\(ip): \(result.output)")
        }
        let clientResult = try OpenSSL.verify(
            leaf: client.certificatePEM, root: root.certificatePEM, untrusted: intermediate.certificatePEM,
            extra: ["-purpose", "sslclient"], in: directory)
        #expect(clientResult.succeeded && clientResult.output.hasSuffix(": OK\n"), "\(clientResult.output)")
        // What the client presents (its chainPEM) is enough to build the path.
        let presented = try OpenSSL.verify(leaf: client.chainPEM, root: root.certificatePEM, untrusted: client.chainPEM,
                                           extra: ["-purpose", "sslclient"], in: directory)
        #expect(presented.succeeded, "\(presented.output)")
        // Without the intermediate there is no path.
        let missing = try OpenSSL.verify(leaf: client.certificatePEM, root: root.certificatePEM, in: directory)
        #expect(!missing.succeeded, "\(missing.output)")

        // Extensions as OpenSSL sees them.
        let rootText = try OpenSSL.extensions(root.certificatePEM, in: directory)
        #expect(rootText.contains("X509v3 Basic Constraints: critical\n    CA:TRUE\n"), "\(rootText)")
        #expect(rootText.contains("X509v3 Key Usage: critical\n    Certificate Sign, CRL Sign\n"), "\(rootText)")
        #expect(rootText.contains("X509v3 Subject Key Identifier"), "\(rootText)")
        let intermediateText = try OpenSSL.extensions(intermediate.certificatePEM, in: directory)
        #expect(intermediateText.contains("X509v3 Basic Constraints: critical\n    CA:TRUE, pathlen:0\n"), "\(intermediateText)")
        #expect(intermediateText.contains("X509v3 Key Usage: critical\n    Certificate Sign, CRL Sign\n"), "\(intermediateText)")

        let keyUsage = keyType.isRSA ? "Digital Signature, Key Encipherment" : "Digital Signature"
        let serverText = try OpenSSL.extensions(server.certificatePEM, in: directory)
        #expect(serverText.contains("X509v3 Basic Constraints: critical\n    CA:FALSE\n"), "\(serverText)")
        #expect(serverText.contains("X509v3 Key Usage: critical\n    \(keyUsage)\n"), "\(serverText)")
        #expect(serverText.contains("X509v3 Extended Key Usage: \n    TLS Web Server Authentication\n"), "\(serverText)")
        #expect(serverText.contains("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1\n"), "\(serverText)")
        let clientText = try OpenSSL.extensions(client.certificatePEM, in: directory)
        #expect(clientText.contains("X509v3 Extended Key Usage: \n    TLS Web Client Authentication\n"), "\(clientText)")
        #expect(clientText.contains("X509v3 Subject Alternative Name: \n    URI:\(Self.spiffeID)\n"), "\(clientText)")

        #expect(try OpenSSL.subject(server.certificatePEM, in: directory) == "subject=CN=localhost,O=swift-mtls")
        #expect(try OpenSSL.subject(root.certificatePEM, in: directory) == "subject=CN=PKI Test Root,O=swift-mtls")

        // The same, parsed back in Swift: criticality, key identifiers, serials, signature algorithms.
        try checkCA(root, issuer: root, pathLength: nil)
        try checkCA(intermediate, issuer: root, pathLength: 0)
        try checkLeaf(server, issuer: root, keyType: keyType, purposes: [.serverAuth])
        try checkLeaf(client, issuer: intermediate, keyType: keyType, purposes: [.clientAuth])
        for key in [root.privateKeyPEM, intermediate.privateKeyPEM, server.privateKeyPEM, client.privateKeyPEM] {
            #expect(key.hasPrefix("-----BEGIN PRIVATE KEY-----\n") && key.hasSuffix("-----END PRIVATE KEY-----\n"))
        }
        #expect(try Certificate.PrivateKey(pemEncoded: server.privateKeyPEM).publicKey == server.certificate.publicKey)
        #expect(try Certificate.PrivateKey(pemEncoded: root.privateKeyPEM).publicKey == root.certificate.publicKey)
        #expect(root.keyType == keyType && server.keyType == keyType)
    }

    @Test("A CA of one key type signs leaves and intermediates of another",
          arguments: [(KeyType.ecdsaP256, KeyType.rsa2048), (.rsa2048, .ed25519), (.ed25519, .ecdsaP256),
                      (.ecdsaP256, .ed25519), (.rsa2048, .ecdsaP256), (.ed25519, .rsa2048)])
    func mixedKeyTypes(caKeyType: KeyType, leafKeyType: KeyType) throws {
        let directory = try ScratchDirectory()
        defer { directory.remove() }
        let root = try CertificateAuthority.makeRoot(commonName: "Mixed Root", keyType: caKeyType)
        let intermediate = try root.makeIntermediate(commonName: "Mixed Intermediate", keyType: leafKeyType)
        let direct = try root.issue(.server(names: ["localhost"], keyType: leafKeyType))
        let viaIntermediate = try intermediate.issue(.client(name: "mixed.example", keyType: caKeyType))
        let first = try OpenSSL.verify(leaf: direct.certificatePEM, root: root.certificatePEM, in: directory)
        #expect(first.succeeded, "\(first.output)")
        let second = try OpenSSL.verify(leaf: viaIntermediate.certificatePEM, root: root.certificatePEM,
                                        untrusted: intermediate.chainPEM, in: directory)
        #expect(second.succeeded, "\(second.output)")
        #expect(direct.certificate.signatureAlgorithm == Self.signatureAlgorithm(caKeyType))
        #expect(intermediate.certificate.signatureAlgorithm == Self.signatureAlgorithm(caKeyType))
        #expect(viaIntermediate.certificate.signatureAlgorithm == Self.signatureAlgorithm(leafKeyType))
        #expect(direct.keyType == leafKeyType)
    }

    @Test("Self-signed leaves are end-entity certificates (CA:FALSE) with their usual extensions")
    func selfSigned() throws {
        let directory = try ScratchDirectory()
        defer { directory.remove() }
        let leaf = try IssuedCertificate.selfSigned(.server(names: ["localhost"], keyType: .rsa2048))
        #expect(leaf.certificate.issuer == leaf.certificate.subject)
        #expect(try leaf.certificate.extensions.basicConstraints == .notCertificateAuthority)
        #expect(try leaf.certificate.extensions.keyUsage == KeyUsage(digitalSignature: true, keyEncipherment: true))
        #expect(leaf.chainPEM == leaf.certificatePEM)
        let text = try OpenSSL.extensions(leaf.certificatePEM, in: directory)
        #expect(text.contains("CA:FALSE"), "\(text)")
    }

    @Test("Serials are random, positive and exactly 20 bytes")
    func serials() throws {
        let root = try CertificateAuthority.makeRoot(commonName: "Serial Root")
        var seen: Set<[UInt8]> = []
        for _ in 0..<20 {
            let leaf = try root.issue(.client(name: "serial.example"))
            let bytes = Array(leaf.certificate.serialNumber.bytes)
            #expect(bytes.count == 20)
            #expect(bytes[0] != 0 && bytes[0] & 0x80 == 0, "serial must be positive and need no padding byte")
            seen.insert(bytes)
        }
        #expect(seen.count == 20)
    }

    @Test("Validity defaults: notBefore an hour ago; custom validity is kept exactly")
    func validity() throws {
        let before = Date()
        let root = try CertificateAuthority.makeRoot(commonName: "Validity Root", validFor: 86400 * 10)
        let leaf = try root.issue(.client(name: "validity.example", validFor: 86400))
        for certificate in [root.certificate, leaf.certificate] {
            let skew = before.timeIntervalSince(certificate.notValidBefore)
            #expect(skew > 3590 && skew < 3610, "notBefore is \(skew) s before now")
        }
        #expect(abs(leaf.certificate.notValidAfter.timeIntervalSince(before) - 86400) < 10)
        #expect(abs(root.certificate.notValidAfter.timeIntervalSince(before) - 864000) < 10)

        let notBefore = Date(timeIntervalSince1970: 1_700_000_000)
        let notAfter = Date(timeIntervalSince1970: 2_600_000_000)  // after 2049: GeneralizedTime
        let subject = try DistinguishedName { CommonName("Custom Root"); OrganizationName("Example") }
        let custom = try CertificateAuthority.makeRoot(subject: subject, keyType: .ed25519,
                                                       notValidBefore: notBefore, notValidAfter: notAfter)
        #expect(custom.certificate.subject == subject)
        #expect(custom.certificate.notValidBefore == notBefore)
        #expect(custom.certificate.notValidAfter == notAfter)
    }

    @Test("Names are split into DNS, IP and URI SANs")
    func nameSplitting() throws {
        let request = LeafRequest.server(names: ["example.com", "10.0.0.1", "::1", "[fe80::1]", "*.example.org",
                                                 "spiffe://example.org/server", "1.2.3"])
        #expect(request.commonName == "example.com")
        #expect(request.dnsNames == ["example.com", "*.example.org", "1.2.3"])
        #expect(request.ipAddresses == ["10.0.0.1", "::1", "[fe80::1]"])
        #expect(request.uris == ["spiffe://example.org/server"])
        #expect(request.purposes == [.serverAuth])

        let spiffe = LeafRequest.client(name: "spiffe://example.org/client")
        #expect(spiffe.uris == ["spiffe://example.org/client"] && spiffe.dnsNames.isEmpty)
        #expect(spiffe.commonName == "spiffe://example.org/client" && spiffe.purposes == [.clientAuth])
        let plain = LeafRequest.client(name: "client.example")
        #expect(plain.dnsNames == ["client.example"] && plain.uris.isEmpty && plain.ipAddresses.isEmpty)

        let root = try CertificateAuthority.makeRoot(commonName: "Names Root")
        let leaf = try root.issue(request)
        let names = try #require(try leaf.certificate.extensions.subjectAlternativeNames)
        #expect(Array(names) == [
            .dnsName("example.com"), .dnsName("*.example.org"), .dnsName("1.2.3"),
            .ipAddress(ASN1OctetString(contentBytes: [10, 0, 0, 1])),
            .ipAddress(ASN1OctetString(contentBytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])),
            .ipAddress(ASN1OctetString(contentBytes: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])),
            .uniformResourceIdentifier("spiffe://example.org/server"),
        ])
    }

    @Test("Without purposes there is no EKU extension; with both, both are listed")
    func purposes() throws {
        let root = try CertificateAuthority.makeRoot(commonName: "Purpose Root")
        var request = LeafRequest(commonName: "any.example", dnsNames: ["any.example"])
        let none = try root.issue(request)
        #expect(try none.certificate.extensions.extendedKeyUsage == nil)
        request.purposes = [.clientAuth, .serverAuth]
        let both = try root.issue(request)
        #expect(try both.certificate.extensions.extendedKeyUsage == (try ExtendedKeyUsage([.serverAuth, .clientAuth])))
    }

    @Test("Bad input is refused with a PKIError that says what is wrong")
    func refusals() throws {
        let root = try CertificateAuthority.makeRoot(commonName: "Refusal Root")
        var badIP = LeafRequest.server(names: ["localhost"])
        badIP.ipAddresses = ["300.1.1.1"]
        #expect(throws: PKIError.invalidIPAddress("300.1.1.1")) { try root.issue(badIP) }

        var badDNS = LeafRequest.server(names: ["localhost"])
        badDNS.dnsNames.append("bad name")
        #expect(throws: PKIError.invalidDNSName("bad name")) { try root.issue(badDNS) }
        #expect(throws: PKIError.invalidDNSName("bücher.example")) { try root.issue(.server(names: ["bücher.example"])) }

        var badURI = LeafRequest.client(name: "x.example")
        badURI.uris = ["no-scheme"]
        #expect(throws: PKIError.invalidURI("no-scheme")) { try root.issue(badURI) }

        var reversed = LeafRequest.client(name: "x.example")
        reversed.notValidAfter = reversed.notValidBefore - 1
        let error = try #require(throws: PKIError.self) { try root.issue(reversed) }
        #expect(error.description.contains("notValidBefore"))

        #expect(throws: PKIError.self) { try IssuedCertificate.selfSigned(LeafRequest(commonName: "", organization: nil)) }

        let intermediate = try root.makeIntermediate(commonName: "Refusal Intermediate")
        let pathError = try #require(throws: PKIError.self) { try intermediate.makeIntermediate(commonName: "Too Deep") }
        #expect(pathError == .pathLengthExceeded(issuer: "Refusal Intermediate"))
        #expect(pathError.description.contains("Refusal Intermediate"))
        // A pathLen 1 intermediate may have one more below it, whose chain lists both.
        let upper = try root.makeIntermediate(commonName: "Upper", pathLength: 1)
        let lower = try upper.makeIntermediate(commonName: "Lower")
        #expect(lower.chainPEM == lower.certificatePEM + upper.certificatePEM)
        let leaf = try lower.issue(.server(names: ["localhost"]))
        #expect(leaf.chainPEM == leaf.certificatePEM + lower.certificatePEM + upper.certificatePEM)
        let directory = try ScratchDirectory()
        defer { directory.remove() }
        let result = try OpenSSL.verify(leaf: leaf.certificatePEM, root: root.certificatePEM, untrusted: leaf.chainPEM, in: directory)
        #expect(result.succeeded, "\(result.output)")
    }

    @Test("An existing CA is loaded from PEM (PKCS#8 or traditional keys) and keeps issuing", arguments: [KeyType.ecdsaP256, .rsa2048, .ed25519])
    func loadCA(keyType: KeyType) throws {
        let directory = try ScratchDirectory()
        defer { directory.remove() }
        let root = try CertificateAuthority.makeRoot(commonName: "Loaded Root", keyType: keyType)
        let intermediate = try root.makeIntermediate(commonName: "Loaded Intermediate", keyType: keyType)

        var keyPEM = root.privateKeyPEM
        if keyType != .ed25519 {
            let keyFile = try directory.write(root.privateKeyPEM, to: "root.key")
            let traditional = try OpenSSL.run(["pkey", "-in", keyFile, "-traditional"])
            try #require(traditional.succeeded, "\(traditional.output)")
            keyPEM = traditional.output
            #expect(keyPEM.hasPrefix(keyType == .ecdsaP256 ? "-----BEGIN EC PRIVATE KEY-----" : "-----BEGIN RSA PRIVATE KEY-----"))
        }
        let loadedRoot = try CertificateAuthority(certificatePEM: root.certificatePEM, privateKeyPEM: keyPEM)
        #expect(loadedRoot.isRoot && loadedRoot.chainPEM == "" && loadedRoot.keyType == keyType)
        #expect(loadedRoot.privateKeyPEM == root.privateKeyPEM)
        let loadedIntermediate = try CertificateAuthority(certificatePEM: intermediate.certificatePEM,
                                                          privateKeyPEM: intermediate.privateKeyPEM)
        #expect(!loadedIntermediate.isRoot && loadedIntermediate.chainPEM == intermediate.certificatePEM)

        let leaf = try loadedIntermediate.issue(.server(names: ["localhost"], keyType: keyType))
        let result = try OpenSSL.verify(leaf: leaf.certificatePEM, root: root.certificatePEM, untrusted: leaf.chainPEM, in: directory)
        #expect(result.succeeded, "\(result.output)")

        #expect(throws: PKIError.self) {
            try CertificateAuthority(certificatePEM: root.certificatePEM, privateKeyPEM: intermediate.privateKeyPEM)
        }
        #expect(throws: PKIError.self) {
            try CertificateAuthority(certificatePEM: leaf.certificatePEM, privateKeyPEM: leaf.privateKeyPEM)
        }
    }

    // MARK: - Parsed checks

    static func signatureAlgorithm(_ keyType: KeyType) -> Certificate.SignatureAlgorithm {
        switch keyType {
        case .ecdsaP256: return .ecdsaWithSHA256
        case .rsa2048, .rsa3072: return .sha256WithRSAEncryption
        case .ed25519: return .ed25519
        }
    }

    private func isCritical(_ certificate: Certificate, _ oid: ASN1ObjectIdentifier) -> Bool? {
        certificate.extensions[oid: oid]?.critical
    }

    private func checkCA(_ ca: CertificateAuthority, issuer: CertificateAuthority, pathLength: Int?) throws {
        let certificate = ca.certificate
        #expect(try certificate.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: pathLength))
        #expect(isCritical(certificate, .X509ExtensionID.basicConstraints) == true)
        #expect(try certificate.extensions.keyUsage == KeyUsage(keyCertSign: true, cRLSign: true))
        #expect(isCritical(certificate, .X509ExtensionID.keyUsage) == true)
        let ski = try #require(try certificate.extensions.subjectKeyIdentifier)
        let issuerSKI = try #require(try issuer.certificate.extensions.subjectKeyIdentifier)
        #expect(try certificate.extensions.authorityKeyIdentifier?.keyIdentifier == issuerSKI.keyIdentifier)
        #expect(ski.keyIdentifier.count == 20)
        #expect(certificate.issuer == issuer.certificate.subject)
        #expect(certificate.signatureAlgorithm == Self.signatureAlgorithm(issuer.keyType))
        #expect(issuer.certificate.publicKey.isValidSignature(certificate.signature, for: certificate))
        #expect(try ca.certificateDER == Certificate(pemEncoded: ca.certificatePEM).serializedDER())
    }

    private func checkLeaf(_ leaf: IssuedCertificate, issuer: CertificateAuthority, keyType: KeyType, purposes: [ExtendedKeyUsage.Usage]) throws {
        let certificate = leaf.certificate
        #expect(try certificate.extensions.basicConstraints == .notCertificateAuthority)
        #expect(isCritical(certificate, .X509ExtensionID.basicConstraints) == true)
        #expect(try certificate.extensions.keyUsage == KeyUsage(digitalSignature: true, keyEncipherment: keyType.isRSA))
        #expect(try certificate.extensions.extendedKeyUsage == (try ExtendedKeyUsage(purposes)))
        #expect(isCritical(certificate, .X509ExtensionID.subjectAlternativeName) == false)
        #expect(try certificate.extensions.subjectKeyIdentifier != nil)
        let issuerSKI = try #require(try issuer.certificate.extensions.subjectKeyIdentifier)
        #expect(try certificate.extensions.authorityKeyIdentifier?.keyIdentifier == issuerSKI.keyIdentifier)
        #expect(certificate.issuer == issuer.certificate.subject)
        #expect(issuer.certificate.publicKey.isValidSignature(certificate.signature, for: certificate))
        #expect(try leaf.certificateDER == Certificate(pemEncoded: leaf.certificatePEM).serializedDER())
    }
}

extension Certificate {
    func serializedDER() throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(self)
        return serializer.serializedBytes
    }
}
