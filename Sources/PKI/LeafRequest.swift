import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What to put in an end-entity certificate. Issue it with `CertificateAuthority.issue(_:)` or
/// `IssuedCertificate.selfSigned(_:)`.
public struct LeafRequest: Sendable {
    /// The subject CN. Empty means the subject has no CN attribute.
    public var commonName: String
    /// The subject O attribute; nil means none.
    public var organization: String?
    /// subjectAltName dNSName entries (ASCII; wildcards such as "*.example.com" are allowed).
    public var dnsNames: [String]
    /// subjectAltName iPAddress entries as IPv4 or IPv6 literals ("127.0.0.1", "::1", "[::1]").
    public var ipAddresses: [String]
    /// subjectAltName uniformResourceIdentifier entries ("spiffe://example.org/service").
    public var uris: [String]
    /// The extended key usage entries. Empty means the certificate has no EKU extension at all
    /// (which verifiers treat as "any purpose").
    public var purposes: Set<KeyPurpose>
    public var keyType: KeyType
    public var notValidBefore: Date
    public var notValidAfter: Date

    public init(
        commonName: String,
        organization: String? = PKIDefaults.organization,
        dnsNames: [String] = [],
        ipAddresses: [String] = [],
        uris: [String] = [],
        purposes: Set<KeyPurpose> = [],
        keyType: KeyType = .ecdsaP256,
        notValidBefore: Date = PKIDefaults.notValidBefore(),
        notValidAfter: Date = Date().addingTimeInterval(PKIDefaults.leafValidity)
    ) {
        self.commonName = commonName
        self.organization = organization
        self.dnsNames = dnsNames
        self.ipAddresses = ipAddresses
        self.uris = uris
        self.purposes = purposes
        self.keyType = keyType
        self.notValidBefore = notValidBefore
        self.notValidAfter = notValidAfter
    }

    /// A server certificate: CN = the first name, every name a SAN (IP literals become iPAddress
    /// entries, names with "://" URI entries, the rest dNSName entries), EKU serverAuth.
    public static func server(names: [String], keyType: KeyType = .ecdsaP256, validFor: TimeInterval = PKIDefaults.leafValidity) -> LeafRequest {
        var request = LeafRequest(commonName: names.first ?? "", purposes: [.serverAuth], keyType: keyType,
                                  notValidBefore: PKIDefaults.notValidBefore(), notValidAfter: Date().addingTimeInterval(validFor))
        request.addSubjectAlternativeNames(names)
        return request
    }

    /// A client certificate: CN = `name`, `name` as a SAN (a "spiffe://…" or other "://" name becomes
    /// a URI SAN, an IP literal an iPAddress SAN, anything else a dNSName SAN), EKU clientAuth.
    public static func client(name: String, keyType: KeyType = .ecdsaP256, validFor: TimeInterval = PKIDefaults.leafValidity) -> LeafRequest {
        var request = LeafRequest(commonName: name, purposes: [.clientAuth], keyType: keyType,
                                  notValidBefore: PKIDefaults.notValidBefore(), notValidAfter: Date().addingTimeInterval(validFor))
        request.addSubjectAlternativeNames([name])
        return request
    }

    /// Sorts each name into `uris` (contains "://"), `ipAddresses` (an IPv4/IPv6 literal, brackets
    /// allowed) or `dnsNames` (everything else).
    public mutating func addSubjectAlternativeNames(_ names: [String]) {
        for name in names {
            switch SubjectAltNameKind(classifying: name) {
            case .uri: uris.append(name)
            case .ipAddress: ipAddresses.append(name)
            case .dnsName: dnsNames.append(name)
            }
        }
    }
}

/// Defaults shared by the whole module.
public enum PKIDefaults {
    /// The O attribute of every subject the PKI makes unless told otherwise.
    public static let organization = "swift-mtls"
    /// How far notValidBefore lies in the past by default, to tolerate clock skew between peers.
    public static let clockSkewAllowance: TimeInterval = 3600
    public static let leafValidity: TimeInterval = 365 * 86400
    public static let intermediateValidity: TimeInterval = 5 * 365 * 86400
    public static let rootValidity: TimeInterval = 10 * 365 * 86400

    /// Now minus the clock skew allowance.
    public static func notValidBefore() -> Date {
        Date().addingTimeInterval(-clockSkewAllowance)
    }
}

enum SubjectAltNameKind {
    case dnsName, ipAddress, uri

    init(classifying name: String) {
        if name.contains("://") {
            self = .uri
        } else if IPAddressBytes.parse(name) != nil {
            self = .ipAddress
        } else {
            self = .dnsName
        }
    }
}

enum IPAddressBytes {
    /// The 4 or 16 network-order bytes of an IPv4 or IPv6 literal; IPv6 may be in brackets.
    /// Zone identifiers ("fe80::1%eth0") are not addresses a certificate can hold.
    static func parse(_ text: String) -> [UInt8]? {
        var literal = Substring(text)
        if literal.hasPrefix("[") && literal.hasSuffix("]") {
            literal = literal.dropFirst().dropLast()
        }
        guard !literal.isEmpty, literal.allSatisfy({ $0.isASCII && ($0.isHexDigit || $0 == "." || $0 == ":") }) else {
            return nil
        }
        let string = String(literal)
        if !string.contains(":") {
            var address = in_addr()
            guard inet_pton(AF_INET, string, &address) == 1 else { return nil }
            return withUnsafeBytes(of: &address) { Array($0) }
        } else {
            var address = in6_addr()
            guard inet_pton(AF_INET6, string, &address) == 1 else { return nil }
            return withUnsafeBytes(of: &address) { Array($0) }
        }
    }
}

enum NameValidation {
    static func checkDNSName(_ name: String) throws(PKIError) {
        guard !name.isEmpty, name.utf8.count <= 253,
              name.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }),
              !name.contains("/"), !name.hasPrefix("."), !name.contains("..")
        else {
            throw .invalidDNSName(name)
        }
    }

    static func checkURI(_ uri: String) throws(PKIError) {
        guard let colon = uri.firstIndex(of: ":"), colon != uri.startIndex,
              uri.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }),
              let first = uri.first, first.isLetter,
              uri[..<colon].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == "." })
        else {
            throw .invalidURI(uri)
        }
    }

    static func ipAddress(_ text: String) throws(PKIError) -> [UInt8] {
        guard let bytes = IPAddressBytes.parse(text) else { throw .invalidIPAddress(text) }
        return bytes
    }
}
