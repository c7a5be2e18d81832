import Foundation
import PKI
import TLSContract

/// Leaves that probe one verification rule each (see PeerVerification), issued by the shared
/// P-256 test root, generated once per process on first use.
public struct PolicyFixtures: Sendable {
    public let pki: TestPKI
    /// Subject CN "localhost" and no SAN at all: a name found only in the CN.
    public let serverWithNameOnlyInCN: IssuedCertificate
    /// DNS SAN "*.wild.test" only.
    public let wildcardServer: IssuedCertificate
    /// The usual names, EKU anyExtendedKeyUsage only.
    public let serverWithOnlyAnyUsage: IssuedCertificate
    public let clientWithOnlyAnyUsage: IssuedCertificate
    /// The usual names, no EKU extension at all (unrestricted).
    public let serverWithoutUsage: IssuedCertificate
    public let clientWithoutUsage: IssuedCertificate
    /// The usual client names, but EKU serverAuth on a server leaf: clientAuth only.
    public let serverWithOnlyClientAuth: IssuedCertificate
    /// A chain of `PeerVerification.maximumChainLength` intermediates under the root, and a client
    /// leaf at the bottom: one certificate too many below the root.
    public let clientWithTooLongChain: IssuedCertificate
    /// The client leaf, then certificates that are not on its path (another CA, another leaf).
    public let paddedClientChainPEM: String

    public static let shared: PolicyFixtures = {
        do { return try PolicyFixtures(pki: .shared(.ecdsaP256)) } catch { fatalError("cannot generate policy fixtures: \(error)") }
    }()

    init(pki: TestPKI) throws {
        self.pki = pki
        var cnOnly = LeafRequest(commonName: "localhost", purposes: [.serverAuth])
        cnOnly.dnsNames = []
        serverWithNameOnlyInCN = try pki.root.issue(cnOnly)
        wildcardServer = try pki.root.issue(LeafRequest(commonName: "wild", dnsNames: ["*.wild.test"], purposes: [.serverAuth]))
        var anyServer = LeafRequest.server(names: TestPKI.serverNames)
        anyServer.purposes = [.anyExtendedKeyUsage]
        serverWithOnlyAnyUsage = try pki.root.issue(anyServer)
        var anyClient = LeafRequest.client(name: TestPKI.clientName)
        anyClient.purposes = [.anyExtendedKeyUsage]
        clientWithOnlyAnyUsage = try pki.root.issue(anyClient)
        var bareServer = LeafRequest.server(names: TestPKI.serverNames)
        bareServer.purposes = []
        serverWithoutUsage = try pki.root.issue(bareServer)
        var bareClient = LeafRequest.client(name: TestPKI.clientName)
        bareClient.purposes = []
        clientWithoutUsage = try pki.root.issue(bareClient)
        var clientAuthServer = LeafRequest.server(names: TestPKI.serverNames)
        clientAuthServer.purposes = [.clientAuth]
        serverWithOnlyClientAuth = try pki.root.issue(clientAuthServer)

        var issuer = pki.root
        for level in 1...PeerVerification.maximumChainLength {
            issuer = try issuer.makeIntermediate(commonName: "swift-mtls Test Level \(level)", keyType: .ecdsaP256,
                                                 pathLength: PeerVerification.maximumChainLength - level)
        }
        clientWithTooLongChain = try issuer.issue(LeafRequest.client(name: "deep-client.swift-mtls.test"))
        paddedClientChainPEM = pki.client.chainPEM + pki.rogueRoot.certificatePEM + pki.rogueClient.chainPEM
            + pki.intermediate.certificatePEM
    }

    /// A PEM identity whose chain is `chainPEM` and whose key is `certificate`'s.
    public func identity(chainPEM: String, keyOf certificate: IssuedCertificate) -> TLSConfiguration.Identity {
        .pem(certificateChain: .pem(chainPEM, label: "padded chain.pem"),
             privateKey: .pem(certificate.privateKeyPEM, label: "padded key.pem"))
    }
}
