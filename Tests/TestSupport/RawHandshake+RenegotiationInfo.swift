/// Hellos without RFC 5746's renegotiation_info, which none of our backends can be configured to send:
/// a TLS 1.3-only client (Java and SwiftNIO send neither the extension nor its SCSV, and RFC 8446
/// needs neither), and TLS 1.2 peers that predate RFC 5746.
extension RawHandshake {
    /// A ClientHello record offering only TLS 1.3, with an x25519 key share and a 32-byte legacy
    /// session ID (middlebox compatibility), the way JSSE limited to TLSv1.3 sends it.
    public static func tls13OnlyClientHello(serverName: String = "localhost") -> [UInt8] {
        // The x25519 base point (u = 9): a valid public key, so the server's shared secret is not zero.
        let keyShare: [UInt8] = [9] + [UInt8](repeating: 0, count: 31)
        let extensions = serverNameExtension(serverName)
            + be16(0x000A) + be16(4) + be16(2) + be16(0x001D)  // supported_groups: x25519
            + signatureAlgorithmsExtension([0x0403, 0x0804, 0x0807])
            + be16(0x002B) + be16(3) + [2] + be16(0x0304)  // supported_versions: TLS 1.3 only
            + be16(0x0033) + be16(UInt16(keyShare.count + 6)) + be16(UInt16(keyShare.count + 4))
            + be16(0x001D) + be16(UInt16(keyShare.count)) + keyShare  // key_share: x25519
        return clientHelloRecord(sessionID: [UInt8](repeating: 0xA5, count: 32),
                                 cipherSuites: [0x1301, 0x1302, 0x1303], extensions: extensions)
    }

    /// A TLS 1.2 ClientHello from a client that predates RFC 5746: no renegotiation_info, no SCSV.
    public static func legacyTLS12ClientHello(cipherSuites: [UInt16], serverName: String = "localhost") -> [UInt8] {
        precondition(!cipherSuites.contains(0x00FF), "0x00FF is the renegotiation SCSV")
        let extensions = serverNameExtension(serverName)
            + be16(0x000A) + be16(6) + be16(4) + be16(0x001D) + be16(0x0017)  // supported_groups
            + be16(0x000B) + be16(2) + [1, 0]  // ec_point_formats: uncompressed
            + signatureAlgorithmsExtension([0x0403, 0x0804, 0x0401])
        return clientHelloRecord(sessionID: [], cipherSuites: cipherSuites, extensions: extensions)
    }

    /// A TLS 1.2 ServerHello from a server that predates RFC 5746: no renegotiation_info.
    public static func legacyTLS12ServerHello(cipherSuite: UInt16) -> [UInt8] {
        var body: [UInt8] = be16(0x0303) + [UInt8](repeating: 0x33, count: 32) + [0] + be16(cipherSuite) + [0]
        let extensions: [UInt8] = be16(0x000B) + be16(2) + [1, 0]  // ec_point_formats only
        body += be16(UInt16(extensions.count)) + extensions
        return record(type: 22, version: 0x0303, handshake(type: 2, body))
    }

    /// The extension types of the first ServerHello in `flight` (a server's first bytes), and the
    /// version it selected (supported_versions if present, else legacy_version). Nil if the flight
    /// does not start with a ServerHello.
    public static func serverHelloSummary(_ flight: [UInt8]) -> (version: UInt16, extensions: [UInt16])? {
        guard flight.count > 9, flight[0] == 22, flight[5] == 2 else { return nil }
        let body = Array(flight[9...])
        var offset = 2 + 32
        guard body.count > offset else { return nil }
        offset += 1 + Int(body[offset])  // session ID
        offset += 2 + 1  // cipher suite, compression method
        guard body.count >= offset + 2 else { return nil }
        let end = min(body.count, offset + 2 + (Int(body[offset]) << 8 | Int(body[offset + 1])))
        offset += 2
        var version = UInt16(body[0]) << 8 | UInt16(body[1])
        var types: [UInt16] = []
        while offset + 4 <= end {
            let type = UInt16(body[offset]) << 8 | UInt16(body[offset + 1])
            let length = Int(body[offset + 2]) << 8 | Int(body[offset + 3])
            if type == 0x002B && length == 2 && offset + 6 <= end {
                version = UInt16(body[offset + 4]) << 8 | UInt16(body[offset + 5])
            }
            types.append(type)
            offset += 4 + length
        }
        return (version, types)
    }

    public static let renegotiationInfoExtension: UInt16 = 0xFF01

    private static func clientHelloRecord(sessionID: [UInt8], cipherSuites: [UInt16], extensions: [UInt8]) -> [UInt8] {
        var body: [UInt8] = be16(0x0303) + [UInt8](repeating: 0x5A, count: 32)
        body += [UInt8(sessionID.count)] + sessionID
        body += be16(UInt16(cipherSuites.count * 2))
        for suite in cipherSuites { body += be16(suite) }
        body += [1, 0]  // compression: null only
        body += be16(UInt16(extensions.count)) + extensions
        return record(type: 22, version: 0x0301, handshake(type: 1, body))
    }

    private static func serverNameExtension(_ name: String) -> [UInt8] {
        let bytes = Array(name.utf8)
        let list: [UInt8] = be16(UInt16(bytes.count + 3)) + [0] + be16(UInt16(bytes.count)) + bytes
        return be16(0x0000) + be16(UInt16(list.count)) + list
    }

    private static func signatureAlgorithmsExtension(_ algorithms: [UInt16]) -> [UInt8] {
        var list = be16(UInt16(algorithms.count * 2))
        for algorithm in algorithms { list += be16(algorithm) }
        return be16(0x000D) + be16(UInt16(list.count)) + list
    }
}
