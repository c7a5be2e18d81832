import Dispatch
import Foundation
import TLSContract
import Testing
import TestSupport

@Suite("Key log")
struct KeyLogTests {
    /// What a user's key log held before: it must survive, as must its permissions' intent (append only).
    static let earlierLine = "# an earlier session's line, kept"

    @Test("Both ends log the same secrets for one connection, appended after what the file held",
          arguments: BackendPair.all, TLSVersion.allCases)
    func bothEndsLogTheSameSecrets(pair: BackendPair, version: TLSVersion) throws {
        let directory = try TemporaryDirectory()
        let clientPath = try directory.write("client.keylog", Self.earlierLine + "\n")
        let serverPath = try directory.write("server.keylog", Self.earlierLine + "\n")
        let pki = TestPKI.shared(.ecdsaP256)
        var client = pki.clientConfiguration(versions: version ... version)
        client.keyLog = try TLSKeyLog(path: clientPath)
        var server = pki.serverConfiguration(versions: version ... version)
        server.keyLog = try TLSKeyLog(path: serverPath)
        try handshakeAndExchangeLines(try pair.connect(client: client, server: server), "\(version)")

        let clientLog = try KeyLogFile(path: clientPath)
        let serverLog = try KeyLogFile(path: serverPath)
        for log in [clientLog, serverLog] {
            #expect(log.lines.first == Self.earlierLine, "the file was truncated or rewritten")
            #expect(log.endsWithNewline)
            // Every line after the earlier one is a whole entry of this one connection.
            #expect(log.entries.count == log.lines.count - 1, "\(log.lines.count - 1 - log.entries.count) malformed line(s)")
            #expect(Set(log.entries.map(\.clientRandom)).count == 1, "one connection, one client random")
        }
        let required: Set<String> = version == .tls12 ? ["CLIENT_RANDOM"] : KeyLogFile.tls13Labels
        let clientRequired = Set(clientLog.entries.filter { required.contains($0.label) })
        let serverRequired = Set(serverLog.entries.filter { required.contains($0.label) })
        #expect(Set(clientRequired.map(\.label)) == required, "client: \(clientLog.entries)")
        #expect(Set(serverRequired.map(\.label)) == required, "server: \(serverLog.entries)")
        #expect(clientRequired == serverRequired, "the two ends disagree on a secret")
        // Whatever else both log (EXPORTER_SECRET) agrees too.
        let clientByLabel = Dictionary(clientLog.entries.map { ($0.label, $0) }, uniquingKeysWith: { first, _ in first })
        for entry in serverLog.entries where clientByLabel[entry.label] != nil {
            #expect(clientByLabel[entry.label] == entry, "\(entry.label) differs between the ends")
        }
        if version == .tls12 {
            #expect(clientLog.entries.allSatisfy { $0.secret.count == 96 }, "a TLS 1.2 master secret is 48 bytes")
        }
    }

    @Test("Without a key log configured nothing is written, and a context works as before", arguments: BackendPair.all)
    func offByDefault(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        #expect(pki.clientConfiguration().keyLog == nil && pki.serverConfiguration().keyLog == nil)
        try handshakeAndExchangeLines(try pair.connect(client: pki.clientConfiguration(), server: pki.serverConfiguration()), "default")
    }

    @Test("A new key log file is created readable by its owner only")
    func createdPrivate() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("new.keylog")
        let keyLog = try TLSKeyLog(path: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(!keyLog.isReadableByOthers)
        #expect(!"\(keyLog)".isEmpty)
    }

    @Test("A key log that cannot be opened is a configuration error naming the file")
    func unopenable() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("missing-directory/keylog")
        #expect {
            try TLSKeyLog(path: path)
        } throws: { error in
            guard let error = error as? TLSError, case .configuration(let file, _) = error.reason else { return false }
            return file == path
        }
    }

    @Test("Concurrent writers, in one process or through two opens of the file, never interleave within a line")
    func concurrentWritersKeepLinesWhole() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("shared.keylog", Self.earlierLine + "\n")
        let logs = [try TLSKeyLog(path: path), try TLSKeyLog(path: path)]
        let writers = 8
        let linesPerWriter = 500
        DispatchQueue.concurrentPerform(iterations: writers) { writer in
            let random = [UInt8](repeating: UInt8(writer), count: 32)
            let secret = [UInt8](repeating: UInt8(0xa0 + writer), count: 48)
            for _ in 0..<linesPerWriter {
                random.withUnsafeBytes { random in
                    secret.withUnsafeBytes { secret in
                        logs[writer % 2].append(label: "CLIENT_RANDOM", clientRandom: random, secret: secret)
                    }
                }
            }
        }
        let file = try KeyLogFile(path: path)
        #expect(file.lines.first == Self.earlierLine)
        #expect(file.entries.count == writers * linesPerWriter)
        #expect(file.lines.count == writers * linesPerWriter + 1, "a line was torn or merged")
        for entry in file.entries {
            // Each line's random and secret come from the same writer: nothing mixed.
            let writer = Int(UInt8(entry.clientRandom.prefix(2), radix: 16)!)
            #expect(entry.secret == String(repeating: String(format: "%02x", 0xa0 + writer), count: 48))
        }
    }
}
