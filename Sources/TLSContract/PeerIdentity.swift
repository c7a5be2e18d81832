import Crypto
import Foundation
import SwiftASN1
import X509

/// Who the peer is, parsed from the DER chain the backend verified. Both backends hand over the
/// chain and this type parses it, so identity and authorization behave the same whichever library
/// verified the chain.
public struct PeerIdentity: Sendable, Hashable {
    /// The peer's certification path, leaf first: each next certificate issued the one before,
    /// up to (not including) a self-issued root. Certificates the peer sent that are not on that
    /// path (padding, strays) are not here.
    public let certificateChainDER: [[UInt8]]
    /// The leaf's subject, RFC 4514 style ("CN=client,O=swift-mtls").
    public let subject: String
    public let issuer: String
    public let commonName: String?
    public let dnsNames: [String]
    public let ipAddresses: [String]
    public let uris: [String]
    public let notValidBefore: Date
    public let notValidAfter: Date
    /// SHA-256 of the leaf's SubjectPublicKeyInfo, the value to pin.
    public let spkiSHA256: [UInt8]
    /// The leaf's extended key usage: nil when it has no such extension (any purpose, RFC 5280).
    public let extendedKeyUsage: Set<KeyPurpose>?

    /// The purposes of an extended key usage extension that verification looks at.
    public enum KeyPurpose: Sendable, Hashable {
        case serverAuth, clientAuth, anyExtendedKeyUsage, other
    }

    /// Parses `certificateChainDER` (leaf first, as a backend hands it over) and keeps its
    /// certification path (see `certificateChainDER`).
    public init(certificateChainDER chain: [[UInt8]]) throws(TLSError) {
        guard let leafDER = chain.first else {
            throw TLSError(.certificateRejected(.missing))
        }
        var parsed: [Certificate] = []
        do {
            for der in chain { parsed.append(try Certificate(derEncoded: der)) }
        } catch {
            // swift-certificates refuses RSA keys below 2048 bits as well as unknown algorithms.
            throw TLSError(.certificateRejected(.invalid), detail: "cannot parse a certificate of the peer's chain: \(error)")
        }
        let leaf = parsed[0]
        self.certificateChainDER = Self.certificationPath(chain, parsed: parsed, leafDER: leafDER)
        self.subject = leaf.subject.description
        self.issuer = leaf.issuer.description
        self.commonName = leaf.subject.lazy.flatMap { $0 }
            .first { $0.type == .RDNAttributeType.commonName }
            .map { String(describing: $0.value) }
        let names = SubjectAlternativeNameLists(leaf)
        self.dnsNames = names.dns
        self.ipAddresses = names.ipAddresses
        self.uris = names.uris
        self.notValidBefore = leaf.notValidBefore
        self.notValidAfter = leaf.notValidAfter
        var serializer = DER.Serializer()
        try? serializer.serialize(leaf.publicKey)
        self.spkiSHA256 = Array(SHA256.hash(data: serializer.serializedBytes))
        if let usage = try? leaf.extensions.extendedKeyUsage {
            self.extendedKeyUsage = Set(usage.map { purpose -> KeyPurpose in
                switch purpose {
                case .serverAuth: return .serverAuth
                case .clientAuth: return .clientAuth
                case .any: return .anyExtendedKeyUsage
                default: return .other
                }
            })
        } else {
            self.extendedKeyUsage = nil
        }
    }

    /// The leaf, then each certificate that issued the one before it (by name), stopping before a
    /// self-issued root (a trust anchor; the leaf itself stays, for a pinned self-signed peer).
    private static func certificationPath(_ chain: [[UInt8]], parsed: [Certificate], leafDER: [UInt8]) -> [[UInt8]] {
        var path = [leafDER]
        var used: Set<Int> = [0]
        var current = parsed[0]
        while path.count < chain.count {
            guard let next = parsed.indices.first(where: { !used.contains($0) && parsed[$0].subject == current.issuer }),
                  parsed[next].subject != parsed[next].issuer
            else { break }
            used.insert(next)
            path.append(chain[next])
            current = parsed[next]
        }
        return path
    }

    /// The name a log line or a greeting uses: CN, else the first SAN.
    public var displayName: String {
        commonName ?? dnsNames.first ?? uris.first ?? ipAddresses.first ?? subject
    }

    /// The SPIFFE ID, if the certificate carries one.
    public var spiffeID: String? { uris.first { $0.hasPrefix("spiffe://") } }

    public var spkiSHA256Hex: String { spkiSHA256.map { String(format: "%02x", $0) }.joined() }

}


/// A certificate's DNS, IP and URI subject alternative names, as text; the one place both
/// `PeerIdentity` and `CertificateSummary` read them from.
struct SubjectAlternativeNameLists {
    var dns: [String] = []
    var ipAddresses: [String] = []
    var uris: [String] = []

    init(_ certificate: Certificate) {
        guard let sans = try? certificate.extensions.subjectAlternativeNames else { return }
        for name in sans {
            switch name {
            case .dnsName(let value): dns.append(value)
            case .uniformResourceIdentifier(let value): uris.append(value)
            case .ipAddress(let octets): ipAddresses.append(IPAddressText.format(Array(octets.bytes)))
            default: break
            }
        }
    }
}

/// IP addresses as text, the way both backends and users write them.
public enum IPAddressText {
    /// The 4 or 16 octets of an IPv4/IPv6 literal, or nil if `text` is not one.
    public static func parse(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        if inet_pton(AF_INET6, bare, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    public static func format(_ octets: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = octets.count == 4 ? AF_INET : AF_INET6
        guard octets.count == 4 || octets.count == 16 else { return octets.map(String.init).joined(separator: ".") }
        let ok = octets.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok, let end = buffer.firstIndex(of: 0) else { return "" }
        return String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension PeerIdentity {
    /// Parses a chain, once per distinct chain: services reconnect with the same certificate again
    /// and again, and parsing it costs about 6 % of a server's handshake. It checks nothing: call it
    /// only for a chain the library has verified (or, resumed, had verified). Both backends call
    /// this, so identities are parsed the same way whichever backend verified.
    public static func parsingCached(certificateChainDER chain: [[UInt8]]) throws(TLSError) -> PeerIdentity {
        if let known = ParsedIdentities.shared.lookup(chain) { return known }
        let identity = try PeerIdentity(certificateChainDER: chain)
        ParsedIdentities.shared.remember(identity, for: chain)
        return identity
    }
}

/// A process-wide cache of parsed identities, keyed by the chain's DER as handed over. Bounded in
/// bytes, not entries: a peer that pads its chain cannot make it hold more. When full it starts
/// over, which costs one parse per chain and never grows with the number of peers.
private final class ParsedIdentities: @unchecked Sendable {
    static let shared = ParsedIdentities()
    /// About 1,000 ordinary two-certificate chains.
    static let capacityBytes = 2 * 1024 * 1024
    /// A chain larger than this is parsed every time rather than cached.
    static let largestCachedChainBytes = 16 * 1024

    private let lock = NSLock()
    private var identities: [ChainKey: PeerIdentity] = [:]
    private var storedBytes = 0

    /// A chain as a dictionary key, hashed a certificate at a time (`[[UInt8]]`'s own hashing feeds
    /// the hasher byte by byte: several microseconds per handshake for a two-certificate chain).
    private struct ChainKey: Hashable {
        let chain: [[UInt8]]

        func hash(into hasher: inout Hasher) {
            hasher.combine(chain.count)
            for certificate in chain {
                hasher.combine(certificate.count)
                certificate.withUnsafeBytes { hasher.combine(bytes: $0) }
            }
        }
    }

    func lookup(_ chain: [[UInt8]]) -> PeerIdentity? {
        lock.withLock { identities[ChainKey(chain: chain)] }
    }

    func remember(_ identity: PeerIdentity, for chain: [[UInt8]]) {
        // The key and the identity's own path, counted both.
        let cost = chain.reduce(0) { $0 + $1.count } + identity.certificateChainDER.reduce(0) { $0 + $1.count }
        guard cost <= Self.largestCachedChainBytes else { return }
        lock.withLock {
            if storedBytes + cost > Self.capacityBytes {
                identities.removeAll(keepingCapacity: true)
                storedBytes = 0
            }
            if identities.updateValue(identity, forKey: ChainKey(chain: chain)) == nil { storedBytes += cost }
        }
    }
}
