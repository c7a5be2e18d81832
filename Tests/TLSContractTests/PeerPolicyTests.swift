import Crypto
import Foundation
import PKI
import SwiftASN1
import Testing
import TLSContract
import X509

/// `PeerPolicy.authorizes` alone: no backend, no socket. The identities are parsed from
/// certificates issued at test time with the names each case needs.
@Suite("PeerPolicy")
struct PeerPolicyTests {
    /// One CA for every leaf of this suite ("CN=Policy Test CA,O=swift-mtls").
    static let ca: CertificateAuthority = {
        do { return try CertificateAuthority.makeRoot(commonName: "Policy Test CA") } catch { fatalError("\(error)") }
    }()

    static func identity(cn: String = "leaf", dns: [String] = [], ips: [String] = [], uris: [String] = [],
                         issuedBy authority: CertificateAuthority = ca) throws -> PeerIdentity {
        let request = LeafRequest(commonName: cn, dnsNames: dns, ipAddresses: ips, uris: uris, purposes: [.clientAuth])
        let issued = try authority.issue(request)
        return try PeerIdentity(certificateChainDER: [issued.certificateDER])
    }

    static func rule(_ kind: PeerPolicy.Rule.Kind, _ text: String) throws -> PeerPolicy.Rule {
        try PeerPolicy.Rule.parse(kind, text)
    }

    static func admits(_ rules: [(PeerPolicy.Rule.Kind, String)], _ identity: PeerIdentity?) throws -> Bool {
        try PeerPolicy(rules.map { try rule($0.0, $0.1) }).authorizes(identity).isAllowed
    }

    // MARK: Empty policy, nil identity, OR

    @Test("An empty policy admits any verified peer and refuses a peer without a certificate")
    func emptyPolicy() throws {
        let policy = PeerPolicy()
        #expect(policy.isEmpty)
        #expect(policy.authorizes(try Self.identity()) == .allowed(by: nil))
        #expect(policy.authorizes(nil) == .refused(.noCertificate))
    }

    @Test("A policy with rules refuses a peer without a certificate")
    func nilIdentity() throws {
        let policy = PeerPolicy([try Self.rule(.cn, "leaf")])
        #expect(policy.authorizes(nil) == .refused(.noCertificate))
        #expect("\(policy.authorizes(nil))" == "refused: no certificate")
    }

    @Test("Rules combine as OR; the decision names the rule that admitted, or every rule that failed")
    func orCombination() throws {
        let cn = try Self.rule(.cn, "alpha")
        let dns = try Self.rule(.dns, "beta.example.test")
        let uri = try Self.rule(.uri, "spiffe://example.test/gamma")
        let policy = PeerPolicy([cn, dns, uri])
        #expect(policy.authorizes(try Self.identity(cn: "alpha")) == .allowed(by: cn))
        #expect(policy.authorizes(try Self.identity(cn: "other", dns: ["beta.example.test"])) == .allowed(by: dns))
        #expect(policy.authorizes(try Self.identity(cn: "other", uris: ["spiffe://example.test/gamma"])) == .allowed(by: uri))
        let refused = policy.authorizes(try Self.identity(cn: "other", dns: ["delta.example.test"]))
        #expect(refused == .refused(.noRuleMatched([cn, dns, uri])))
        #expect("\(refused)" == "refused: matched none of cn(alpha), dns(beta.example.test), uri(spiffe://example.test/gamma)")
    }

    @Test("Duplicate rules collapse; equal normalized rules are equal")
    func duplicates() throws {
        let policy = PeerPolicy([try Self.rule(.dns, "API.example.test"), try Self.rule(.dns, "api.example.TEST")])
        #expect(policy.rules.count == 1)
        #expect(policy.rules[0].value == "api.example.test")
    }

    // MARK: CN

    @Test("cn: the subject CN exactly, case-sensitive, never a SAN")
    func commonName() throws {
        let identity = try Self.identity(cn: "alpha", dns: ["beta"], uris: ["spiffe://example.test/gamma"])
        #expect(try Self.admits([(.cn, "alpha")], identity))
        #expect(try !Self.admits([(.cn, "Alpha")], identity))
        #expect(try !Self.admits([(.cn, "alph")], identity))
        #expect(try !Self.admits([(.cn, "beta")], identity))
        #expect(try !Self.admits([(.cn, "spiffe://example.test/gamma")], identity))
        // The CN is not a DNS SAN either.
        #expect(try !Self.admits([(.dns, "alpha")], identity))
        #expect(throws: PeerPolicy.RuleError.self) { try Self.rule(.cn, "") }
    }

    @Test("cn: RFC 4514 specials in the CN are compared unescaped")
    func commonNameWithSpecials() throws {
        let identity = try Self.identity(cn: "a,b+c=\"d\"")
        #expect(try Self.admits([(.cn, "a,b+c=\"d\"")], identity))
        #expect(try !Self.admits([(.cn, "a\\,b+c=\"d\"")], identity))
    }

    @Test("cn: a subject with two CNs matches no cn rule")
    func severalCommonNames() throws {
        let identity = try PeerIdentity(certificateChainDER: [try Self.selfSigned(subject: DistinguishedName([
            RelativeDistinguishedName(.init(type: .RDNAttributeType.commonName, utf8String: "alpha")),
            RelativeDistinguishedName(.init(type: .RDNAttributeType.commonName, utf8String: "beta")),
        ]))])
        #expect(try !Self.admits([(.cn, "alpha")], identity))
        #expect(try !Self.admits([(.cn, "beta")], identity))
    }

    @Test("cn: a lookalike that Unicode treats as canonically equal does not match")
    func commonNameIsByteExact() throws {
        // U+037E GREEK QUESTION MARK is canonically equivalent to ";": Swift's String == says equal.
        let identity = try Self.identity(cn: "a\u{037E}b")
        #expect("a\u{037E}b" == "a;b")
        #expect(try !Self.admits([(.cn, "a;b")], identity))
        #expect(try Self.admits([(.cn, "a\u{037E}b")], identity))
    }

    // MARK: DNS

    @Test("dns: exact names ignore ASCII case, and look at DNS SANs only")
    func dnsExact() throws {
        let identity = try Self.identity(cn: "cn.example.test", dns: ["API.Example.test"], uris: ["spiffe://uri.example.test/x"])
        #expect(try Self.admits([(.dns, "api.example.test")], identity))
        #expect(try Self.admits([(.dns, "API.EXAMPLE.TEST")], identity))
        #expect(try !Self.admits([(.dns, "cn.example.test")], identity))
        #expect(try !Self.admits([(.dns, "uri.example.test")], identity))
        #expect(try !Self.admits([(.dns, "example.test")], identity))
        #expect(try !Self.admits([(.dns, "pi.example.test")], identity))
    }

    @Test("dns: *. matches exactly one leftmost label, never the parent, never across dots")
    func dnsWildcard() throws {
        let wildcard: [(PeerPolicy.Rule.Kind, String)] = [(.dns, "*.svc.example.test")]
        #expect(try Self.admits(wildcard, try Self.identity(dns: ["billing.svc.example.test"])))
        #expect(try Self.admits(wildcard, try Self.identity(dns: ["BILLING.svc.Example.test"])))
        #expect(try Self.admits(wildcard, try Self.identity(dns: ["x.svc.example.test"])))
        #expect(try !Self.admits(wildcard, try Self.identity(dns: ["svc.example.test"])))
        #expect(try !Self.admits(wildcard, try Self.identity(dns: ["a.b.svc.example.test"])))
        #expect(try !Self.admits(wildcard, try Self.identity(dns: ["billingsvc.example.test"])))
        #expect(try !Self.admits(wildcard, try Self.identity(dns: ["billing.svc.example.test.evil"])))
        #expect(try !Self.admits(wildcard, try Self.identity(dns: ["billing.xsvc.example.test"])))
        // The CN is never consulted.
        #expect(try !Self.admits(wildcard, try Self.identity(cn: "billing.svc.example.test")))
        // A certificate's own wildcard SAN is a literal label: it proves nothing about api.
        let wildcardLeaf = try Self.identity(dns: ["*.svc.example.test"])
        #expect(try !Self.admits([(.dns, "api.svc.example.test")], wildcardLeaf))
    }

    @Test("dns: internationalized names are given and compared as A-labels")
    func dnsIDNA() throws {
        let identity = try Self.identity(dns: ["xn--bcher-kva.example.test"])
        #expect(try Self.admits([(.dns, "XN--BCHER-KVA.example.test")], identity))
        #expect(try Self.admits([(.dns, "*.example.test")], identity))
        #expect(throws: PeerPolicy.RuleError.self) { try Self.rule(.dns, "bücher.example.test") }
    }

    @Test("dns: malformed patterns are refused when parsed", arguments: [
        "", "*", "*.", "*.test", "a.*.example.test", "f*o.example.test", "*foo.example.test", "**.example.test",
        "*.*.example.test", "example.test.", ".example.test", "a..example.test", "a b.example.test",
        "a/b.example.test", String(repeating: "a", count: 64) + ".example.test",
    ])
    func dnsInvalid(pattern: String) {
        #expect(throws: PeerPolicy.RuleError.self) { try Self.rule(.dns, pattern) }
    }

    // MARK: URI

    @Test("uri: exact, byte for byte, URI SANs only")
    func uriExact() throws {
        let identity = try Self.identity(cn: "spiffe://example.test/cn", dns: ["example.test"],
                                         uris: ["spiffe://example.test/ns/billing/sa/api"])
        #expect(try Self.admits([(.uri, "spiffe://example.test/ns/billing/sa/api")], identity))
        #expect(try !Self.admits([(.uri, "spiffe://example.test/ns/billing/sa/API")], identity))
        #expect(try !Self.admits([(.uri, "spiffe://example.test/ns/billing/sa")], identity))
        #expect(try !Self.admits([(.uri, "spiffe://example.test/ns/billing/sa/api/")], identity))
        #expect(try !Self.admits([(.uri, "spiffe://example.test/cn")], identity))
    }

    @Test("uri: a /* prefix matches one or more further segments, nothing else")
    func uriPrefix() throws {
        let prefix: [(PeerPolicy.Rule.Kind, String)] = [(.uri, "spiffe://prod.example/ns/billing/*")]
        for admitted in ["spiffe://prod.example/ns/billing/sa/x", "spiffe://prod.example/ns/billing/x",
                         "spiffe://prod.example/ns/billing/a/b/c/d"] {
            #expect(try Self.admits(prefix, try Self.identity(uris: [admitted])), "\(admitted)")
        }
        for refused in ["spiffe://prod.example/ns/billing", "spiffe://prod.example/ns/billing/",
                        "spiffe://prod.example/ns/billingX/sa/x", "spiffe://prod.example/ns/billingX",
                        "spiffe://prod.example/ns/billing//x", "spiffe://prod.example/ns/billing/x/",
                        "spiffe://prod.example/ns/billing/../admin", "spiffe://prod.example/ns/billing/./x",
                        "spiffe://prod.example/ns/billing/x/..", "spiffe://prod.example/ns/billing/%2e%2e/admin",
                        "spiffe://prod.example/ns/billing/x?y", "spiffe://prod.example/ns/billing/x#y",
                        "spiffe://staging.example/ns/billing/sa/x", "SPIFFE://prod.example/ns/billing/sa/x",
                        "spiffe://prod.example/ns/other/sa/x"] {
            #expect(try !Self.admits(prefix, try Self.identity(uris: [refused])), "\(refused)")
        }
        // A whole trust domain.
        #expect(try Self.admits([(.uri, "spiffe://prod.example/*")], try Self.identity(uris: ["spiffe://prod.example/a"])))
        #expect(try !Self.admits([(.uri, "spiffe://prod.example/*")], try Self.identity(uris: ["spiffe://prod.example.evil/a"])))
    }

    @Test("uri: '*' anywhere but a final /*, or a malformed URI, is refused when parsed", arguments: [
        "", "spiffe://example.test/*/x", "spiffe://example.test/a*", "spiffe://example.test/*x",
        "spiffe://example.test/a/*/*", "spiffe://*", "spiffe:///*", "*", "/*", "no-scheme/x",
        "spiffe://example.test//*", "spiffe://example.test/a?b/*", "spiffe://example.test/a b",
        "1spiffe://example.test/x", "spiffe://example.test/*.x",
    ])
    func uriInvalid(pattern: String) {
        #expect(throws: PeerPolicy.RuleError.self) { try Self.rule(.uri, pattern) }
    }

    // MARK: IP

    @Test("ip: IP SANs compared as addresses")
    func ipAddress() throws {
        let identity = try Self.identity(cn: "10.0.0.9", dns: ["10.0.0.8"], ips: ["10.0.0.1", "::1"])
        #expect(try Self.admits([(.ip, "10.0.0.1")], identity))
        #expect(try Self.admits([(.ip, "0:0::1")], identity))
        #expect(try Self.admits([(.ip, "[::1]")], identity))
        #expect(try !Self.admits([(.ip, "10.0.0.2")], identity))
        #expect(try !Self.admits([(.ip, "10.0.0.9")], identity))
        #expect(try !Self.admits([(.ip, "::ffff:10.0.0.1")], identity))
        #expect(throws: PeerPolicy.RuleError.self) { try Self.rule(.ip, "10.0.0") }
        #expect(throws: PeerPolicy.RuleError.self) { try Self.rule(.ip, "10.0.0.0/8") }
    }

    // MARK: SPKI

    @Test("spki: the leaf's SubjectPublicKeyInfo SHA-256, hex in either case")
    func spkiPin() throws {
        let identity = try Self.identity()
        let other = try Self.identity()
        let hex = identity.spkiSHA256Hex
        #expect(hex.count == 64)
        #expect(try Self.admits([(.spki, hex)], identity))
        #expect(try Self.admits([(.spki, hex.uppercased())], identity))
        #expect(try !Self.admits([(.spki, hex)], other))
        #expect(try Self.rule(.spki, hex.uppercased()).value == hex)
    }

    @Test("spki: anything but 64 hex digits is refused when parsed", arguments: [
        "", String(repeating: "a", count: 63), String(repeating: "a", count: 65), String(repeating: "g", count: 64),
        "sha256:" + String(repeating: "a", count: 64), String(repeating: "ab:", count: 21) + "a",
        " " + String(repeating: "a", count: 63),
    ])
    func spkiInvalid(hex: String) {
        #expect(throws: PeerPolicy.RuleError.self) { try Self.rule(.spki, hex) }
    }

    // MARK: Issuer

    @Test("issuer: the issuing CA's DN, in RFC 4514 order, with spaces, any case of names, long names")
    func issuerFullName() throws {
        let identity = try Self.identity()
        #expect(identity.issuer == "CN=Policy Test CA,O=swift-mtls")
        for text in ["CN=Policy Test CA,O=swift-mtls", "cn = Policy Test CA , o = swift-mtls",
                     "commonName=Policy Test CA,organizationName=swift-mtls", "OID.2.5.4.3=Policy Test CA,2.5.4.10=swift-mtls",
                     "CN=Policy\\20Test CA,O=swift-mtls", "CN=Policy Test CA;O=swift-mtls"] {
            #expect(try Self.admits([(.issuer, text)], identity), "\(text)")
            #expect(try Self.rule(.issuer, text).value == "CN=Policy Test CA,O=swift-mtls")
        }
        for text in ["O=swift-mtls,CN=Policy Test CA", "CN=policy test ca,O=swift-mtls", "CN=Policy Test CA,O=swift-mtls,C=US",
                     "CN=Policy Test CA,O=other", "O=swift-mtls", "CN=Policy Test", "CN=Policy Test CA+O=swift-mtls"] {
            #expect(try !Self.admits([(.issuer, text)], identity), "\(text)")
        }
    }

    @Test("issuer: CN=... alone matches an issuer with exactly that one CN; a leaf's own subject never counts")
    func issuerShorthand() throws {
        let identity = try Self.identity(cn: "Policy Test Leaf")
        #expect(try Self.admits([(.issuer, "CN=Policy Test CA")], identity))
        #expect(try !Self.admits([(.issuer, "CN=Policy Test Leaf")], identity))
        let otherCA = try CertificateAuthority.makeRoot(commonName: "Other CA")
        #expect(try !Self.admits([(.issuer, "CN=Policy Test CA")], try Self.identity(issuedBy: otherCA)))
        // Via an intermediate: the issuer is the intermediate, not the root.
        let intermediate = try Self.ca.makeIntermediate(commonName: "Policy Test Intermediate")
        let viaIntermediate = try Self.identity(issuedBy: intermediate)
        #expect(try Self.admits([(.issuer, "CN=Policy Test Intermediate")], viaIntermediate))
        #expect(try !Self.admits([(.issuer, "CN=Policy Test CA")], viaIntermediate))
    }

    @Test("issuer: specials in the CA's name are escaped in the canonical form and matched unescaped")
    func issuerWithSpecials() throws {
        let odd = try CertificateAuthority.makeRoot(subject: DistinguishedName([
            RelativeDistinguishedName(.init(type: .RDNAttributeType.organizationName, utf8String: "Example, Inc.")),
            RelativeDistinguishedName(.init(type: .RDNAttributeType.commonName, utf8String: "CA+1")),
        ]), notValidBefore: Date() - 3600, notValidAfter: Date() + 86400)
        let identity = try Self.identity(issuedBy: odd)
        #expect(identity.issuer == "CN=CA\\+1,O=Example\\, Inc.")
        #expect(try Self.admits([(.issuer, "CN=CA\\+1,O=Example\\, Inc.")], identity))
        #expect(try Self.admits([(.issuer, "CN=CA\\2B1,O=Example\\2C Inc.")], identity))
        #expect(try Self.admits([(.issuer, "CN=CA\\+1")], identity))
        #expect(try !Self.admits([(.issuer, "CN=CA")], identity))
        #expect(try Self.rule(.issuer, "cn=CA\\2b1 , o=Example\\, Inc.").value == "CN=CA\\+1,O=Example\\, Inc.")
    }

    @Test("issuer: a CA name with two CNs matches no CN shorthand")
    func issuerSeveralCommonNames() throws {
        let twoNames = try CertificateAuthority.makeRoot(subject: DistinguishedName([
            RelativeDistinguishedName(.init(type: .RDNAttributeType.commonName, utf8String: "Alpha CA")),
            RelativeDistinguishedName(.init(type: .RDNAttributeType.commonName, utf8String: "Beta CA")),
        ]), notValidBefore: Date() - 3600, notValidAfter: Date() + 86400)
        let identity = try Self.identity(issuedBy: twoNames)
        #expect(try !Self.admits([(.issuer, "CN=Alpha CA")], identity))
        #expect(try !Self.admits([(.issuer, "CN=Beta CA")], identity))
        #expect(try Self.admits([(.issuer, "CN=Beta CA,CN=Alpha CA")], identity))
    }

    @Test("issuer: malformed names are refused when parsed", arguments: [
        "", "Policy Test CA", "CN=", "Foo=bar", "CN=a,", "CN=#0403616263", "CN=\"quoted\"", "CN=a\\", "=x", "CN=a<b",
    ])
    func issuerInvalid(text: String) {
        #expect(throws: PeerPolicy.RuleError.self) { try Self.rule(.issuer, text) }
    }

    // MARK: Helpers

    /// A self-signed P-256 certificate with exactly `subject`.
    static func selfSigned(subject: DistinguishedName) throws -> [UInt8] {
        let key = P256.Signing.PrivateKey()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey), notValidBefore: Date() - 3600, notValidAfter: Date() + 86400,
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: Certificate.Extensions {}, issuerPrivateKey: .init(key))
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }
}
