import Loop
import TLSContract

/// The PROXY protocol version 2 header (haproxy's proxy-protocol.txt, section 2.2) that a proxy
/// server sends first on each target connection with `--proxy-protocol v2`, so that a target which
/// cares learns who the client is: its address, the address it reached, and the identity the proxy
/// verified. Targets that do not expect it must not be given it (they would read it as data), which
/// is why it is off by default.
///
/// TLVs sent:
/// - `PP2_TYPE_SSL` (0x20): client flags `PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN` (a certificate was
///   presented on this connection) plus `PP2_CLIENT_CERT_SESS` when the session was resumed,
///   `verify` = 0 (the proxy connects only for verified clients), and the sub-TLVs
///   `PP2_SUBTYPE_SSL_VERSION` (0x21, "TLSv1.3"), `PP2_SUBTYPE_SSL_CN` (0x22, the subject CN) and
///   `PP2_SUBTYPE_SSL_CIPHER` (0x23, the cipher suite's name).
/// - Application-specific TLVs in the range the spec reserves for that (0xE0–0xEF), since a client
///   certificate's SANs, not its CN, are what modern authorization uses: 0xE0 one per URI SAN
///   (e.g. a SPIFFE ID), 0xE1 one per DNS SAN, 0xE2 the SHA-256 of the client's SubjectPublicKeyInfo
///   (32 bytes, the value `--allow-spki` matches).
public enum ProxyProtocolHeader {
    /// The 12 bytes every version 2 header starts with.
    public static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    public enum TLVType {
        public static let ssl: UInt8 = 0x20
        public static let sslVersion: UInt8 = 0x21
        public static let sslCommonName: UInt8 = 0x22
        public static let sslCipher: UInt8 = 0x23
        public static let uriSAN: UInt8 = 0xE0
        public static let dnsSAN: UInt8 = 0xE1
        public static let spkiSHA256: UInt8 = 0xE2
    }

    public enum ClientFlag {
        public static let ssl: UInt8 = 0x01
        public static let certificateOnConnection: UInt8 = 0x02
        public static let certificateInSession: UInt8 = 0x04
    }

    /// What the header says about the client's TLS connection; nil fields are left out.
    public struct ClientTLS: Sendable {
        public var identity: PeerIdentity?
        public var negotiated: NegotiatedParameters?

        public init(identity: PeerIdentity?, negotiated: NegotiatedParameters?) {
            self.identity = identity
            self.negotiated = negotiated
        }
    }

    /// The header for a connection from `source` to `destination` (the client's address and the
    /// proxy's listening address, as the proxy's socket sees them). Both addresses of one socket
    /// share a family; should they not, the header says UNSPEC (the spec's answer for "unknown"),
    /// which keeps the TLVs and lets the target fall back to the connection's own addresses.
    public static func make(source: SocketAddress, destination: SocketAddress, tls: ClientTLS?) -> [UInt8] {
        var body: [UInt8] = []
        let family: UInt8
        if source.isIPv6 == destination.isIPv6 {
            family = source.isIPv6 ? 0x21 : 0x11  // AF_INET6 or AF_INET, over STREAM
            body += source.addressBytes + destination.addressBytes
            body += bigEndian16(source.port) + bigEndian16(destination.port)
        } else {
            family = 0x00
        }
        if let tls {
            var tlvs = [sslTLV(tls)]
            if let identity = tls.identity {
                tlvs.append(tlv(TLVType.spkiSHA256, identity.spkiSHA256))
                tlvs += identity.uris.map { tlv(TLVType.uriSAN, Array($0.utf8)) }
                tlvs += identity.dnsNames.map { tlv(TLVType.dnsSAN, Array($0.utf8)) }
            }
            // The header's length field is 16 bits: a certificate with thousands of SANs loses the
            // SANs that do not fit, in order, rather than making the header malformed.
            for entry in tlvs where body.count + entry.count <= Int(UInt16.max) { body += entry }
        }
        // Version 2, command PROXY; then the family, and the length of everything after it.
        return signature + [0x21, family] + bigEndian16(body.count) + body
    }

    private static func sslTLV(_ tls: ClientTLS) -> [UInt8] {
        var client = ClientFlag.ssl
        if tls.identity != nil { client |= ClientFlag.certificateOnConnection }
        if tls.negotiated?.resumed == true { client |= ClientFlag.certificateInSession }
        var value: [UInt8] = [client, 0, 0, 0, 0]  // verify = 0: the client's certificate was verified
        if let negotiated = tls.negotiated {
            value += tlv(TLVType.sslVersion, Array(versionName(negotiated.version).utf8))
            value += tlv(TLVType.sslCipher, Array(negotiated.cipherSuite.utf8))
        }
        if let commonName = tls.identity?.commonName { value += tlv(TLVType.sslCommonName, Array(commonName.utf8)) }
        return tlv(TLVType.ssl, value)
    }

    /// The names haproxy and OpenSSL use for the version sub-TLV.
    private static func versionName(_ version: TLSVersion) -> String {
        switch version {
        case .tls12: return "TLSv1.2"
        case .tls13: return "TLSv1.3"
        }
    }

    /// A TLV's value is at most 65,535 bytes; longer ones (a pathological SAN) are cut, never sent malformed.
    private static func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
        let value = value.prefix(Int(UInt16.max))
        return [type] + bigEndian16(value.count) + value
    }

    private static func bigEndian16(_ value: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)] }
}
