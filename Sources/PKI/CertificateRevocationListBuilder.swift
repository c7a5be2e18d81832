import Foundation
import SwiftASN1
import X509

/// Why a certificate was revoked (RFC 5280 §5.3.1 CRLReason).
public enum RevocationReason: Int, CaseIterable, Sendable, CustomStringConvertible {
    case unspecified = 0
    case keyCompromise = 1
    case caCompromise = 2
    case affiliationChanged = 3
    case superseded = 4
    case cessationOfOperation = 5
    case certificateHold = 6
    case privilegeWithdrawn = 9
    case aaCompromise = 10

    /// The RFC's spelling (keyCompromise, cACompromise...), which `openssl crl -text` prints too.
    public var description: String {
        switch self {
        case .unspecified: return "unspecified"
        case .keyCompromise: return "keyCompromise"
        case .caCompromise: return "cACompromise"
        case .affiliationChanged: return "affiliationChanged"
        case .superseded: return "superseded"
        case .cessationOfOperation: return "cessationOfOperation"
        case .certificateHold: return "certificateHold"
        case .privilegeWithdrawn: return "privilegeWithdrawn"
        case .aaCompromise: return "aACompromise"
        }
    }

    /// Parses the RFC's spelling, case-insensitively.
    public init?(name: String) {
        guard let reason = Self.allCases.first(where: { $0.description.lowercased() == name.lowercased() }) else { return nil }
        self = reason
    }
}

/// A certificate revocation list as the PKI writes it: v2, signed by the CA that issued the
/// certificates it lists, with authorityKeyIdentifier and cRLNumber, and a reasonCode on entries
/// that have one.
///
/// swift-certificates parses and makes certificates but has no CRL type, so the CertificateList
/// (RFC 5280 §5.1) is encoded here with SwiftASN1 and signed with the CA's key. `parse` reads back
/// what an earlier run wrote (or `openssl ca -gencrl` made), so that a revocation keeps the entries
/// already listed and counts the CRL number up. The contract's own parser
/// (TLSContract.CertificateRevocationList) is what servers load; it shares no code with this one.
public struct CertificateRevocationListDocument: Sendable {
    public struct Entry: Sendable, Hashable {
        /// The serial number's INTEGER content bytes without leading zero bytes.
        public let serial: [UInt8]
        public let revocationDate: Date
        public let reason: RevocationReason?

        public init(serial: [UInt8], revocationDate: Date, reason: RevocationReason?) {
            self.serial = Self.normalized(serial)
            self.revocationDate = revocationDate
            self.reason = reason
        }

        /// Upper-case hex, as `openssl x509 -serial` and our logs print it.
        public var serialHex: String { serial.map { String(format: "%02X", $0) }.joined() }

        static func normalized(_ bytes: [UInt8]) -> [UInt8] {
            let trimmed = Array(bytes.drop(while: { $0 == 0 }))
            return trimmed.isEmpty ? [0] : trimmed
        }
    }

    public var issuer: DistinguishedName
    public var thisUpdate: Date
    public var nextUpdate: Date
    /// The cRLNumber extension: counts up with every CRL the issuer signs.
    public var number: Int
    public var entries: [Entry]

    public init(issuer: DistinguishedName, thisUpdate: Date, nextUpdate: Date, number: Int, entries: [Entry] = []) {
        self.issuer = issuer
        self.thisUpdate = thisUpdate
        self.nextUpdate = nextUpdate
        self.number = number
        self.entries = entries
    }

    /// Whether `serial` is listed.
    public func lists(serial: [UInt8]) -> Bool {
        let wanted = Entry.normalized(serial)
        return entries.contains { $0.serial == wanted }
    }

    /// The CertificateList, DER, signed by `authority` (whose subject must be `issuer`).
    public func signed(by authority: CertificateAuthority) throws(PKIError) -> [UInt8] {
        guard authority.subject == issuer else {
            throw .invalidArgument("a CRL for \(issuer) cannot be signed by \(authority.subject)")
        }
        guard thisUpdate < nextUpdate else {
            throw .invalidArgument("a CRL's nextUpdate must come after its thisUpdate")
        }
        let algorithm = authority.keyType.signatureAlgorithm
        return try wrapping("cannot sign the CRL of \(issuer)") {
            var tbs = DER.Serializer()
            try tbs.appendConstructedNode(identifier: .sequence) { tbs in
                try tbs.serialize(1)  // v2
                try Self.appendAlgorithmIdentifier(algorithm, into: &tbs)
                try tbs.serialize(issuer)
                try Self.appendTime(thisUpdate, into: &tbs)
                try Self.appendTime(nextUpdate, into: &tbs)
                if !entries.isEmpty {
                    try tbs.appendConstructedNode(identifier: .sequence) { list in
                        for entry in entries {
                            try list.appendConstructedNode(identifier: .sequence) { item in
                                Self.appendInteger(entry.serial, into: &item)
                                try Self.appendTime(entry.revocationDate, into: &item)
                                if let reason = entry.reason {
                                    try item.appendConstructedNode(identifier: .sequence) { extensions in
                                        var value = DER.Serializer()
                                        value.appendPrimitiveNode(identifier: .enumerated) { $0.append(UInt8(reason.rawValue)) }
                                        try Self.appendExtension(Self.reasonCodeOID, value: value.serializedBytes, into: &extensions)
                                    }
                                }
                            }
                        }
                    }
                }
                try tbs.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { tagged in
                    try tagged.appendConstructedNode(identifier: .sequence) { extensions in
                        let aki = try Certificate.Extension(
                            AuthorityKeyIdentifier(keyIdentifier: authority.certificate.keyIdentifier), critical: false)
                        try Self.appendExtension(Self.authorityKeyIdentifierOID, value: Array(aki.value), into: &extensions)
                        var number = DER.Serializer()
                        try number.serialize(self.number)
                        try Self.appendExtension(Self.crlNumberOID, value: number.serializedBytes, into: &extensions)
                    }
                }
            }
            let signedPart = tbs.serializedBytes
            let signature = try authority.key.privateKey.sign(bytes: signedPart, signatureAlgorithm: algorithm)
            var list = DER.Serializer()
            try list.appendConstructedNode(identifier: .sequence) { list in
                list.serializeRawBytes(signedPart)
                try Self.appendAlgorithmIdentifier(algorithm, into: &list)
                try list.serialize(ASN1BitString(bytes: ArraySlice(signature.rawRepresentation)))
            }
            return list.serializedBytes
        }
    }

    /// PEM text ("-----BEGIN X509 CRL-----") of a DER CRL, ending with a newline.
    public static func pem(_ der: [UInt8]) -> String {
        normalizedPEM(PEMDocument(type: "X509 CRL", derBytes: der).pemString)
    }

    /// Every "X509 CRL" block of `text`, parsed, with its DER. Signatures are not checked here (see
    /// `isSigned(by:)`).
    public static func parseAll(pem text: String) throws(PKIError) -> [(document: CertificateRevocationListDocument, der: [UInt8])] {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: text)
        } catch {
            throw .encoding("cannot read the CRL file: \(error)")
        }
        var result: [(CertificateRevocationListDocument, [UInt8])] = []
        for document in documents where document.discriminator == "X509 CRL" {
            result.append((try parse(der: document.derBytes), document.derBytes))
        }
        return result
    }

    /// Parses one DER CertificateList (v1 or v2).
    public static func parse(der: [UInt8]) throws(PKIError) -> CertificateRevocationListDocument {
        try wrapping("cannot parse a CRL") {
            let root = try DER.parse(der)
            return try DER.sequence(root, identifier: .sequence) { nodes in
                guard let signed = nodes.next() else { throw ASN1Error.invalidASN1Object(reason: "empty CRL") }
                while nodes.next() != nil {}
                return try DER.sequence(signed, identifier: .sequence) { fields in
                    var node = fields.next()
                    if node?.identifier == .integer { node = fields.next() }  // version
                    // node: the signature algorithm.
                    guard let issuerNode = fields.next() else { throw ASN1Error.invalidASN1Object(reason: "no issuer") }
                    let issuer = try DistinguishedName(derEncoded: issuerNode)
                    let thisUpdate = try time(fields.next())
                    var next = fields.next()
                    var nextUpdate = thisUpdate
                    if let candidate = next, candidate.identifier == .utcTime || candidate.identifier == .generalizedTime {
                        nextUpdate = try time(candidate)
                        next = fields.next()
                    }
                    var entries: [Entry] = []
                    if let list = next, list.identifier == .sequence {
                        try DER.sequence(list, identifier: .sequence) { items in
                            while let item = items.next() {
                                entries.append(try entry(item))
                            }
                        }
                        next = fields.next()
                    }
                    var number = 0
                    if let tagged = next, tagged.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
                        for (oid, value) in try extensions(explicitlyTagged: tagged) where oid == crlNumberOID {
                            number = try Int(derEncoded: try DER.parse(value))
                        }
                    }
                    return CertificateRevocationListDocument(issuer: issuer, thisUpdate: thisUpdate, nextUpdate: nextUpdate,
                                                             number: number, entries: entries)
                }
            }
        }
    }

    /// Whether `der` (a CRL) carries a valid signature by the key of `certificate` (a CA we made,
    /// so it signs with the algorithm its key type implies).
    public static func isSigned(_ der: [UInt8], by certificate: Certificate) -> Bool {
        guard let keyType = try? KeyType(of: certificate.publicKey), let root = try? DER.parse(der),
              let parts = try? DER.sequence(root, identifier: .sequence, { nodes -> (ArraySlice<UInt8>, ASN1BitString)? in
                  guard let signed = nodes.next(), nodes.next() != nil else { return nil }
                  return (signed.encodedBytes, try ASN1BitString(derEncoded: &nodes))
              }) ?? nil
        else { return false }
        return certificate.publicKey.isValidSignature(parts.1.bytes, for: parts.0, signatureAlgorithm: keyType.signatureAlgorithm)
    }

    // MARK: - Encoding details

    static let authorityKeyIdentifierOID: ASN1ObjectIdentifier = [2, 5, 29, 35]
    static let crlNumberOID: ASN1ObjectIdentifier = [2, 5, 29, 20]
    static let reasonCodeOID: ASN1ObjectIdentifier = [2, 5, 29, 21]

    private static func appendAlgorithmIdentifier(_ algorithm: Certificate.SignatureAlgorithm,
                                                  into serializer: inout DER.Serializer) throws {
        try serializer.appendConstructedNode(identifier: .sequence) { sequence in
            switch algorithm {
            case .sha256WithRSAEncryption:
                try sequence.serialize([1, 2, 840, 113549, 1, 1, 11] as ASN1ObjectIdentifier)
                try sequence.serialize(ASN1Null())  // RFC 4055: RSA algorithm identifiers carry NULL parameters
            case .ed25519:
                try sequence.serialize([1, 3, 101, 112] as ASN1ObjectIdentifier)
            default:
                try sequence.serialize([1, 2, 840, 10045, 4, 3, 2] as ASN1ObjectIdentifier)
            }
        }
    }

    /// RFC 5280 §5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050.
    private static func appendTime(_ date: Date, into serializer: inout DER.Serializer) throws {
        let parts = utcCalendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        let (year, month, day) = (parts.year!, parts.month!, parts.day!)
        let (hours, minutes, seconds) = (parts.hour!, parts.minute!, parts.second!)
        if year < 2050 {
            try serializer.serialize(try UTCTime(year: year, month: month, day: day, hours: hours, minutes: minutes, seconds: seconds))
        } else {
            try serializer.serialize(try GeneralizedTime(year: year, month: month, day: day, hours: hours, minutes: minutes,
                                                         seconds: seconds, fractionalSeconds: 0))
        }
    }

    /// A non-negative INTEGER from its magnitude bytes.
    private static func appendInteger(_ magnitude: [UInt8], into serializer: inout DER.Serializer) {
        serializer.appendPrimitiveNode(identifier: .integer) { bytes in
            if let first = magnitude.first, first & 0x80 != 0 { bytes.append(0) }
            bytes.append(contentsOf: magnitude)
        }
    }

    private static func appendExtension(_ oid: ASN1ObjectIdentifier, value: [UInt8], into serializer: inout DER.Serializer) throws {
        try serializer.appendConstructedNode(identifier: .sequence) { item in
            try item.serialize(oid)
            try item.serialize(ASN1OctetString(contentBytes: ArraySlice(value)))
        }
    }

    private static func entry(_ node: ASN1Node) throws -> Entry {
        try DER.sequence(node, identifier: .sequence) { fields in
            guard let serialNode = fields.next(), case .primitive(let content) = serialNode.content else {
                throw ASN1Error.invalidASN1Object(reason: "a CRL entry without a serial number")
            }
            let date = try time(fields.next())
            var reason: RevocationReason?
            if let extensionsNode = fields.next() {
                for (oid, value) in try extensionList(extensionsNode) where oid == reasonCodeOID {
                    if let code = value.last { reason = RevocationReason(rawValue: Int(code)) }
                }
            }
            return Entry(serial: Array(content), revocationDate: date, reason: reason)
        }
    }

    private static func extensions(explicitlyTagged node: ASN1Node) throws -> [(ASN1ObjectIdentifier, [UInt8])] {
        guard case .constructed(let children) = node.content else { return [] }
        var iterator = children.makeIterator()
        guard let list = iterator.next() else { return [] }
        return try extensionList(list)
    }

    private static func extensionList(_ node: ASN1Node) throws -> [(ASN1ObjectIdentifier, [UInt8])] {
        try DER.sequence(node, identifier: .sequence) { items in
            var result: [(ASN1ObjectIdentifier, [UInt8])] = []
            while let item = items.next() {
                result.append(try DER.sequence(item, identifier: .sequence) { fields in
                    let oid = try ASN1ObjectIdentifier(derEncoded: &fields)
                    var valueNode = fields.next()
                    if valueNode?.identifier == .boolean { valueNode = fields.next() }  // critical
                    guard let valueNode else { throw ASN1Error.invalidASN1Object(reason: "an extension without a value") }
                    let value = try ASN1OctetString(derEncoded: valueNode)
                    return (oid, Array(value.bytes))
                })
            }
            return result
        }
    }

    private static func time(_ node: ASN1Node?) throws -> Date {
        guard let node else { throw ASN1Error.invalidASN1Object(reason: "a time is missing") }
        var components = DateComponents()
        switch node.identifier {
        case .utcTime:
            let time = try UTCTime(derEncoded: node)
            (components.year, components.month, components.day) = (time.year, time.month, time.day)
            (components.hour, components.minute, components.second) = (time.hours, time.minutes, time.seconds)
        case .generalizedTime:
            let time = try GeneralizedTime(derEncoded: node)
            (components.year, components.month, components.day) = (time.year, time.month, time.day)
            (components.hour, components.minute, components.second) = (time.hours, time.minutes, time.seconds)
        default:
            throw ASN1Error.unexpectedFieldType(node.identifier)
        }
        guard let date = utcCalendar.date(from: components) else { throw ASN1Error.invalidASN1Object(reason: "an invalid date") }
        return date
    }

    private static let utcCalendar: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()
}
