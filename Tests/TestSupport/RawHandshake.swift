/// Hand-built handshake messages for peers that none of our backends can be configured to be:
/// an old TLS 1.1 client, or one that offers only CBC suites.
public enum RawHandshake {
    public static let cbcOnlySuites: [UInt16] = [0xC013, 0xC014, 0xC009, 0xC00A, 0x002F, 0x0035, 0x003C]

    /// A ClientHello record. `legacyVersion` 0x0302 without supported_versions offers TLS 1.1 only.
    public static func clientHello(legacyVersion: UInt16, cipherSuites: [UInt16], serverName: String? = "localhost") -> [UInt8] {
        var body: [UInt8] = []
        body += be16(legacyVersion)
        body += [UInt8](repeating: 0x5A, count: 32)
        body += [0]
        body += be16(UInt16(cipherSuites.count * 2))
        for suite in cipherSuites { body += be16(suite) }
        body += [1, 0]
        var extensions: [UInt8] = []
        if let serverName {
            let name = Array(serverName.utf8)
            var list: [UInt8] = [0] + be16(UInt16(name.count)) + name
            list = be16(UInt16(list.count)) + list
            extensions += be16(0x0000) + be16(UInt16(list.count)) + list
        }
        // supported_groups: x25519, secp256r1
        extensions += be16(0x000A) + be16(6) + be16(4) + be16(0x001D) + be16(0x0017)
        // ec_point_formats: uncompressed
        extensions += be16(0x000B) + be16(2) + [1, 0]
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256, ed25519, rsa_pkcs1_sha1
        let algorithms: [UInt16] = [0x0403, 0x0804, 0x0401, 0x0807, 0x0201]
        extensions += be16(0x000D) + be16(UInt16(2 + algorithms.count * 2)) + be16(UInt16(algorithms.count * 2))
        for algorithm in algorithms { extensions += be16(algorithm) }
        // renegotiation_info, empty
        extensions += be16(0xFF01) + be16(1) + [0]
        body += be16(UInt16(extensions.count)) + extensions
        return record(type: 22, version: 0x0301, handshake(type: 1, body))
    }

    /// A ServerHello record that answers any ClientHello with the given version and suite.
    public static func serverHello(version: UInt16, cipherSuite: UInt16) -> [UInt8] {
        var body: [UInt8] = []
        body += be16(version)
        body += [UInt8](repeating: 0x33, count: 32)
        body += [0]
        body += be16(cipherSuite)
        body += [0]
        // renegotiation_info, empty; ec_point_formats
        let extensions: [UInt8] = be16(0xFF01) + be16(1) + [0] + be16(0x000B) + be16(2) + [1, 0]
        body += be16(UInt16(extensions.count)) + extensions
        return record(type: 22, version: version, handshake(type: 2, body))
    }

    /// A record header that claims far more than the 16 KiB + 2 KiB any record may carry.
    public static func oversizedRecordHeader(type: UInt8) -> [UInt8] { [type, 0x03, 0x03, 0xFF, 0xFF] }

    public static func record(type: UInt8, version: UInt16, _ payload: [UInt8]) -> [UInt8] {
        [type] + be16(version) + be16(UInt16(payload.count)) + payload
    }

    static func handshake(type: UInt8, _ body: [UInt8]) -> [UInt8] {
        [type, UInt8(body.count >> 16), UInt8((body.count >> 8) & 0xFF), UInt8(body.count & 0xFF)] + body
    }

    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
}
