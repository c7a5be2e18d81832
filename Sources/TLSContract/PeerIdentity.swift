import Crypto
import Foundation
import SwiftASN1
import X509

/// Who the peer is, parsed from the DER chain the backend verified. Both backends hand over the
/// chain and this type parses it, so identity and authorization behave the same whichever library
/// verified the chain.
public struct PeerIdentity: Sendable, Hashable {
    /// The peer's chain as sent, leaf first.
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

    public init(certificateChainDER: [[UInt8]]) throws(TLSError) {
        guard let leafDER = certificateChainDER.first else {
            throw TLSError(.certificateRejected(.missing))
        }
        let leaf: Certificate
        do {
            leaf = try Certificate(derEncoded: leafDER)
        } catch {
            throw TLSError(.certificateRejected(.invalid), detail: "cannot parse the peer certificate: \(error)")
        }
        self.certificateChainDER = certificateChainDER
        self.subject = leaf.subject.description
        self.issuer = leaf.issuer.description
        self.commonName = leaf.subject.lazy.flatMap { $0 }
            .first { $0.type == .RDNAttributeType.commonName }
            .map { String(describing: $0.value) }
        var dns: [String] = []
        var ips: [String] = []
        var uris: [String] = []
        if let sans = try? leaf.extensions.subjectAlternativeNames {
            for name in sans {
                switch name {
                case .dnsName(let value): dns.append(value)
                case .uniformResourceIdentifier(let value): uris.append(value)
                case .ipAddress(let octets): ips.append(IPAddressText.format(Array(octets.bytes)))
                default: break
                }
            }
        }
        self.dnsNames = dns
        self.ipAddresses = ips
        self.uris = uris
        self.notValidBefore = leaf.notValidBefore
        self.notValidAfter = leaf.notValidAfter
        var serializer = DER.Serializer()
        try? serializer.serialize(leaf.publicKey)
        self.spkiSHA256 = Array(SHA256.hash(data: serializer.serializedBytes))
    }

    /// The name a log line or a greeting uses: CN, else the first SAN.
    public var displayName: String {
        commonName ?? dnsNames.first ?? uris.first ?? ipAddresses.first ?? subject
    }

    /// The SPIFFE ID, if the certificate carries one.
    public var spiffeID: String? { uris.first { $0.hasPrefix("spiffe://") } }

    public var spkiSHA256Hex: String { spkiSHA256.map { String(format: "%02x", $0) }.joined() }

    /// Every name an allow list may match: CN, DNS and IP SANs, URIs.
    public var allNames: [String] { (commonName.map { [$0] } ?? []) + dnsNames + ipAddresses + uris }
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
    /// The identity for a verified chain, parsed once per distinct chain: services reconnect with the
    /// same certificate again and again, and parsing it costs about 6 % of a server's handshake.
    /// Both backends call this, so identities stay parsed the same way whichever backend verified.
    public static func verified(certificateChainDER chain: [[UInt8]]) throws(TLSError) -> PeerIdentity {
        if let known = ParsedIdentities.shared.lookup(chain) { return known }
        let identity = try PeerIdentity(certificateChainDER: chain)
        ParsedIdentities.shared.remember(identity)
        return identity
    }
}

/// A small process-wide cache of parsed identities, keyed by the chain's DER. Bounded: when full it
/// starts over, which costs one parse per chain and never grows with the number of peers.
private final class ParsedIdentities: @unchecked Sendable {
    static let shared = ParsedIdentities()
    static let capacity = 1024

    private let lock = NSLock()
    private var identities: [[[UInt8]]: PeerIdentity] = [:]

    func lookup(_ chain: [[UInt8]]) -> PeerIdentity? {
        lock.withLock { identities[chain] }
    }

    func remember(_ identity: PeerIdentity) {
        lock.withLock {
            if identities.count >= Self.capacity { identities.removeAll(keepingCapacity: true) }
            identities[identity.certificateChainDER] = identity
        }
    }
}
