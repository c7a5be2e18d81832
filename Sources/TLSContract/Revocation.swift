import Foundation
import SwiftASN1
import X509

/// One X.509 certificate revocation list (RFC 5280 §5), parsed once by the contract for both
/// backends. A backend also loads `der` into its own library; the contract keeps this parse to
/// word refusals the same way everywhere and to re-check peers on resumed handshakes.
public struct CertificateRevocationList: Sendable {
    /// This CRL alone, DER: what a backend loads.
    public let der: [UInt8]
    /// The file (or label) it came from, named in messages.
    public let source: String
    public let issuer: DistinguishedName
    public let thisUpdate: Date
    /// When the issuer promises the next CRL; past it, this one no longer says anything (nil: never).
    public let nextUpdate: Date?
    /// Revoked serial numbers (normalized: no leading zeros) and when each was revoked.
    public let revoked: [[UInt8]: Date]
    /// The DER of tbsCertList, the signed part.
    let signedBytes: [UInt8]
    /// Nil for an algorithm swift-certificates cannot verify: such a CRL never verifies.
    let signatureAlgorithm: Certificate.SignatureAlgorithm?
    let signature: [UInt8]

    /// Parses one DER CertificateList. Errors name `source`.
    public init(derEncoded der: [UInt8], source: String) throws(TLSError) {
        do {
            let root = try DER.parse(der)
            var signed: ASN1Node?
            var algorithm: Certificate.SignatureAlgorithm?
            var signatureBits: ASN1BitString?
            try DER.sequence(root, identifier: .sequence) { nodes in
                signed = nodes.next()
                algorithm = try Self.signatureAlgorithm(nodes.next())
                signatureBits = try ASN1BitString(derEncoded: &nodes)
            }
            guard let signed, let signatureBits else { throw ASN1Error.invalidASN1Object(reason: "incomplete CRL") }
            var issuer: DistinguishedName?
            var thisUpdate: Date?
            var nextUpdate: Date?
            var revoked: [[UInt8]: Date] = [:]
            try DER.sequence(signed, identifier: .sequence) { nodes in
                var node = nodes.next()
                if node?.identifier == .integer {  // version v2 (absent: v1)
                    node = nodes.next()
                }
                // node: the signature AlgorithmIdentifier, repeated inside the signed part.
                guard let issuerNode = nodes.next() else { throw ASN1Error.invalidASN1Object(reason: "no issuer") }
                issuer = try DistinguishedName(derEncoded: issuerNode)
                thisUpdate = try Self.time(nodes.next())
                var next = nodes.next()
                if let candidate = next, Self.isTime(candidate) {
                    nextUpdate = try Self.time(candidate)
                    next = nodes.next()
                }
                if let list = next, list.identifier == .sequence {
                    try DER.sequence(list, identifier: .sequence) { entries in
                        while let entry = entries.next() {
                            try DER.sequence(entry, identifier: .sequence) { fields in
                                let serial = try ArraySlice<UInt8>(derEncoded: &fields)
                                let date = try Self.time(fields.next())
                                while fields.next() != nil {}  // entry extensions (reason code...)
                                revoked[SerialNumbers.normalized(serial)] = date
                            }
                        }
                    }
                    next = nodes.next()
                }
                while next != nil { next = nodes.next() }  // [0] crlExtensions
            }
            guard let issuer, let thisUpdate else { throw ASN1Error.invalidASN1Object(reason: "incomplete CRL") }
            self.der = der
            self.source = source
            self.issuer = issuer
            self.thisUpdate = thisUpdate
            self.nextUpdate = nextUpdate
            self.revoked = revoked
            self.signedBytes = Array(signed.encodedBytes)
            self.signatureAlgorithm = algorithm
            self.signature = Array(signatureBits.bytes)
        } catch let error as TLSError {
            throw error
        } catch {
            throw TLSError(.configuration(file: source, problem: .invalidCRL), detail: "not a DER X.509 CRL: \(error)")
        }
    }

    /// Every CRL in a file: the X509 CRL blocks of PEM text (several may be concatenated, one per
    /// issuer), or one DER CRL. A file holding none, or anything that does not parse, is an error
    /// naming `source`.
    public static func parse(_ bytes: [UInt8], source: String) throws(TLSError) -> [CertificateRevocationList] {
        guard PEMBlocks.containsPEM(bytes) else {
            guard !bytes.isEmpty else {
                throw TLSError(.configuration(file: source, problem: .invalidCRL), detail: "the file is empty")
            }
            return [try CertificateRevocationList(derEncoded: bytes, source: source)]
        }
        guard let blocks = PEMBlocks.decode(bytes) else {
            throw TLSError(.configuration(file: source, problem: .invalidCRL), detail: "a PEM block is cut short or not base64")
        }
        let crls = blocks.filter { $0.label == "X509 CRL" }
        guard !crls.isEmpty else {
            throw TLSError(.configuration(file: source, problem: .invalidCRL), detail: "no -----BEGIN X509 CRL----- block")
        }
        var result: [CertificateRevocationList] = []
        for block in crls { result.append(try CertificateRevocationList(derEncoded: block.der, source: source)) }
        return result
    }

    /// Whether `issuerKey` signed this CRL.
    func isSigned(by issuerKey: Certificate.PublicKey) -> Bool {
        guard let signatureAlgorithm else { return false }
        return issuerKey.isValidSignature(signature, for: signedBytes, signatureAlgorithm: signatureAlgorithm)
    }

    private static func signatureAlgorithm(_ node: ASN1Node?) throws -> Certificate.SignatureAlgorithm? {
        guard let node else { throw ASN1Error.invalidASN1Object(reason: "no signature algorithm") }
        let oid: ASN1ObjectIdentifier = try DER.sequence(node, identifier: .sequence) { nodes in
            let oid = try ASN1ObjectIdentifier(derEncoded: &nodes)
            while nodes.next() != nil {}  // parameters
            return oid
        }
        switch oid {
        case [1, 2, 840, 10045, 4, 3, 2]: return .ecdsaWithSHA256
        case [1, 2, 840, 10045, 4, 3, 3]: return .ecdsaWithSHA384
        case [1, 2, 840, 10045, 4, 3, 4]: return .ecdsaWithSHA512
        case [1, 2, 840, 113549, 1, 1, 11]: return .sha256WithRSAEncryption
        case [1, 2, 840, 113549, 1, 1, 12]: return .sha384WithRSAEncryption
        case [1, 2, 840, 113549, 1, 1, 13]: return .sha512WithRSAEncryption
        case [1, 3, 101, 112]: return .ed25519
        default: return nil  // SHA-1 (below the floor) and anything else: never verifies
        }
    }

    private static func isTime(_ node: ASN1Node) -> Bool {
        node.identifier == .utcTime || node.identifier == .generalizedTime
    }

    private static func time(_ node: ASN1Node?) throws -> Date {
        guard let node else { throw ASN1Error.invalidASN1Object(reason: "a time is missing") }
        let parts: (year: Int, month: Int, day: Int, hours: Int, minutes: Int, seconds: Int)
        switch node.identifier {
        case .utcTime:
            let time = try UTCTime(derEncoded: node)
            parts = (time.year, time.month, time.day, time.hours, time.minutes, time.seconds)
        case .generalizedTime:
            let time = try GeneralizedTime(derEncoded: node)
            parts = (time.year, time.month, time.day, time.hours, time.minutes, time.seconds)
        default:
            throw ASN1Error.unexpectedFieldType(node.identifier)
        }
        var components = DateComponents()
        (components.year, components.month, components.day) = (parts.year, parts.month, parts.day)
        (components.hour, components.minute, components.second) = (parts.hours, parts.minutes, parts.seconds)
        guard let date = utcCalendar.date(from: components) else {
            throw ASN1Error.invalidASN1Object(reason: "an invalid date")
        }
        return date
    }

    private static let utcCalendar: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()
}

/// The CRLs a context checks peers against, and the one revocation rule both backends follow.
///
/// Each backend also loads every CRL into its library (OpenSSL: the X509_STORE, GnuTLS: the
/// credentials' trust list), so the library refuses a revoked certificate in the full handshake.
/// The libraries differ in what else they check, so the contract applies the whole rule itself,
/// from both backends' verification callbacks and again on every resumed handshake (`check`):
///
/// - A CRL covers a certificate when its issuer name is the certificate's issuer name **and** its
///   signature verifies with that issuer's key. The issuer is the next certificate of the peer's
///   certification path, or, for the top of the path, the trust root that signed it.
/// - Every certificate of the path is checked, leaf and intermediates (not a self-issued root:
///   distrusting a root means removing it from the trust roots).
/// - A certificate whose issuer has no CRL configured is not checked: a CRL for another CA
///   changes nothing. (OpenSSL would fail such a certificate with "unable to get CRL"; the
///   backend accepts that one error.)
/// - A CRL that names the issuer but whose signature does not verify with its key (and no other
///   CRL for it that does) refuses the certificate as `.invalid`: revocation data that cannot be
///   authenticated is not silently skipped. (OpenSSL refuses it; GnuTLS never checks CRL signatures
///   at verification time.)
/// - Of several CRLs covering one certificate, the newest current one decides (OpenSSL's choice).
/// - A CRL past its nextUpdate refuses the certificates it covers as `.crlExpired`: the issuer
///   promised a newer list, so this one can no longer vouch that they are not revoked. Fail closed,
///   like OpenSSL; GnuTLS does not look at nextUpdate when it verifies. One whose thisUpdate is in
///   the future refuses them as `.invalid`.
/// - A listed serial is refused as `.revoked`, and the message names the serial and the CRL.
public final class RevocationList: @unchecked Sendable {
    public static let empty = RevocationList(crls: [], anchorsDER: [])

    public let crls: [CertificateRevocationList]
    /// The trust roots, parsed: the issuers of the tops of certification paths.
    private let anchors: [(certificate: Certificate, der: [UInt8])]
    private let byIssuer: [DistinguishedName: [Int]]

    private let lock = NSLock()
    /// Guarded by `lock`: whether CRL `index` verifies with the issuer whose DER is the key.
    private var signatureVerdicts: [SignatureKey: Bool] = [:]
    /// Guarded by `lock`: parsed certificates of recent paths, by DER (bounded).
    private var parsed: [[UInt8]: Certificate] = [:]
    private static let parsedCapacity = 512

    private struct SignatureKey: Hashable {
        let crl: Int
        let issuerDER: [UInt8]
    }

    public init(crls: [CertificateRevocationList], anchorsDER: [[UInt8]]) {
        self.crls = crls
        self.anchors = anchorsDER.compactMap { der in (try? Certificate(derEncoded: der)).map { ($0, der) } }
        var byIssuer: [DistinguishedName: [Int]] = [:]
        for (index, crl) in crls.enumerated() { byIssuer[crl.issuer, default: []].append(index) }
        self.byIssuer = byIssuer
    }

    /// Reads and parses `configuration.crls`, and the trust roots they are checked with. Any CRL
    /// file that cannot be read or parsed is a configuration error naming it.
    public static func load(_ configuration: TLSConfiguration) throws(TLSError) -> RevocationList {
        guard !configuration.crls.isEmpty else { return .empty }
        var crls: [CertificateRevocationList] = []
        for source in configuration.crls {
            crls += try CertificateRevocationList.parse(try source.load(), source: source.name)
        }
        var anchors: [[UInt8]] = []
        for source in configuration.trustRoots {
            // Unreadable or broken roots are the backend's to report, with their own error.
            guard let bytes = try? source.load(), let blocks = PEMBlocks.decode(bytes) else { continue }
            anchors += blocks.filter { $0.label == "CERTIFICATE" }.map(\.der)
        }
        return RevocationList(crls: crls, anchorsDER: anchors)
    }

    public var isEmpty: Bool { crls.isEmpty }

    /// Revoked serials over all CRLs: the "CRL entries" of a reload's log line.
    public var entryCount: Int { crls.reduce(0) { $0 + $1.revoked.count } }

    /// Applies the rule above to a certification path (leaf first, as in
    /// `PeerIdentity.certificateChainDER`). Throws `.certificateRejected(.revoked)`,
    /// `(.crlExpired)` or `(.invalid)`.
    public func check(path: [[UInt8]], now: Date = Date()) throws(TLSError) {
        guard !crls.isEmpty else { return }
        var certificates: [Certificate] = []
        for der in path {
            guard let certificate = certificate(der) else {
                throw TLSError(.certificateRejected(.invalid), detail: "cannot parse a certificate of the peer's chain")
            }
            certificates.append(certificate)
        }
        for (index, certificate) in certificates.enumerated() {
            guard let candidates = byIssuer[certificate.issuer] else { continue }
            let issuer: (certificate: Certificate, der: [UInt8])
            if index + 1 < certificates.count, certificates[index + 1].subject == certificate.issuer {
                issuer = (certificates[index + 1], path[index + 1])
            } else if let anchor = anchor(issuing: certificate, der: path[index]) {
                issuer = anchor
            } else {
                continue  // no issuer certificate to authenticate a CRL with: not checked
            }
            let authentic = candidates.filter { isSigned(crl: $0, by: issuer) }.map { crls[$0] }
            let serial = SerialNumbers.normalized(certificate.serialNumber.bytes)
            let who = "certificate serial \(SerialNumbers.hex(serial)) (\(certificate.subject))"
            guard !authentic.isEmpty else {
                let files = Set(candidates.map { crls[$0].source }).sorted().joined(separator: ", ")
                throw TLSError(.certificateRejected(.invalid),
                               detail: "the CRL for \(certificate.issuer) in \(files) is not signed by that CA's key, so the revocation status of \(who) is unknown")
            }
            let current = authentic.filter { $0.thisUpdate <= now && ($0.nextUpdate.map { now <= $0 } ?? true) }
            let deciding = (current.isEmpty ? authentic : current).max { $0.thisUpdate < $1.thisUpdate }!
            if let nextUpdate = deciding.nextUpdate, now > nextUpdate {
                throw TLSError(.certificateRejected(.crlExpired),
                               detail: "the CRL for \(certificate.issuer) in \(deciding.source) expired at \(DateText.format(nextUpdate)) (its nextUpdate), so it cannot vouch for \(who); install a fresh CRL")
            }
            if deciding.thisUpdate > now {
                throw TLSError(.certificateRejected(.invalid),
                               detail: "the CRL for \(certificate.issuer) in \(deciding.source) is not valid before \(DateText.format(deciding.thisUpdate)) (check the clocks)")
            }
            if let revokedAt = deciding.revoked[serial] {
                throw TLSError(.certificateRejected(.revoked),
                               detail: "\(who) was revoked at \(DateText.format(revokedAt)) by \(certificate.issuer) (CRL \(deciding.source))")
            }
        }
    }

    /// A revocation refusal for one certificate when only the library knows why (it reported the
    /// certificate revoked, and the contract's check found nothing): still names the serial.
    public static func revokedByLibrary(_ certificateDER: [UInt8]?, library: String) -> TLSError {
        guard let der = certificateDER, let summary = try? CertificateSummary(derEncoded: der) else {
            return TLSError(.certificateRejected(.revoked), detail: "\(library) found the peer's certificate in a CRL")
        }
        return TLSError(.certificateRejected(.revoked),
                        detail: "certificate serial \(summary.serialHex) (\(summary.subject)) is listed in a CRL (\(library))")
    }

    private func certificate(_ der: [UInt8]) -> Certificate? {
        if let known = lock.withLock({ parsed[der] }) { return known }
        guard let certificate = try? Certificate(derEncoded: der) else { return nil }
        lock.withLock {
            if parsed.count >= Self.parsedCapacity { parsed.removeAll(keepingCapacity: true) }
            parsed[der] = certificate
        }
        return certificate
    }

    /// The trust root that signed `certificate` (several roots may share a name during a rotation).
    private func anchor(issuing certificate: Certificate, der: [UInt8]) -> (certificate: Certificate, der: [UInt8])? {
        let named = anchors.filter { $0.certificate.subject == certificate.issuer }
        if named.count == 1 { return named[0] }
        return named.first { $0.certificate.publicKey.isValidSignature(certificate.signature, for: certificate) }
    }

    private func isSigned(crl index: Int, by issuer: (certificate: Certificate, der: [UInt8])) -> Bool {
        let key = SignatureKey(crl: index, issuerDER: issuer.der)
        if let known = lock.withLock({ signatureVerdicts[key] }) { return known }
        let verdict = crls[index].isSigned(by: issuer.certificate.publicKey)
        lock.withLock {
            // Verified chains only reach here, so the issuers are few; bounded all the same.
            if signatureVerdicts.count >= Self.parsedCapacity { signatureVerdicts.removeAll(keepingCapacity: true) }
            signatureVerdicts[key] = verdict
        }
        return verdict
    }
}
