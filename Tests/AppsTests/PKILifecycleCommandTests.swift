import Foundation
import TLSContract
import Testing
import TestSupport

/// The certificate lifecycle through the real commands, for every client×server backend pair:
/// `pki init`, `hello-server --pki --crl` and a `hello-client --count --interval` loop running
/// throughout; `pki renew --server`, `pki rotate begin`, `reissue` and `finish`, each picked up by
/// the file watches of both processes; then `pki revoke --cert client.pem`, after which the client
/// is refused as revoked and the server names the serial. openssl checks the files on the way: the
/// bundle accepts leaves of both roots during the overlap, and its CRL verdict matches ours.
@Suite("PKI lifecycle commands", .serialized)
struct PKILifecycleCommandTests {
    struct Pair: Sendable, CustomTestStringConvertible {
        let client: String
        let server: String
        static let all = ["openssl", "gnutls"].flatMap { client in ["openssl", "gnutls"].map { Pair(client: client, server: $0) } }
        var testDescription: String { "\(client) client → \(server) server" }
    }

    /// Waits until `text` appears in `log()` more than `already` times; the seconds since `since`
    /// (default: the call) when it did, or nil.
    private func waitFor(_ text: String, in log: () -> String, moreThan already: Int = 0, since: Date = Date(),
                         seconds: Double = 15) -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            if log().components(separatedBy: text).count - 1 > already { return Date().timeIntervalSince(since) }
            usleep(20_000)
        }
        return nil
    }

    private func occurrences(_ text: String, in log: String) -> Int { log.components(separatedBy: text).count - 1 }

    private func run(_ arguments: String...) throws -> ToolResult {
        let result = try runTool(try mtlsExecutable(), arguments)
        try #require(result.status == 0, "mtls \(arguments.joined(separator: " ")): \(result.output)")
        return result
    }

    private func serial(_ path: String) throws -> String {
        try CertificateSummary.certificates(in: Array(try Data(contentsOf: URL(fileURLWithPath: path))), name: path)[0].serialHex
    }

    @Test("renew, rotate begin/reissue/finish and revoke, picked up by the watches under a client loop: zero failed requests until the revocation, then refused as revoked",
          .timeLimit(.minutes(3)), arguments: Pair.all)
    func lifecycle(pair: Pair) throws {
        let scratch = try TemporaryDirectory(prefix: "mtls-lifecycle-commands")
        let dir = scratch.file("pki")
        let file = { (name: String) in (dir as NSString).appendingPathComponent(name) }
        _ = try run("pki", "init", "--out", dir)
        let server = try ServerProcess(try mtlsExecutable(), ["hello-server", "--pki", dir, "--crl", file("crl.pem"),
                                                              "--backend", pair.server, "--listen", "127.0.0.1:0"])
        defer { server.stop() }
        let url = "https://127.0.0.1:\(server.port)/hello"
        let loop = try ChildProcess(try mtlsExecutable(), ["hello-client", "--pki", dir, "--backend", pair.client, "--url", url,
                                                           "--count", "100000", "--interval", "0.05"])
        defer { loop.terminate() }
        try #require(waitFor("[3/100000]", in: { loop.output }) != nil, "the client loop did not start: \(loop.output)")
        var timings: [String] = []
        let reloadLine = "reloaded (file change)"

        // Renewal of the server's leaf: a new client sees the new serial.
        var serverReloads = occurrences(reloadLine, in: server.log)
        let renewStarted = Date()
        let renewed = try run("pki", "renew", "--pki", dir, "--server")
        #expect(renewed.output.contains("renewed \(file("server.pem"))"), "\(renewed.output)")
        let renewedSerial = try serial(file("server.pem"))
        let renewal = try #require(waitFor(reloadLine, in: { server.log }, moreThan: serverReloads, since: renewStarted), "no reload: \(server.log)")
        #expect(server.log.contains("serial=\(renewedSerial)"), "\(server.log)")
        #expect(server.log.contains("session tickets kept"), "\(server.log)")
        let seen = try run("hello-client", "--pki", dir, "--backend", pair.client, "--url", url)
        #expect(seen.output.contains("server serial: \(renewedSerial)"), "\(seen.output)")
        timings.append(String(format: "renew --server: server reloaded %.0f ms after the command started", renewal * 1000))

        // Stage 1: both processes come to trust both roots.
        let oldClient = scratch.file("old-client.pem")
        try Data(contentsOf: URL(fileURLWithPath: file("client.pem"))).write(to: URL(fileURLWithPath: oldClient))
        serverReloads = occurrences(reloadLine, in: server.log)
        var clientReloads = occurrences(reloadLine, in: loop.output)
        var issued = Date()
        let begun = try run("pki", "rotate", "begin", "--pki", dir)
        #expect(begun.output.contains("Root CA G2"), "\(begun.output)")
        let beginServer = try #require(waitFor("trust roots=2", in: { server.log }, since: issued), "the server did not load the bundle: \(server.log)")
        let beginClient = try #require(waitFor("trust roots=2", in: { loop.output }, since: issued), "the client did not load the bundle: \(loop.output)")
        #expect(occurrences(reloadLine, in: server.log) > serverReloads && occurrences(reloadLine, in: loop.output) > clientReloads)
        timings.append(String(format: "rotate begin: reloaded with both roots: server %.0f ms, client %.0f ms after the command started", beginServer * 1000, beginClient * 1000))

        // Stage 2: new leaves on both sides; the bundle (openssl) accepts the old and the new.
        serverReloads = occurrences(reloadLine, in: server.log)
        clientReloads = occurrences(reloadLine, in: loop.output)
        issued = Date()
        _ = try run("pki", "rotate", "reissue", "--pki", dir)
        let (newServer, newClient) = (try serial(file("server.pem")), try serial(file("client.pem")))
        let reissueServer = try #require(waitFor("serial=\(newServer)", in: { server.log }, since: issued), "server: \(server.log)")
        let reissueClient = try #require(waitFor("serial=\(newClient)", in: { loop.output }, since: issued), "client: \(loop.output)")
        timings.append(String(format: "rotate reissue: new leaf served: server %.0f ms, client %.0f ms after the command started", reissueServer * 1000, reissueClient * 1000))
        for leaf in [oldClient, file("client.pem"), file("server.pem")] {
            let verified = try runTool("openssl", ["verify", "-CAfile", file("ca.pem"), leaf])
            #expect(verified.succeeded, "the bundle does not accept \(leaf): \(verified.output)")
        }

        // Stage 3: the old root goes.
        serverReloads = occurrences("trust roots=1", in: server.log)
        clientReloads = occurrences("trust roots=1", in: loop.output)
        issued = Date()
        let finished = try run("pki", "rotate", "finish", "--pki", dir)
        #expect(finished.output.contains("retired"), "\(finished.output)")
        let finishServer = try #require(waitFor("trust roots=1", in: { server.log }, moreThan: serverReloads, since: issued), "server: \(server.log)")
        let finishClient = try #require(waitFor("trust roots=1", in: { loop.output }, moreThan: clientReloads, since: issued), "client: \(loop.output)")
        timings.append(String(format: "rotate finish: new root only: server %.0f ms, client %.0f ms after the command started", finishServer * 1000, finishClient * 1000))
        #expect(!(try runTool("openssl", ["verify", "-CAfile", file("ca.pem"), oldClient])).succeeded)
        usleep(300_000)

        // Every request of the loop so far succeeded.
        loop.terminate()
        let lines = loop.output.split(separator: "\n")
        let answered = lines.filter { $0.hasPrefix("[") && $0.contains("hello, client") }.count
        let failed = lines.filter { $0.contains("mtls hello-client: [") }
        #expect(failed.isEmpty, "failed requests: \(failed.prefix(3))")
        #expect(answered > 20, "\(loop.output)")
        let resumed = lines.filter { $0.hasPrefix("[") && $0.contains(", resumed)") }.count
        timings.append("client loop: \(answered) requests, \(failed.count) failed, \(resumed) resumed")

        // Revocation of the client: refused from the next handshake on; the server names the serial.
        let start = Date()
        let revoked = try run("pki", "revoke", "--pki", dir, "--cert", file("client.pem"), "--reason", "keyCompromise")
        #expect(revoked.output.contains("revoked serial \(newClient)"), "\(revoked.output)")
        var refusal: ToolResult?
        while Date().timeIntervalSince(start) < 15 {
            let attempt = try runTool(try mtlsExecutable(), ["hello-client", "--pki", dir, "--backend", pair.client, "--url", url])
            if attempt.status != 0 { refusal = attempt; break }
            usleep(50_000)
        }
        let refused = try #require(refusal, "the revoked client still got in: \(server.log)")
        timings.append(String(format: "revoke: first refused client %.0f ms after the command started", Date().timeIntervalSince(start) * 1000))
        #expect(refused.output.contains("revoked"), "\(refused.output)")
        #expect(waitFor(newClient, in: { server.log }) != nil, "the server's log does not name the serial: \(server.log)")
        #expect(server.log.contains("revoked"), "\(server.log)")

        // openssl agrees with our CRL.
        let crlText = try runTool("openssl", ["crl", "-in", file("crl.pem"), "-noout", "-text"])
        #expect(crlText.succeeded && crlText.output.contains("Serial Number: \(newClient)"), "\(crlText.output)")
        #expect(crlText.output.contains("Key Compromise"), "\(crlText.output)")
        let verdict = try runTool("openssl", ["verify", "-crl_check", "-CAfile", file("ca.pem"), "-CRLfile", file("crl.pem"), file("client.pem")])
        #expect(!verdict.succeeded && verdict.output.contains("certificate revoked"), "\(verdict.output)")
        let serverVerdict = try runTool("openssl", ["verify", "-crl_check", "-CAfile", file("ca.pem"), "-CRLfile", file("crl.pem"), file("server.pem")])
        #expect(serverVerdict.succeeded, "\(serverVerdict.output)")

        print("── mtls commands, \(pair.testDescription)")
        for line in timings { print("   \(line)") }
    }

    @Test("pki renew --watch renews at about two thirds of the lifetime, logs the next renewal, and exits 0 on SIGTERM")
    func renewWatch() throws {
        let scratch = try TemporaryDirectory(prefix: "mtls-renew-watch")
        let dir = scratch.file("pki")
        _ = try run("pki", "init", "--out", dir)
        let certificate = (dir as NSString).appendingPathComponent("client.pem")
        _ = try run("pki", "renew", "--pki", dir, "--client", "--valid", "6s")
        let first = try serial(certificate)
        let daemon = try ChildProcess(try mtlsExecutable(), ["pki", "renew", "--pki", dir, "--client", "--watch"])
        defer { daemon.terminate() }
        // 6 s certificates renew 3.6 to 4.4 s after they were issued.
        try #require(waitFor("next renewal of \(certificate)", in: { daemon.output }) != nil, "\(daemon.output)")
        try #require(waitFor("renewed \(certificate)", in: { daemon.output }, seconds: 10) != nil, "no renewal: \(daemon.output)")
        let second = try serial(certificate)
        #expect(second != first)
        #expect(daemon.output.contains("serial \(second)"), "\(daemon.output)")
        #expect(waitFor("next renewal of \(certificate)", in: { daemon.output }, moreThan: 1) != nil, "\(daemon.output)")
        // The renewed certificate keeps the 6 s lifetime.
        let summary = try CertificateSummary.certificates(in: Array(try Data(contentsOf: URL(fileURLWithPath: certificate))), name: certificate)[0]
        #expect(abs(summary.notValidAfter.timeIntervalSince(summary.notValidBefore) - 3606) < 3, "\(summary.notValidBefore) – \(summary.notValidAfter)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.wait(seconds: 10) == 0, "\(daemon.output)")
        #expect(daemon.output.contains("stopping (signal)"), "\(daemon.output)")
    }

    @Test("mtls demo rotation prints the timeline and ends with zero failed handshakes; mtls demo alone still runs the pairs")
    func demoRotation() throws {
        let result = try runTool(try mtlsExecutable(), ["demo", "rotation"])
        #expect(result.status == 0, "\(result.output)")
        for step in ["pki renew --server", "pki rotate begin", "pki rotate reissue", "pki rotate finish", "pki revoke mallory",
                     "mallory got in before, then refused", "certificate_revoked", "zero failed handshakes"] {
            #expect(result.output.contains(step), "'\(step)' missing from:\n\(result.output)")
        }
        #expect(!result.output.contains("FAILED"), "\(result.output)")
        let lines = result.output.split(separator: "\n").filter { $0.contains("clients: ") }
        #expect(lines.count == 6 && lines.allSatisfy { $0.contains(" 0 failed") }, "\(lines)")
        print(result.output)
        let pairs = try runTool(try mtlsExecutable(), ["demo"])
        #expect(pairs.status == 0 && pairs.output.contains("All four pairs completed mTLS over loopback"), "\(pairs.output)")
        #expect(!pairs.output.contains("rotate"), "\(pairs.output)")
    }
}
