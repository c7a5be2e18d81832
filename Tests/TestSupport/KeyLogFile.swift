import Foundation

/// One NSS key log line: `LABEL <client random hex> <secret hex>`.
public struct KeyLogEntry: Hashable, Sendable, CustomStringConvertible {
    public let label: String
    public let clientRandom: String
    public let secret: String

    /// Parses a line; nil for a comment, a blank line or anything not in the format (lowercase or
    /// uppercase hex, a 32-byte client random).
    public init?(line: Substring) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 3, !fields[0].isEmpty, !fields[0].hasPrefix("#"),
              fields[1].count == 64, fields[2].count >= 32, fields[2].count % 2 == 0,
              fields[1].allSatisfy(\.isHexDigit), fields[2].allSatisfy(\.isHexDigit)
        else { return nil }
        label = String(fields[0])
        clientRandom = fields[1].lowercased()
        secret = fields[2].lowercased()
    }

    /// Without the secret: what a failing expectation may print.
    public var description: String { "\(label) \(clientRandom.prefix(16))…" }
}

/// A key log file as written by `--keylog`, `openssl s_client -keylogfile` or `SSLKEYLOGFILE`.
public struct KeyLogFile: Sendable {
    /// Every line as it is in the file (without the newline), the last one included even if unterminated.
    public let lines: [String]
    /// The lines that are key log entries, in file order.
    public let entries: [KeyLogEntry]
    /// Whether the file ends with a newline (every write appended whole lines).
    public let endsWithNewline: Bool

    public init(path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        endsWithNewline = text.isEmpty || text.hasSuffix("\n")
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        self.lines = lines
        entries = lines.compactMap { KeyLogEntry(line: $0[...]) }
    }

    /// The entries of one connection, by its client random.
    public func entries(clientRandom: String) -> [KeyLogEntry] {
        entries.filter { $0.clientRandom == clientRandom.lowercased() }
    }

    /// The labels of TLS 1.3 secrets both ends can log; a key log needs at least the traffic secrets
    /// to decrypt a capture.
    public static let tls13Labels: Set<String> = [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
    ]
}
