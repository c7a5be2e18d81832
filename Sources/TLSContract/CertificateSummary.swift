import Foundation
import SwiftASN1
import X509

/// What a person needs to know about one certificate: who, issued by whom, which serial, valid
/// when. Used for reload and expiry log lines, `mtls pki inspect`, and revocation messages, so that
/// every one of them names a certificate the same way.
public struct CertificateSummary: Sendable, Hashable {
    public let der: [UInt8]
    /// RFC 4514 style, as in `PeerIdentity`.
    public let subject: String
    public let issuer: String
    /// The serial number in upper-case hex without leading zeros, as `openssl x509 -serial` prints it.
    public let serialHex: String
    public let dnsNames: [String]
    public let ipAddresses: [String]
    public let uris: [String]
    public let notValidBefore: Date
    public let notValidAfter: Date
    /// basicConstraints CA:TRUE.
    public let isCertificateAuthority: Bool

    public init(derEncoded der: [UInt8]) throws(TLSError) {
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: der)
        } catch {
            throw TLSError(.certificateRejected(.invalid), detail: "cannot parse the certificate: \(error)")
        }
        self.init(certificate, der: der)
    }

    init(_ certificate: Certificate, der: [UInt8]) {
        self.der = der
        subject = certificate.subject.description
        issuer = certificate.issuer.description
        serialHex = SerialNumbers.hex(Array(certificate.serialNumber.bytes))
        let names = SubjectAlternativeNameLists(certificate)
        dnsNames = names.dns
        ipAddresses = names.ipAddresses
        uris = names.uris
        notValidBefore = certificate.notValidBefore
        notValidAfter = certificate.notValidAfter
        if case .isCertificateAuthority = try? certificate.extensions.basicConstraints {
            isCertificateAuthority = true
        } else {
            isCertificateAuthority = false
        }
    }

    /// Every certificate in `bytes`: each CERTIFICATE block of PEM text, or one DER certificate.
    /// `name` (a file name) is named in the error when there is none or one cannot be parsed.
    public static func certificates(in bytes: [UInt8], name: String) throws(TLSError) -> [CertificateSummary] {
        var ders: [[UInt8]] = []
        if PEMBlocks.containsPEM(bytes) {
            guard let blocks = PEMBlocks.decode(bytes) else {
                throw TLSError(.configuration(file: name, problem: .invalidCertificate), detail: "a PEM block is cut short or not base64")
            }
            ders = blocks.filter { $0.label == "CERTIFICATE" || $0.label == "TRUSTED CERTIFICATE" }.map(\.der)
        } else if !bytes.isEmpty {
            ders = [bytes]
        }
        guard !ders.isEmpty else { throw TLSError(.configuration(file: name, problem: .noCertificateInPEM)) }
        var summaries: [CertificateSummary] = []
        for der in ders {
            do {
                summaries.append(try CertificateSummary(derEncoded: der))
            } catch {
                throw TLSError(.configuration(file: name, problem: .invalidCertificate), detail: error.detail)
            }
        }
        return summaries
    }

    /// The subject's CN, else the first SAN, else the subject.
    public var displayName: String {
        let commonName = subject.split(separator: ",").first { $0.hasPrefix("CN=") }.map { String($0.dropFirst(3)) }
        return commonName ?? dnsNames.first ?? uris.first ?? ipAddresses.first ?? subject
    }

    public var subjectAlternativeNames: [String] { dnsNames + ipAddresses + uris }

    public var lifetime: TimeInterval { notValidAfter.timeIntervalSince(notValidBefore) }

    /// Seconds until the certificate expires (negative once it has).
    public func timeLeft(at now: Date = Date()) -> TimeInterval { notValidAfter.timeIntervalSince(now) }

    /// True once less than a third of the certificate's lifetime is left (or it has expired): the
    /// point at which `step ca renew` and cert-manager renew, and a server should say so.
    public func isDueForRenewal(at now: Date = Date()) -> Bool {
        timeLeft(at: now) < lifetime / 3
    }
}

/// Serial numbers as both libraries compare them: the INTEGER's magnitude, without leading zeros.
enum SerialNumbers {
    static func normalized<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        let trimmed = Array(bytes.drop { $0 == 0 })
        return trimmed.isEmpty ? [0] : trimmed
    }

    static func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        normalized(bytes).map { String(format: "%02X", $0) }.joined()
    }
}

/// Durations as a person reads them in a log line: "29d 23h", "5h 12m", "45s".
public enum DurationText {
    public static func format(_ seconds: TimeInterval) -> String {
        if seconds < 0 { return "expired " + format(-seconds) + " ago" }
        let total = Int(seconds)
        let days = total / 86400, hours = (total % 86400) / 3600, minutes = (total % 3600) / 60, rest = total % 60
        if days > 0 { return hours > 0 ? "\(days)d \(hours)h" : "\(days)d" }
        if hours > 0 { return minutes > 0 ? "\(hours)h \(minutes)m" : "\(hours)h" }
        if minutes > 0 { return rest > 0 ? "\(minutes)m \(rest)s" : "\(minutes)m" }
        return "\(rest)s"
    }
}

/// Dates in log lines and messages: UTC, second precision, ISO 8601.
public enum DateText {
    public static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }
}
