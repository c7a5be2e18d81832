import Foundation

/// The PEM blocks of a text ("-----BEGIN LABEL-----", base64, "-----END LABEL-----"), with whatever
/// surrounds them ignored (`openssl x509 -text` output, comments), as OpenSSL and GnuTLS read them.
public enum PEMBlocks {
    public struct Block: Sendable, Hashable {
        /// What the BEGIN line names: "CERTIFICATE", "X509 CRL", "PRIVATE KEY", ...
        public let label: String
        public let der: [UInt8]
    }

    /// Whether `bytes` holds at least one BEGIN line (else it may be DER).
    public static func containsPEM(_ bytes: [UInt8]) -> Bool {
        PEMScan.contains(bytes, marker: "-----BEGIN ")
    }

    /// Every complete block, in order. Nil when a block's body is not base64, or a BEGIN line has
    /// no matching END line: a file that is half PEM is broken, not empty.
    public static func decode(_ bytes: [UInt8]) -> [Block]? {
        let text = String(decoding: bytes, as: UTF8.self)
        var blocks: [Block] = []
        var rest = text[...]
        while let begin = rest.range(of: "-----BEGIN ") {
            guard let labelEnd = rest.range(of: "-----", range: begin.upperBound..<rest.endIndex) else { return nil }
            let label = String(rest[begin.upperBound..<labelEnd.lowerBound])
            let endLine = "-----END \(label)-----"
            guard let end = rest.range(of: endLine, range: labelEnd.upperBound..<rest.endIndex) else { return nil }
            let body = rest[labelEnd.upperBound..<end.lowerBound]
            guard let data = Data(base64Encoded: String(body), options: .ignoreUnknownCharacters), !data.isEmpty else {
                return nil
            }
            blocks.append(Block(label: label, der: [UInt8](data)))
            rest = rest[end.upperBound...]
        }
        return blocks
    }
}
