import Foundation
import PKI
import TLSContract

/// Certificate revocation lists for tests, made by the PKI's CRL builder (the one `mtls pki revoke`
/// uses), so that tests and the command share one implementation. The contract's CRL parser does
/// not share code with that builder, and PKITests check the builder's CRLs against `openssl crl`
/// and `openssl verify -crl_check`, an implementation that is not ours.
public enum CRLFactory {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// A CRL signed by `authority`, listing `revoked` (certificates of any issuer: only their
    /// serial numbers go in, as a CA would list them). v2, with authorityKeyIdentifier and crlNumber.
    public static func make(
        by authority: CertificateAuthority, revoking revoked: [IssuedCertificate] = [],
        thisUpdate: Date = Date().addingTimeInterval(-60), nextUpdate: Date = Date().addingTimeInterval(86400),
        der: Bool = false
    ) throws -> [UInt8] {
        let serials = try revoked.map { try CertificateSummary(derEncoded: $0.certificateDER).serialHex }
        return try make(by: authority, revokingSerials: serials, thisUpdate: thisUpdate, nextUpdate: nextUpdate, der: der)
    }

    /// The same, by serial number (upper-case hex).
    public static func make(
        by authority: CertificateAuthority, revokingSerials serials: [String],
        thisUpdate: Date = Date().addingTimeInterval(-60), nextUpdate: Date = Date().addingTimeInterval(86400),
        der: Bool = false
    ) throws -> [UInt8] {
        var entries: [CertificateRevocationListDocument.Entry] = []
        for serial in serials {
            guard let bytes = bytes(hex: serial) else { throw Failure(description: "'\(serial)' is not a hex serial number") }
            entries.append(.init(serial: bytes, revocationDate: thisUpdate, reason: nil))
        }
        let document = CertificateRevocationListDocument(
            issuer: authority.subject, thisUpdate: thisUpdate, nextUpdate: nextUpdate, number: 1000, entries: entries)
        let signed = try document.signed(by: authority)
        return der ? signed : Array(CertificateRevocationListDocument.pem(signed).utf8)
    }

    /// The same, for a CA given as PEM text (e.g. the ca.pem and ca.key of `mtls pki init`).
    public static func make(
        caCertificatePEM: String, caKeyPEM: String, revokingSerials serials: [String],
        thisUpdate: Date = Date().addingTimeInterval(-60), nextUpdate: Date = Date().addingTimeInterval(86400),
        der: Bool = false
    ) throws -> [UInt8] {
        let authority = try CertificateAuthority(certificatePEM: caCertificatePEM, privateKeyPEM: caKeyPEM)
        return try make(by: authority, revokingSerials: serials, thisUpdate: thisUpdate, nextUpdate: nextUpdate, der: der)
    }

    private static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.count % 2 == 0 ? hex : "0" + hex)
        var result: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(digits[index...index + 1]), radix: 16) else { return nil }
            result.append(byte)
        }
        return result
    }
}

extension TLSConfiguration.Source {
    /// In-memory CRL bytes as a source.
    public static func crl(_ bytes: [UInt8], label: String) -> TLSConfiguration.Source {
        .bytes(bytes, label: label)
    }
}
