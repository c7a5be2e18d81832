import Foundation
import Testing
import TestSupport

/// `--keylog FILE` checked against OpenSSL's own key log: for one connection, the secrets our end
/// logs must be exactly those `openssl s_client -keylogfile` / `s_server -keylogfile` logs (same client
/// random, same secrets), whichever backend we run. Secrets that disagreed would not decrypt a capture.
/// (scripts/pod-to-pod goes further and decrypts a real capture with tshark.)
@Suite("--keylog against OpenSSL's key log")
struct KeyLogCommandTests {
    static let backends = ["openssl", "gnutls"]
    static let versions = ["1.2", "1.3"]
    static let earlierLine = "# written before the server started; must be kept"

    @Test("Our server's key log holds the secrets s_client logged for the connection", arguments: backends, versions)
    func serverAgreesWithSClient(backend: String, version: String) throws {
        let pki = try PKIFixture()
        let ourLog = try pki.directory.write("server.keylog", Self.earlierLine + "\n")
        let theirLog = pki.file("s_client.keylog")
        let server = try ServerProcess(try mtlsExecutable(), [
            "echo-server", "--pki", pki.path, "--listen", "127.0.0.1:0", "--backend", backend, "--loops", "1",
            "--keylog", ourLog])
        defer { server.stop() }
        let sClient = try runBounded("openssl", [
            "s_client", "-connect", "127.0.0.1:\(server.port)", "-servername", "localhost", "-CAfile", pki.file("ca.pem"),
            "-cert", pki.file("client.pem"), "-key", pki.file("client.key"), "-tls" + version.replacingOccurrences(of: ".", with: "_"),
            "-keylogfile", theirLog, "-quiet", "-no_ign_eof"], input: "ping\n", timeout: 30)
        #expect(sClient.status == 0, "s_client: \(sClient.output)")

        try expectSameSecrets(ours: ourLog, theirs: theirLog, version: version, context: "\(backend) server, TLS \(version)")
        let ours = try KeyLogFile(path: ourLog)
        #expect(ours.lines.first == Self.earlierLine, "the key log was truncated")
        #expect(server.log.contains("anyone who can read \(ourLog) can decrypt this traffic"), "no warning: \(server.log)")
        for entry in ours.entries {
            #expect(!server.log.lowercased().contains(entry.secret), "a secret reached the server's log")
        }
    }

    @Test("Our client's key log holds the secrets s_server logged for the connection", arguments: backends, versions)
    func clientAgreesWithSServer(backend: String, version: String) throws {
        let pki = try PKIFixture()
        let scratch = try TemporaryDirectory()
        try scratch.write("hello", "hello from s_server\n")
        let ourLog = pki.file("client.keylog")
        let theirLog = pki.file("s_server.keylog")
        let port = freePort()
        let server = try ServerProcess("openssl", [
            "s_server", "-accept", "127.0.0.1:\(port)", "-cert", pki.file("server.pem"), "-key", pki.file("server.key"),
            "-CAfile", pki.file("ca.pem"), "-Verify", "1", "-verify_return_error", "-WWW",
            "-tls" + version.replacingOccurrences(of: ".", with: "_"), "-keylogfile", theirLog],
            port: port, directory: scratch.path)
        defer { server.stop() }
        // The server's start-up probe (waitUntilAccepting) made a TCP connection without TLS: it logs nothing.
        let client = try runBounded(try mtlsExecutable(), [
            "hello-client", "--pki", pki.path, "--url", "https://localhost:\(port)/hello", "--backend", backend,
            "--keylog", ourLog], timeout: 30)
        #expect(client.status == 0 && client.output.contains("hello from s_server"), "hello-client: \(client.output)")
        #expect(client.output.contains("anyone who can read \(ourLog) can decrypt this traffic"))

        try expectSameSecrets(ours: ourLog, theirs: theirLog, version: version, context: "\(backend) client, TLS \(version)")
    }

    @Test("A key log that cannot be opened stops the command with one line naming it")
    func unopenableKeyLog() throws {
        let pki = try PKIFixture()
        let path = pki.file("no-such-directory/keylog")
        let result = try runBounded(try mtlsExecutable(), [
            "echo-server", "--pki", pki.path, "--listen", "127.0.0.1:0", "--keylog", path], timeout: 30)
        #expect(result.status == 1)
        #expect(result.output.contains("--keylog \(path)"), "\(result.output)")
        #expect(!result.output.contains("listening on"))
    }

    @Test("--keylog without TLS is a usage error, not silently ignored",
          arguments: [["echo-server", "--mode", "plain"], ["hello-server", "--mode", "plain"], ["echo-client", "--plain"]])
    func keyLogWithoutTLS(arguments: [String]) throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("keylog")
        let result = try runBounded(try mtlsExecutable(), arguments + ["--keylog", path], input: "", timeout: 30)
        #expect(result.status == 64 && result.output.contains("--keylog records TLS secrets"), "\(result.output)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    /// Both files hold one connection's entries: the same client random, the same secrets for every
    /// label OpenSSL logs (TLS 1.2: CLIENT_RANDOM; TLS 1.3: the four traffic secrets and EXPORTER_SECRET).
    private func expectSameSecrets(ours oursPath: String, theirs theirsPath: String, version: String, context: String,
                                   sourceLocation: SourceLocation = #_sourceLocation) throws {
        let ours = try KeyLogFile(path: oursPath)
        let theirs = try KeyLogFile(path: theirsPath)
        let randoms = Set(theirs.entries.map(\.clientRandom))
        try #require(randoms.count == 1, "\(context): OpenSSL logged \(randoms.count) connections", sourceLocation: sourceLocation)
        let expected = Set(theirs.entries)
        let required: Set<String> = version == "1.2" ? ["CLIENT_RANDOM"] : KeyLogFile.tls13Labels
        #expect(required.isSubset(of: Set(expected.map(\.label))), "\(context): \(expected)", sourceLocation: sourceLocation)
        #expect(Set(ours.entries(clientRandom: randoms.first!)) == expected,
                "\(context): ours \(ours.entries), OpenSSL's \(expected)", sourceLocation: sourceLocation)
        #expect(ours.endsWithNewline, sourceLocation: sourceLocation)
    }
}
