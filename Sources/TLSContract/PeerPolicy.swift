/// Which verified peers may talk to us: typed rules on the peer's certificate, decided by one pure
/// function of a `PeerIdentity`. Servers (`--allow-*`) and clients (`--verify-*`) use the same type;
/// the Loop runs it at handshake completion, on full and resumed handshakes alike, through
/// `ConnectionOptions.authorize`, before the application sees or sends a byte.
///
/// - Several rules combine as OR: a peer is admitted if any one rule matches.
/// - An empty policy admits any verified peer (chain verification is the backends' job; the
///   policy only narrows who, among verified peers, is admitted).
/// - A nil identity (no certificate: `--client-auth optional`, or a TLS-only server) is refused by
///   every policy, the empty one included. An application that admits anonymous peers installs
///   no policy at all.
///
/// Each rule looks at one field of the leaf certificate only:
///
/// | rule | looks at | comparison |
/// |---|---|---|
/// | `cn` | the subject's CN (never a SAN) | exact, byte for byte; a subject with several CNs matches none |
/// | `dns` | DNS SANs only | ASCII case-insensitive; `*.parent` matches exactly one extra leftmost label |
/// | `uri` | URI SANs only | exact, byte for byte; or a prefix ending in `/*` matching one or more further path segments |
/// | `ip` | IP SANs only | the address's octets (so `::1` and `0:0::1` are the same) |
/// | `spki` | SHA-256 of the leaf's SubjectPublicKeyInfo | the 32 bytes (hex is case-insensitive) |
/// | `issuer` | the leaf's issuer DN (the subject of the CA that signed it) | attribute for attribute, values exact |
///
/// Strings are compared as UTF-8 bytes, never with `String ==` (which applies Unicode canonical
/// equivalence: U+037E GREEK QUESTION MARK would equal ";").
public struct PeerPolicy: Sendable, Hashable, CustomStringConvertible {
    public private(set) var rules: [Rule]

    public init(_ rules: [Rule] = []) {
        self.rules = []
        for rule in rules where !self.rules.contains(rule) { self.rules.append(rule) }
    }

    public var isEmpty: Bool { rules.isEmpty }

    /// Admits `identity` if any rule matches it (or, for an empty policy, if there is an identity).
    /// Pure: no state, no I/O, the same answer for the same inputs.
    public func authorizes(_ identity: PeerIdentity?) -> Decision {
        guard let identity else { return .refused(.noCertificate) }
        guard !rules.isEmpty else { return .allowed(by: nil) }
        let names = ParsedNames(identity, needsSubject: rules.contains { $0.kind == .cn },
                                needsIssuer: rules.contains { $0.kind == .issuer })
        for rule in rules where rule.matches(identity, names) {
            return .allowed(by: rule)
        }
        return .refused(.noRuleMatched(rules))
    }

    public var description: String {
        rules.isEmpty ? "any verified peer" : rules.map(\.description).joined(separator: " or ")
    }
}

// MARK: - Decisions

extension PeerPolicy {
    public enum Decision: Sendable, Hashable, CustomStringConvertible {
        /// Admitted by this rule (nil: the policy is empty and the peer has a verified certificate).
        case allowed(by: Rule?)
        case refused(Refusal)

        public var isAllowed: Bool {
            if case .allowed = self { return true }
            return false
        }

        public var description: String {
            switch self {
            case .allowed(let rule?): return "allowed by \(rule)"
            case .allowed(nil): return "allowed: any verified peer"
            case .refused(let refusal): return "refused: \(refusal)"
            }
        }
    }

    public enum Refusal: Sendable, Hashable, CustomStringConvertible {
        /// The peer presented no certificate.
        case noCertificate
        /// The peer's certificate matched none of these rules (every rule of the policy: they are ORed).
        case noRuleMatched([Rule])

        public var description: String {
            switch self {
            case .noCertificate: return "no certificate"
            case .noRuleMatched(let rules): return "matched none of " + rules.map(\.description).joined(separator: ", ")
            }
        }
    }
}

// MARK: - Rules

extension PeerPolicy {
    /// One typed rule. Build it with the throwing factories (`cn`, `dns`, `uri`, `ip`, `spki`,
    /// `issuer`, or `parse(_:_:)`), which validate and normalize the text once; matching never fails.
    public struct Rule: Sendable, Hashable, CustomStringConvertible {
        public enum Kind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
            case cn, dns, uri, ip, spki, issuer
            public var description: String { rawValue }
        }

        public let kind: Kind
        /// The normalized text: lowercased DNS pattern, lowercase hex pin, canonical issuer DN, ...
        public let value: String
        private let matcher: Matcher

        private init(_ kind: Kind, _ value: String, _ matcher: Matcher) {
            self.kind = kind
            self.value = value
            self.matcher = matcher
        }

        public var description: String { "\(kind)(\(value))" }

        /// Builds a rule of `kind` from user text, e.g. a command-line flag's value.
        public static func parse(_ kind: Kind, _ text: String) throws(RuleError) -> Rule {
            switch kind {
            case .cn: return try cn(text)
            case .dns: return try dns(text)
            case .uri: return try uri(text)
            case .ip: return try ip(text)
            case .spki: return try spki(text)
            case .issuer: return try issuer(text)
            }
        }

        /// The subject's common name, exactly (case-sensitive; SANs are never consulted).
        public static func cn(_ name: String) throws(RuleError) -> Rule {
            guard !name.isEmpty else { throw RuleError(.cn, name, "a common name cannot be empty") }
            return Rule(.cn, name, .cn(Array(name.utf8)))
        }

        /// A DNS SAN: `api.example.com`, or `*.example.com` for any one label in front of
        /// `example.com` (not `example.com` itself, not `a.b.example.com`). ASCII only:
        /// internationalized names are given and compared as A-labels (`xn--...`). A wildcard needs
        /// two labels after `*.`. A certificate's own wildcard SAN is a literal label: `*.example.com`
        /// in a certificate matches the rule `*.example.com`, never `api.example.com`.
        public static func dns(_ pattern: String) throws(RuleError) -> Rule {
            guard !pattern.isEmpty else { throw RuleError(.dns, pattern, "a DNS name cannot be empty") }
            guard pattern.utf8.allSatisfy({ $0 < 0x80 }) else {
                throw RuleError(.dns, pattern, "not ASCII: give an internationalized name as its A-labels (xn--...)")
            }
            let lowered = PolicyBytes.lowercased(Array(pattern.utf8))
            guard lowered.count <= 253 else { throw RuleError(.dns, pattern, "longer than 253 characters") }
            guard lowered.last != UInt8(ascii: ".") else {
                throw RuleError(.dns, pattern, "no trailing dot: certificates name hosts without one")
            }
            let labels = lowered.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
            for (index, label) in labels.enumerated() {
                if label.contains(UInt8(ascii: "*")) {
                    guard index == 0, label.count == 1 else {
                        throw RuleError(.dns, pattern, "a wildcard is only '*.' followed by a domain, as the whole leftmost label")
                    }
                    continue
                }
                guard !label.isEmpty else { throw RuleError(.dns, pattern, "empty label (two dots in a row, or a leading dot)") }
                guard label.count <= 63 else { throw RuleError(.dns, pattern, "a label is longer than 63 characters") }
                guard label.allSatisfy({ PolicyBytes.isLabelCharacter($0) }) else {
                    throw RuleError(.dns, pattern, "only letters, digits, '-' and '_' may appear in a label")
                }
            }
            let text = String(decoding: lowered, as: UTF8.self)
            if labels[0].elementsEqual([UInt8(ascii: "*")]) {
                guard labels.count >= 3 else {
                    throw RuleError(.dns, pattern, "a wildcard needs at least two labels after '*.', e.g. *.example.com (one would admit a whole top-level domain)")
                }
                return Rule(.dns, text, .dnsWildcard(parent: Array(lowered.dropFirst(2))))
            }
            return Rule(.dns, text, .dnsExact(lowered))
        }

        /// A URI SAN, exactly; or, ending in `/*`, every URI that extends the part before `*` by one
        /// or more non-empty path segments: `spiffe://prod.example/ns/billing/*` admits
        /// `spiffe://prod.example/ns/billing/sa/x`, but not `spiffe://prod.example/ns/billing`,
        /// `spiffe://prod.example/ns/billingX/y`, nor a rest with `.`/`..` segments, `?`, `#` or `%`.
        public static func uri(_ text: String) throws(RuleError) -> Rule {
            let bytes = Array(text.utf8)
            guard !bytes.isEmpty else { throw RuleError(.uri, text, "a URI cannot be empty") }
            guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw RuleError(.uri, text, "only printable ASCII without spaces (percent-encode anything else)")
            }
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")), colon > 0, PolicyBytes.isLetter(bytes[0]),
                  bytes[..<colon].allSatisfy({ PolicyBytes.isLetter($0) || PolicyBytes.isDigit($0) || $0 == UInt8(ascii: "+")
                                                 || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") })
            else {
                throw RuleError(.uri, text, "not a URI: it must start with a scheme, e.g. spiffe://trust-domain/path")
            }
            let stars = bytes.filter { $0 == UInt8(ascii: "*") }.count
            guard stars > 0 else { return Rule(.uri, text, .uriExact(bytes)) }
            guard stars == 1, bytes.count >= 2, bytes.suffix(2).elementsEqual("/*".utf8) else {
                throw RuleError(.uri, text, "'*' may appear only once, as a final '/*' (a prefix of whole path segments)")
            }
            let prefix = Array(bytes.dropLast())  // keeps the final "/"
            guard let authorityStart = PolicyBytes.range(of: Array("://".utf8), in: prefix)?.upperBound else {
                throw RuleError(.uri, text, "a prefix rule needs scheme://authority/ before the '*'")
            }
            let afterScheme = prefix[authorityStart...]
            guard let firstSlash = afterScheme.firstIndex(of: UInt8(ascii: "/")), firstSlash > authorityStart else {
                throw RuleError(.uri, text, "a prefix rule needs a non-empty authority (e.g. the SPIFFE trust domain)")
            }
            guard !prefix.contains(UInt8(ascii: "?")), !prefix.contains(UInt8(ascii: "#")) else {
                throw RuleError(.uri, text, "a prefix rule cannot contain a query or a fragment")
            }
            let path = prefix[firstSlash...]
            guard PolicyBytes.range(of: Array("//".utf8), in: Array(path)) == nil else {
                throw RuleError(.uri, text, "a prefix rule cannot contain an empty path segment ('//')")
            }
            return Rule(.uri, text, .uriPrefix(prefix))
        }

        /// An IP SAN, IPv4 or IPv6 (brackets allowed), compared as octets.
        public static func ip(_ text: String) throws(RuleError) -> Rule {
            guard let octets = IPAddressText.parse(text) else {
                throw RuleError(.ip, text, "not an IPv4 or IPv6 address")
            }
            return Rule(.ip, IPAddressText.format(octets), .ip(octets))
        }

        /// A pin: the SHA-256 of the leaf's SubjectPublicKeyInfo, 64 hex digits (either case). It
        /// survives re-issuing the certificate for the same key. `openssl x509 -in cert.pem -pubkey
        /// -noout | openssl pkey -pubin -outform der | openssl dgst -sha256` prints it.
        public static func spki(_ hex: String) throws(RuleError) -> Rule {
            let digits = Array(hex.utf8)
            guard digits.count == 64 else {
                throw RuleError(.spki, hex, "a SHA-256 pin is 64 hex digits, not \(digits.count) characters")
            }
            var octets: [UInt8] = []
            octets.reserveCapacity(32)
            var index = 0
            while index < 64 {
                guard let high = PolicyBytes.hexValue(digits[index]), let low = PolicyBytes.hexValue(digits[index + 1]) else {
                    throw RuleError(.spki, hex, "a SHA-256 pin is hex digits only (0-9, a-f)")
                }
                octets.append(high << 4 | low)
                index += 2
            }
            return Rule(.spki, String(decoding: PolicyBytes.lowercased(digits), as: UTF8.self), .spki(octets))
        }

        /// The leaf's issuer: the distinguished name of the CA that signed it, in RFC 4514 text
        /// (see `DistinguishedNameText`), e.g. `CN=Billing CA,O=Example`. Attribute names are
        /// case-insensitive and long names are accepted (`commonName=...`); values are compared
        /// exactly, RDN by RDN, in the order written (the most specific first, as RFC 4514, OpenSSL's
        /// `-nameopt RFC2253` and our logs print it).
        ///
        /// Shorthand: a rule of a single CN (`CN=Billing CA`) matches an issuer whose DN has exactly
        /// one CN with that value, whatever its other attributes. An issuer with several CNs never
        /// matches a shorthand rule.
        ///
        /// The issuer's name is only a name: any CA the backends trust can issue an intermediate of
        /// that name. It tells trusted CAs apart; it does not make an untrusted one trusted.
        public static func issuer(_ text: String) throws(RuleError) -> Rule {
            let name: DistinguishedNameText
            do { name = try DistinguishedNameText(parsing: text) } catch {
                throw RuleError(.issuer, text, error.problem)
            }
            guard !name.rdns.isEmpty else { throw RuleError(.issuer, text, "an issuer name cannot be empty") }
            if name.rdns.count == 1, name.rdns[0].count == 1, name.rdns[0][0].type == "CN" {
                return Rule(.issuer, name.description, .issuerCommonName(name.rdns[0][0].value))
            }
            return Rule(.issuer, name.description, .issuer(name))
        }

        // MARK: Matching

        private enum Matcher: Sendable, Hashable {
            case cn([UInt8])
            case dnsExact([UInt8])
            /// The part after "*.", lowercased.
            case dnsWildcard(parent: [UInt8])
            case uriExact([UInt8])
            /// Ends with "/".
            case uriPrefix([UInt8])
            case ip([UInt8])
            case spki([UInt8])
            case issuer(DistinguishedNameText)
            case issuerCommonName([UInt8])
        }

        /// Whether this rule admits `identity` on its own.
        public func matches(_ identity: PeerIdentity) -> Bool {
            matches(identity, ParsedNames(identity, needsSubject: kind == .cn, needsIssuer: kind == .issuer))
        }

        fileprivate func matches(_ identity: PeerIdentity, _ names: ParsedNames) -> Bool {
            switch matcher {
            case .cn(let expected):
                guard let commonNames = names.subject?.values(of: "CN"), commonNames.count == 1 else { return false }
                return commonNames[0] == expected
            case .dnsExact(let expected):
                return identity.dnsNames.contains { PolicyBytes.lowercased(Array($0.utf8)) == expected }
            case .dnsWildcard(let parent):
                return identity.dnsNames.contains { Self.wildcardMatches(parent: parent, name: PolicyBytes.lowercased(Array($0.utf8))) }
            case .uriExact(let expected):
                return identity.uris.contains { $0.utf8.elementsEqual(expected) }
            case .uriPrefix(let prefix):
                return identity.uris.contains { Self.prefixMatches(prefix: prefix, uri: Array($0.utf8)) }
            case .ip(let expected):
                return identity.ipAddresses.contains { IPAddressText.parse($0) == expected }
            case .spki(let expected):
                return identity.spkiSHA256 == expected
            case .issuer(let expected):
                guard let issuer = names.issuer else { return false }
                return issuer == expected
            case .issuerCommonName(let expected):
                guard let commonNames = names.issuer?.values(of: "CN"), commonNames.count == 1 else { return false }
                return commonNames[0] == expected
            }
        }

        /// `name` is one non-empty label (no dot) followed by "." and `parent`.
        static func wildcardMatches(parent: [UInt8], name: [UInt8]) -> Bool {
            guard name.count > parent.count + 1, name.suffix(parent.count).elementsEqual(parent) else { return false }
            let label = name.dropLast(parent.count)
            guard label.last == UInt8(ascii: ".") else { return false }
            let leftmost = label.dropLast()
            return !leftmost.isEmpty && !leftmost.contains(UInt8(ascii: "."))
        }

        /// `uri` is `prefix` (ending in "/") followed by one or more non-empty path segments, none of
        /// them "." or "..", with no query, fragment or percent-encoding in the rest.
        static func prefixMatches(prefix: [UInt8], uri: [UInt8]) -> Bool {
            guard uri.count > prefix.count, uri.prefix(prefix.count).elementsEqual(prefix) else { return false }
            let rest = uri.dropFirst(prefix.count)
            guard !rest.contains(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") || $0 == UInt8(ascii: "%") })
            else { return false }
            let segments = rest.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            return segments.allSatisfy { segment in
                !segment.isEmpty && !segment.elementsEqual(".".utf8) && !segment.elementsEqual("..".utf8)
            }
        }
    }

    /// Why a rule's text was refused, worded for the person who typed it.
    public struct RuleError: Error, Sendable, Hashable, CustomStringConvertible {
        public let kind: Rule.Kind
        public let text: String
        public let problem: String

        init(_ kind: Rule.Kind, _ text: String, _ problem: String) {
            self.kind = kind
            self.text = text
            self.problem = problem
        }

        public var description: String { "invalid \(kind) rule '\(text)': \(problem)" }
    }
}

/// The subject and issuer names of an identity, parsed only when a rule needs them.
private struct ParsedNames {
    let subject: DistinguishedNameText?
    let issuer: DistinguishedNameText?

    init(_ identity: PeerIdentity, needsSubject: Bool, needsIssuer: Bool) {
        subject = needsSubject ? try? DistinguishedNameText(parsing: identity.subject) : nil
        issuer = needsIssuer ? try? DistinguishedNameText(parsing: identity.issuer) : nil
    }
}

// MARK: - Distinguished names as text

/// A distinguished name read from, and written as, RFC 4514 text: the canonical form the issuer
/// rule compares. It is the form `PeerIdentity.subject` and `.issuer` hold (swift-certificates'
/// `DistinguishedName.description`): RDNs most specific first, separated by "," without spaces;
/// attributes of a multi-valued RDN joined by "+"; the short names CN, C, L, ST, O, OU, STREET, DC
/// and E, any other type as its dotted OID; values with `,+"\<>;` and leading "#"/space and
/// trailing spaces escaped by a backslash.
///
/// Reading also accepts what people type: spaces around separators, attribute names in any case,
/// long names (commonName, organizationName, ...), `OID.2.5.4.3`, and `\XX` hex escapes. Values are
/// kept as UTF-8 bytes and compared exactly; attributes of one RDN compare as a set.
public struct DistinguishedNameText: Sendable, Hashable, CustomStringConvertible {
    public struct Attribute: Sendable, Hashable {
        /// The canonical type: a short name (CN, O, ...) or a dotted OID.
        public let type: String
        /// The unescaped value, as UTF-8.
        public let value: [UInt8]
    }

    /// Most specific first, as written.
    public let rdns: [[Attribute]]

    public struct ParseError: Error, Sendable {
        public let problem: String
    }

    public init(parsing text: String) throws(ParseError) {
        var parser = DNParser(Array(text.utf8))
        rdns = try parser.parse()
    }

    /// Every value of attribute `type` (a canonical short name or dotted OID), in order.
    public func values(of type: String) -> [[UInt8]] {
        rdns.flatMap { $0.filter { $0.type == type }.map(\.value) }
    }

    public static func == (lhs: DistinguishedNameText, rhs: DistinguishedNameText) -> Bool {
        lhs.canonicalRDNs == rhs.canonicalRDNs
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(canonicalRDNs) }

    /// Each RDN's attributes in one order, so that a multi-valued RDN compares as a set.
    private var canonicalRDNs: [[Attribute]] {
        rdns.map { rdn in
            rdn.sorted { $0.type != $1.type ? $0.type < $1.type : $0.value.lexicographicallyPrecedes($1.value) }
        }
    }

    public var description: String {
        rdns.map { rdn in
            rdn.map { "\($0.type)=\(Self.escape($0.value))" }.joined(separator: "+")
        }.joined(separator: ",")
    }

    /// RFC 4514 escaping, as swift-certificates writes it.
    static func escape(_ value: [UInt8]) -> String {
        let special: Set<UInt8> = Set(",+\"\\<>;".utf8)
        var out: [UInt8] = []
        let leading = value.prefix { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "#") }.count
        let trailing = value.dropFirst(leading).reversed().prefix { $0 == UInt8(ascii: " ") }.count
        for (index, byte) in value.enumerated() {
            if index < leading || index >= value.count - trailing || special.contains(byte) {
                out.append(UInt8(ascii: "\\"))
            }
            out.append(byte)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Attribute names as swift-certificates prints them, by every name people use for them.
    static let typeNames: [String: String] = [
        "cn": "CN", "commonname": "CN", "2.5.4.3": "CN",
        "c": "C", "countryname": "C", "2.5.4.6": "C",
        "l": "L", "localityname": "L", "2.5.4.7": "L",
        "st": "ST", "s": "ST", "stateorprovincename": "ST", "2.5.4.8": "ST",
        "o": "O", "organizationname": "O", "2.5.4.10": "O",
        "ou": "OU", "organizationalunitname": "OU", "2.5.4.11": "OU",
        "street": "STREET", "streetaddress": "STREET", "2.5.4.9": "STREET",
        "dc": "DC", "domaincomponent": "DC", "0.9.2342.19200300.100.1.25": "DC",
        "e": "E", "emailaddress": "E", "1.2.840.113549.1.9.1": "E",
    ]
}

private struct DNParser {
    typealias ParseError = DistinguishedNameText.ParseError
    let bytes: [UInt8]
    var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func parse() throws(ParseError) -> [[DistinguishedNameText.Attribute]] {
        skipSpaces()
        guard index < bytes.count else { return [] }
        var rdns: [[DistinguishedNameText.Attribute]] = []
        var rdn: [DistinguishedNameText.Attribute] = []
        while true {
            rdn.append(try attribute())
            skipSpaces()
            guard index < bytes.count else { break }
            let separator = bytes[index]
            index += 1
            if separator == UInt8(ascii: "+") { continue }
            guard separator == UInt8(ascii: ",") || separator == UInt8(ascii: ";") else {
                throw ParseError(problem: "expected ',' or '+' after a value")
            }
            rdns.append(rdn)
            rdn = []
        }
        rdns.append(rdn)
        return rdns
    }

    private mutating func skipSpaces() {
        while index < bytes.count && bytes[index] == UInt8(ascii: " ") { index += 1 }
    }

    private mutating func attribute() throws(ParseError) -> DistinguishedNameText.Attribute {
        skipSpaces()
        let start = index
        while index < bytes.count && bytes[index] != UInt8(ascii: "=") { index += 1 }
        guard index < bytes.count else { throw ParseError(problem: "expected TYPE=value, e.g. CN=Example CA") }
        var name = String(decoding: bytes[start..<index], as: UTF8.self).trimmingSpaces
        index += 1  // "="
        if name.lowercased().hasPrefix("oid.") { name = String(name.dropFirst(4)) }
        let type: String
        if let known = DistinguishedNameText.typeNames[name.lowercased()] {
            type = known
        } else if Self.isDottedOID(name) {
            type = name
        } else {
            throw ParseError(problem: "unknown attribute type '\(name)' (use CN, O, OU, C, L, ST, STREET, DC, E or a dotted OID)")
        }
        skipSpaces()
        if index < bytes.count && bytes[index] == UInt8(ascii: "#") {
            throw ParseError(problem: "hex-encoded (#...) values are not supported: write the value as text")
        }
        if index < bytes.count && bytes[index] == UInt8(ascii: "\"") {
            throw ParseError(problem: "quoted values are not supported: escape special characters with '\\'")
        }
        var value: [UInt8] = []
        var trailingUnescapedSpaces = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: ",") || byte == UInt8(ascii: "+") || byte == UInt8(ascii: ";") { break }
            if byte == UInt8(ascii: "\\") {
                guard index + 1 < bytes.count else { throw ParseError(problem: "a value ends with a lone '\\'") }
                let next = bytes[index + 1]
                if let high = PolicyBytes.hexValue(next), index + 2 < bytes.count, let low = PolicyBytes.hexValue(bytes[index + 2]) {
                    value.append(high << 4 | low)
                    index += 3
                } else {
                    value.append(next)
                    index += 2
                }
                trailingUnescapedSpaces = 0
                continue
            }
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "<") || byte == UInt8(ascii: ">") {
                throw ParseError(problem: "'\(Character(Unicode.Scalar(byte)))' must be escaped with '\\' in a value")
            }
            trailingUnescapedSpaces = byte == UInt8(ascii: " ") ? trailingUnescapedSpaces + 1 : 0
            value.append(byte)
            index += 1
        }
        value.removeLast(trailingUnescapedSpaces)
        guard !value.isEmpty else { throw ParseError(problem: "the value of \(type) is empty") }
        return DistinguishedNameText.Attribute(type: type, value: value)
    }

    private static func isDottedOID(_ text: String) -> Bool {
        let arcs = text.split(separator: ".", omittingEmptySubsequences: false)
        return arcs.count >= 2 && arcs.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }
    }
}

/// Byte-level ASCII helpers: the rules never apply Unicode case folding or normalization.
enum PolicyBytes {
    static func lowercased(_ bytes: [UInt8]) -> [UInt8] {
        bytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }
    }

    static func isLetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7A }
    static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    static func isLabelCharacter(_ byte: UInt8) -> Bool {
        isLetter(byte) || isDigit(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        case 0x61...0x66: return byte - 0x61 + 10
        default: return nil
        }
    }

    /// The first occurrence of `needle` in `haystack`.
    static func range(of needle: [UInt8], in haystack: [UInt8]) -> Range<Int>? {
        guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start..<start + needle.count].elementsEqual(needle) {
            return start..<start + needle.count
        }
        return nil
    }
}

private extension String {
    var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}

// MARK: - What a refusal log names

extension PeerIdentity {
    /// One line naming everything the rules look at, for a refusal log:
    /// `subject "CN=x,O=y" DNS [a, b] URI [spiffe://...] IP [] SPKI sha256 ab12... issuer "CN=CA"`.
    public var authorizationSummary: String {
        func list(_ items: [String]) -> String { "[" + items.joined(separator: ", ") + "]" }
        return "subject \"\(subject)\" DNS \(list(dnsNames)) URI \(list(uris)) IP \(list(ipAddresses)) "
            + "SPKI sha256 \(spkiSHA256Hex) issuer \"\(issuer)\""
    }
}
