import Foundation
import PKI
import TLSContract

/// Certificates for the conformance tests, generated once per process and key type (the first
/// `shared(_:)` call for a key type generates it; Swift's lazy `static let` makes that thread-safe).
///
/// Every leaf and CA uses keys of `keyType`. The "bad" fixtures differ from the good ones in exactly
/// one way, so a refusal can only have one cause.
public struct TestPKI: Sendable {
    public static let serverNames = ["localhost", "127.0.0.1", "::1"]
    public static let clientName = "client.swift-mtls.test"
    public static let clientURI = "spiffe://swift-mtls.test/client"

    public let keyType: KeyType

    /// "swift-mtls Test Root".
    public let root: CertificateAuthority
    /// "swift-mtls Test Intermediate", signed by `root`.
    public let intermediate: CertificateAuthority

    /// localhost, 127.0.0.1, ::1; EKU serverAuth; signed by `root`.
    public let server: IssuedCertificate
    /// CN client.swift-mtls.test, SANs DNS client.swift-mtls.test and URI spiffe://swift-mtls.test/client;
    /// EKU clientAuth; signed by `root`.
    public let client: IssuedCertificate
    /// As `server` / `client`, but signed by `intermediate`; their `chainPEM` includes the intermediate.
    public let serverViaIntermediate: IssuedCertificate
    public let clientViaIntermediate: IssuedCertificate

    /// Validity ended yesterday.
    public let expiredClient: IssuedCertificate
    public let expiredServer: IssuedCertificate
    /// Validity starts tomorrow.
    public let notYetValidClient: IssuedCertificate
    public let notYetValidServer: IssuedCertificate
    /// EKU serverAuth only.
    public let clientWithoutClientAuth: IssuedCertificate
    /// Another CA with a different name ("swift-mtls Rogue Root"), and leaves it signed.
    public let rogueRoot: CertificateAuthority
    public let rogueClient: IssuedCertificate
    public let rogueServer: IssuedCertificate
    /// A different key with exactly `root`'s subject (and subject key identifier), and leaves it signed.
    public let forgedRoot: CertificateAuthority
    public let forgedClient: IssuedCertificate
    public let forgedServer: IssuedCertificate
    /// Self-signed leaves (CA:FALSE) with the usual names and EKUs.
    public let selfSignedClient: IssuedCertificate
    public let selfSignedServer: IssuedCertificate
    /// Signed by `root`, but its only SAN is DNS "other.example".
    public let serverWithWrongNames: IssuedCertificate

    /// The fixtures for `keyType`, generated on first use.
    public static func shared(_ keyType: KeyType) -> TestPKI {
        switch keyType {
        case .ecdsaP256: return p256
        case .rsa2048: return rsa2048
        case .rsa3072: return rsa3072
        case .ed25519: return ed25519
        }
    }

    private static let p256 = generate(.ecdsaP256)
    private static let rsa2048 = generate(.rsa2048)
    private static let rsa3072 = generate(.rsa3072)
    private static let ed25519 = generate(.ed25519)

    private static func generate(_ keyType: KeyType) -> TestPKI {
        do {
            return try TestPKI(keyType: keyType)
        } catch {
            fatalError("cannot generate the \(keyType) test PKI: \(error)")
        }
    }

    /// Generates a fresh set (prefer `shared(_:)`; this is for tests that need their own keys).
    public init(keyType: KeyType) throws {
        let day: TimeInterval = 86400
        let now = Date()
        func serverRequest(_ commonName: String? = nil, names: [String] = TestPKI.serverNames) -> LeafRequest {
            var request = LeafRequest.server(names: names, keyType: keyType)
            if let commonName { request.commonName = commonName }
            return request
        }
        func clientRequest(_ name: String = TestPKI.clientName) -> LeafRequest {
            var request = LeafRequest.client(name: name, keyType: keyType)
            request.uris.append(TestPKI.clientURI)
            return request
        }
        func expired(_ request: LeafRequest) -> LeafRequest {
            var request = request
            request.notValidBefore = now - 30 * day
            request.notValidAfter = now - day
            return request
        }
        func notYetValid(_ request: LeafRequest) -> LeafRequest {
            var request = request
            request.notValidBefore = now + day
            request.notValidAfter = now + 30 * day
            return request
        }

        self.keyType = keyType
        root = try CertificateAuthority.makeRoot(commonName: "swift-mtls Test Root", keyType: keyType)
        intermediate = try root.makeIntermediate(commonName: "swift-mtls Test Intermediate", keyType: keyType)

        server = try root.issue(serverRequest())
        client = try root.issue(clientRequest())
        serverViaIntermediate = try intermediate.issue(serverRequest())
        clientViaIntermediate = try intermediate.issue(clientRequest())

        expiredClient = try root.issue(expired(clientRequest("expired-client.swift-mtls.test")))
        expiredServer = try root.issue(expired(serverRequest("swift-mtls expired server")))
        notYetValidClient = try root.issue(notYetValid(clientRequest("not-yet-valid-client.swift-mtls.test")))
        notYetValidServer = try root.issue(notYetValid(serverRequest("swift-mtls not-yet-valid server")))
        var serverAuthOnly = clientRequest("server-auth-only-client.swift-mtls.test")
        serverAuthOnly.purposes = [.serverAuth]
        clientWithoutClientAuth = try root.issue(serverAuthOnly)

        rogueRoot = try CertificateAuthority.makeRoot(commonName: "swift-mtls Rogue Root", keyType: keyType)
        rogueClient = try rogueRoot.issue(clientRequest("rogue-client.swift-mtls.test"))
        rogueServer = try rogueRoot.issue(serverRequest("swift-mtls rogue server"))

        forgedRoot = try root.makeForgedTwin()
        forgedClient = try forgedRoot.issue(clientRequest("forged-client.swift-mtls.test"))
        forgedServer = try forgedRoot.issue(serverRequest("swift-mtls forged server"))

        selfSignedClient = try IssuedCertificate.selfSigned(clientRequest("self-signed-client.swift-mtls.test"))
        selfSignedServer = try IssuedCertificate.selfSigned(serverRequest("swift-mtls self-signed server"))
        serverWithWrongNames = try root.issue(serverRequest(names: ["other.example"]))
    }

    /// `certificate` as a PEM identity: its chain (leaf + intermediates) and its PKCS#8 key.
    public func identity(_ certificate: IssuedCertificate) -> TLSConfiguration.Identity {
        let name = "\(certificate.commonName ?? "certificate") (\(keyType))"
        return .pem(certificateChain: .pem(certificate.chainPEM, label: "\(name) chain.pem"),
                    privateKey: .pem(certificate.privateKeyPEM, label: "\(name) key.pem"))
    }

    /// `root` as the only trust root.
    public var trustRoots: [TLSConfiguration.Source] {
        [trustRoot(root)]
    }

    /// A CA's certificate as a trust root source.
    public func trustRoot(_ authority: CertificateAuthority) -> TLSConfiguration.Source {
        .pem(authority.certificatePEM, label: "\(authority.commonName ?? "CA") (\(keyType)).pem")
    }
}
