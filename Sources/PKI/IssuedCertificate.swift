import Foundation
import X509

/// An end-entity certificate with its private key, in the forms TLS libraries load.
public struct IssuedCertificate: Sendable {
    /// The leaf only, PEM.
    public let certificatePEM: String
    /// The leaf followed by the intermediates between it and the root: what a peer presents.
    /// Never includes the root.
    public let chainPEM: String
    /// PKCS#8 ("-----BEGIN PRIVATE KEY-----").
    public let privateKeyPEM: String
    /// The leaf only, DER.
    public let certificateDER: [UInt8]
    /// The parsed leaf.
    public let certificate: Certificate
    public let keyType: KeyType

    /// The subject CN, if any.
    public var commonName: String? { certificate.commonName }

    init(certificate: Certificate, intermediatesPEM: String, key: KeyPair) throws(PKIError) {
        self.certificate = certificate
        self.certificatePEM = try pemString(certificate)
        self.chainPEM = certificatePEM + intermediatesPEM
        self.privateKeyPEM = key.pkcs8PEM
        self.certificateDER = try derBytes(certificate)
        self.keyType = key.keyType
    }

    /// A self-signed end-entity certificate (basicConstraints CA:FALSE, keyUsage digitalSignature,
    /// plus keyEncipherment for RSA), for pinning tests and "unknown issuer" fixtures.
    public static func selfSigned(_ request: LeafRequest) throws -> IssuedCertificate {
        let key = try KeyPair.generate(request.keyType)
        let certificate = try CertificateFactory.signLeaf(request, key: key) { subject, ski in
            Signer(name: subject, key: key, subjectKeyIdentifier: ski)
        }
        return try IssuedCertificate(certificate: certificate, intermediatesPEM: "", key: key)
    }
}
