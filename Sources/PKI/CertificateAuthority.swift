import Foundation
import SwiftASN1
import X509

/// A root or intermediate CA that can issue leaves and intermediates.
///
/// Roots and intermediates carry basicConstraints CA:TRUE (critical; intermediates pathLen 0 by
/// default), keyUsage keyCertSign + cRLSign (critical) and a subject key identifier; everything a
/// CA issues carries an authority key identifier equal to the CA's subject key identifier.
public struct CertificateAuthority: Sendable {
    /// This CA's own certificate.
    public let certificate: Certificate
    let key: KeyPair
    /// PEM of the intermediates above this CA, nearest first, without the root.
    let intermediatesAbovePEM: String
    /// Whether this CA is self-signed (a trust anchor) rather than an intermediate.
    public let isRoot: Bool

    public let certificatePEM: String
    public let certificateDER: [UInt8]

    /// PKCS#8.
    public var privateKeyPEM: String { key.pkcs8PEM }
    public var keyType: KeyType { key.keyType }
    /// For an intermediate: its certificate plus the intermediates above it (never the root).
    /// For a root: "".
    public var chainPEM: String { isRoot ? "" : certificatePEM + intermediatesAbovePEM }
    public var subject: DistinguishedName { certificate.subject }
    public var commonName: String? { certificate.commonName }

    init(certificate: Certificate, key: KeyPair, intermediatesAbovePEM: String, isRoot: Bool) throws(PKIError) {
        self.certificate = certificate
        self.key = key
        self.intermediatesAbovePEM = intermediatesAbovePEM
        self.isRoot = isRoot
        self.certificatePEM = try pemString(certificate)
        self.certificateDER = try derBytes(certificate)
    }

    /// Loads an existing CA (for example ca.pem + ca.key written by `PKIWriter`).
    /// `intermediatesAbovePEM` holds the intermediates between this CA and its root, nearest first
    /// ("" for a root or an intermediate signed directly by the root). The key may be PKCS#8, SEC1 or PKCS#1.
    public init(certificatePEM: String, privateKeyPEM: String, intermediatesAbovePEM: String = "") throws {
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw PKIError.invalidCertificateAuthority("cannot parse the CA certificate: \(error)")
        }
        let key = try KeyPair.parse(pem: privateKeyPEM)
        guard key.publicKey == certificate.publicKey else {
            throw PKIError.invalidCertificateAuthority("the private key does not belong to certificate \(certificate.subject)")
        }
        guard case .isCertificateAuthority = try? certificate.extensions.basicConstraints else {
            throw PKIError.invalidCertificateAuthority("certificate \(certificate.subject) is not a CA certificate (basicConstraints CA:TRUE is missing)")
        }
        var above = ""
        if !intermediatesAbovePEM.isEmpty {
            do {
                for document in try PEMDocument.parseMultiple(pemString: intermediatesAbovePEM) {
                    above += try pemString(try Certificate(pemDocument: document))
                }
            } catch {
                throw PKIError.invalidCertificateAuthority("cannot parse the intermediates above the CA: \(error)")
            }
        }
        let selfIssued = certificate.subject == certificate.issuer
            && certificate.publicKey.isValidSignature(certificate.signature, for: certificate)
        try self.init(certificate: certificate, key: key, intermediatesAbovePEM: selfIssued ? "" : above, isRoot: selfIssued)
    }

    /// A self-signed root CA with subject "O=`organization`, CN=`commonName`", valid from an hour
    /// ago for `validFor` seconds.
    public static func makeRoot(
        commonName: String,
        organization: String = PKIDefaults.organization,
        keyType: KeyType = .ecdsaP256,
        validFor: TimeInterval = PKIDefaults.rootValidity
    ) throws -> CertificateAuthority {
        try makeRoot(
            subject: try CertificateFactory.distinguishedName(commonName: commonName, organization: organization),
            keyType: keyType,
            notValidBefore: PKIDefaults.notValidBefore(),
            notValidAfter: Date().addingTimeInterval(validFor))
    }

    /// A self-signed root CA with exactly `subject` and this validity period.
    public static func makeRoot(
        subject: DistinguishedName,
        keyType: KeyType = .ecdsaP256,
        notValidBefore: Date,
        notValidAfter: Date
    ) throws -> CertificateAuthority {
        guard !subject.isEmpty else { throw PKIError.invalidArgument("a CA subject must not be empty") }
        let key = try KeyPair.generate(keyType)
        let ski = SubjectKeyIdentifier(hash: key.publicKey).keyIdentifier
        let certificate = try CertificateFactory.sign(
            publicKey: key.publicKey, subject: subject, subjectKeyIdentifier: ski,
            notValidBefore: notValidBefore, notValidAfter: notValidAfter,
            basicConstraints: .isCertificateAuthority(maxPathLength: nil),
            keyUsage: KeyUsage(keyCertSign: true, cRLSign: true),
            signer: Signer(name: subject, key: key, subjectKeyIdentifier: ski))
        return try CertificateAuthority(certificate: certificate, key: key, intermediatesAbovePEM: "", isRoot: true)
    }

    /// An intermediate CA signed by this CA, with subject "O=`organization`, CN=`commonName`" and
    /// basicConstraints pathLen `pathLength` (0: it can sign leaves only).
    public func makeIntermediate(
        commonName: String,
        organization: String = PKIDefaults.organization,
        keyType: KeyType = .ecdsaP256,
        validFor: TimeInterval = PKIDefaults.intermediateValidity,
        pathLength: Int = 0
    ) throws -> CertificateAuthority {
        guard pathLength >= 0 else { throw PKIError.invalidArgument("pathLength must not be negative") }
        if case .isCertificateAuthority(let maxPathLength?) = try? certificate.extensions.basicConstraints,
           pathLength >= maxPathLength {
            throw PKIError.pathLengthExceeded(issuer: displayName(of: certificate))
        }
        let subject = try CertificateFactory.distinguishedName(commonName: commonName, organization: organization)
        guard !subject.isEmpty else { throw PKIError.invalidArgument("a CA subject must not be empty") }
        let key = try KeyPair.generate(keyType)
        let issued = try CertificateFactory.sign(
            publicKey: key.publicKey, subject: subject,
            notValidBefore: PKIDefaults.notValidBefore(), notValidAfter: Date().addingTimeInterval(validFor),
            basicConstraints: .isCertificateAuthority(maxPathLength: pathLength),
            keyUsage: KeyUsage(keyCertSign: true, cRLSign: true),
            signer: signer)
        return try CertificateAuthority(certificate: issued, key: key, intermediatesAbovePEM: chainPEM, isRoot: false)
    }

    /// A different key with exactly this CA's subject DN (the "forged same-DN CA" attack fixture).
    ///
    /// The twin is a self-signed root with the same subject, validity, basicConstraints and even the
    /// same subject key identifier, so leaves it issues name this CA as issuer in both the issuer DN
    /// and the authority key identifier: only the signature check can tell them apart.
    public func makeForgedTwin() throws -> CertificateAuthority {
        let key = try KeyPair.generate(keyType)
        let ski = certificate.keyIdentifier
        let basicConstraints = (try? certificate.extensions.basicConstraints) ?? .isCertificateAuthority(maxPathLength: nil)
        let forged = try CertificateFactory.sign(
            publicKey: key.publicKey, subject: subject, subjectKeyIdentifier: ski,
            notValidBefore: certificate.notValidBefore, notValidAfter: certificate.notValidAfter,
            basicConstraints: basicConstraints,
            keyUsage: KeyUsage(keyCertSign: true, cRLSign: true),
            signer: Signer(name: subject, key: key, subjectKeyIdentifier: ski))
        return try CertificateAuthority(certificate: forged, key: key, intermediatesAbovePEM: "", isRoot: true)
    }

    /// Issues an end-entity certificate with a fresh key of `request.keyType`. Its `chainPEM` is the
    /// leaf followed by this CA's `chainPEM`. The leaf's validity is not clamped to the CA's, so
    /// expired and not-yet-valid fixtures can be made.
    public func issue(_ request: LeafRequest) throws -> IssuedCertificate {
        let leafKey = try KeyPair.generate(request.keyType)
        let signer = self.signer
        let certificate = try CertificateFactory.signLeaf(request, key: leafKey) { _, _ in signer }
        return try IssuedCertificate(certificate: certificate, intermediatesPEM: chainPEM, key: leafKey)
    }

    var signer: Signer {
        Signer(name: certificate.subject, key: key, subjectKeyIdentifier: certificate.keyIdentifier)
    }

    private func displayName(of certificate: Certificate) -> String {
        certificate.commonName ?? certificate.subject.description
    }
}
