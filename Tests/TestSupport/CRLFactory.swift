import Foundation
import PKI
import TLSContract

/// Certificate revocation lists made at test time by the openssl CLI (`openssl ca -gencrl` over a
/// throw-away CA database), so that the contract's CRL parser is tested against an implementation
/// that is not ours. swift-certificates cannot make CRLs.
public enum CRLFactory {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// A CRL signed by `authority`, listing `revoked` (certificates of any issuer: only their
    /// serial numbers go in, as a CA would list them). v2, with authorityKeyIdentifier and
    /// crlNumber, as `openssl ca` makes them with the usual configuration.
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
        try make(caCertificatePEM: authority.certificatePEM, caKeyPEM: authority.privateKeyPEM, revokingSerials: serials,
                 thisUpdate: thisUpdate, nextUpdate: nextUpdate, der: der)
    }

    /// The same, for a CA given as PEM text (e.g. the ca.pem and ca.key of `mtls pki init`).
    public static func make(
        caCertificatePEM: String, caKeyPEM: String, revokingSerials serials: [String],
        thisUpdate: Date = Date().addingTimeInterval(-60), nextUpdate: Date = Date().addingTimeInterval(86400),
        der: Bool = false
    ) throws -> [UInt8] {
        let directory = try TemporaryDirectory(prefix: "mtls-crl")
        let revokedAt = timestamp(thisUpdate, short: true)
        let expiry = timestamp(Date().addingTimeInterval(365 * 86400), short: true)
        let index = serials.map { serial in
            let even = serial.count % 2 == 0 ? serial : "0" + serial
            return "R\t\(expiry)\t\(revokedAt)\t\(even)\tunknown\t/CN=revoked-\(even)\n"
        }.joined()
        try directory.write("index.txt", index)
        try directory.write("crlnumber", "1000\n")
        let caCertificate = try directory.write("ca.pem", caCertificatePEM)
        let caKey = try directory.write("ca.key", caKeyPEM)
        let configuration = try directory.write("ca.cnf", """
            [ ca ]
            default_ca = test_ca
            [ test_ca ]
            database = \(directory.file("index.txt"))
            crlnumber = \(directory.file("crlnumber"))
            default_md = default
            crl_extensions = crl_extensions
            [ crl_extensions ]
            authorityKeyIdentifier = keyid:always

            """)
        let pem = directory.file("crl.pem")
        let result = try runTool("openssl", [
            "ca", "-gencrl", "-batch", "-config", configuration, "-cert", caCertificate, "-keyfile", caKey,
            "-crl_lastupdate", timestamp(thisUpdate, short: false), "-crl_nextupdate", timestamp(nextUpdate, short: false),
            "-out", pem,
        ])
        guard result.succeeded else { throw Failure(description: "openssl ca -gencrl failed: \(result.output)") }
        guard der else { return Array(try Data(contentsOf: URL(fileURLWithPath: pem))) }
        let derPath = directory.file("crl.der")
        let converted = try runTool("openssl", ["crl", "-in", pem, "-outform", "DER", "-out", derPath])
        guard converted.succeeded else { throw Failure(description: "openssl crl -outform DER failed: \(converted.output)") }
        return Array(try Data(contentsOf: URL(fileURLWithPath: derPath)))
    }

    /// YYYYMMDDHHMMSSZ (or YYMMDDHHMMSSZ for the CA database), UTC.
    private static func timestamp(_ date: Date, short: Bool) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = short ? "yyMMddHHmmss'Z'" : "yyyyMMddHHmmss'Z'"
        return formatter.string(from: date)
    }
}

extension TLSConfiguration.Source {
    /// In-memory CRL bytes as a source.
    public static func crl(_ bytes: [UInt8], label: String) -> TLSConfiguration.Source {
        .bytes(bytes, label: label)
    }
}
