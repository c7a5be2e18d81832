import Foundation
import Testing
import TestSupport

/// Our servers against an outside TLS stack (Python's ssl) that misbehaves on purpose: clients that
/// close or reset while the server writes, write from two threads, crawl through a request head or
/// trickle an unfinished record. The server must stay up, keep serving, and give back every descriptor.
@Suite("Hostile peers")
struct HostilePeerTests {
    static let backends = ["openssl", "gnutls"]

    /// Tests/Peers/python/hostile_clients.py, next to this file's folder.
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Peers/python/hostile_clients.py").path

    private func hostile(_ pki: PKIFixture, port: Int, _ mode: String, count: Int = 1) throws -> ToolResult {
        try runTool("/usr/bin/env", ["python3", Self.script, pki.file("ca.pem"), pki.file("client.pem"),
                                     pki.file("client.key"), "\(port)", mode, "\(count)"])
    }

    private func served(_ pki: PKIFixture, port: Int) throws -> (ok: Bool, seconds: Double, output: String) {
        let started = Date()
        let curl = try runTool("/usr/bin/curl", [
            "-sS", "--max-time", "10", "--cacert", pki.file("ca.pem"), "--cert", pki.file("client.pem"),
            "--key", pki.file("client.key"), "--resolve", "localhost:\(port):127.0.0.1", "https://localhost:\(port)/hello"])
        return (curl.output.contains("hello, client"), Date().timeIntervalSince(started), curl.output)
    }

    /// What each open descriptor of `pid` points at.
    private func descriptors(of pid: pid_t) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return names.sorted().map { name in
            "\(name)->\((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)")) ?? "?")"
        }
    }

    @Test("1,000 clients that close, reset or write from two threads while the server writes: it stays up, serves, leaks nothing",
          arguments: backends)
    func storm(backend: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "2"])
        defer { server.stop() }
        // A first small storm opens what the process opens once (a library's /dev/null, say), so
        // that only what the big one leaks is counted.
        _ = try hostile(pki, port: server.port, "storm", count: 20)
        #expect(try served(pki, port: server.port).ok)
        usleep(500_000)
        let before = descriptors(of: server.pid)
        let storm = try hostile(pki, port: server.port, "storm", count: 1000)
        #expect(storm.status == 0, "\(storm.output)")
        #expect(storm.output.contains("1000 of 1000 handshakes completed"), "\(storm.output)")
        // The crash this guards against came from a close timer (5 s) firing on a freed connection.
        usleep(6_000_000)
        #expect(server.isRunning, "the server died: \(server.log.suffix(2000))")
        let after = try served(pki, port: server.port)
        #expect(after.ok, "\(after.output)")
        var now = descriptors(of: server.pid)
        for _ in 0..<50 where now.count > before.count { usleep(100_000); now = descriptors(of: server.pid) }
        #expect(now.count == before.count, "new descriptors: \(Set(now).subtracting(before).sorted())")
        #expect(!server.log.contains("Fatal error"), "\(server.log.suffix(2000))")
    }

    @Test("A client crawling through a request head, and one trickling an unfinished record, are closed at their deadlines; a good client is served within a second",
          arguments: backends)
    func slowPeers(backend: String) throws {
        let pki = try PKIFixture()
        let server = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--backend", backend, "--pki", pki.path, "--listen", "127.0.0.1:0", "--loops", "1",
            "--request-timeout", "3", "--idle-timeout", "1"])
        defer { server.stop() }
        let port = server.port
        let results = Shared<[String: ToolResult]>([:])
        let group = DispatchGroup()
        for mode in ["slow-header", "trickle"] {
            group.enter()
            DispatchQueue.global().async {
                let result = try? self.hostile(pki, port: port, mode)
                results.with { $0[mode] = result }
                group.leave()
            }
        }
        usleep(500_000)
        let good = try served(pki, port: port)
        #expect(good.ok, "\(good.output)")
        #expect(good.seconds < 1, "a good client waited \(good.seconds) s behind slow peers")
        group.wait()
        // Each byte of the crawling head is a whole TLS record (application progress, so the idle
        // timer does not fire): the request-head deadline closes it. The trickle never completes a
        // record: the idle timer closes it first.
        for (mode, limit) in [("slow-header", 3.0), ("trickle", 1.0)] {
            let output = results.current[mode]?.output ?? "did not run"
            let seconds = output.split(separator: " ").dropFirst(2).first.flatMap { Double($0) }
            let closedAfter = try #require(seconds, "\(mode): \(output)")
            // Closed by the deadline (plus a few 200 ms sends of slack), long before the script's 15 s.
            #expect(closedAfter >= limit - 0.3 && closedAfter < limit + 1.5, "\(mode): \(output)")
        }
        #expect(server.log.contains("the request head did not arrive in time"), "\(server.log.suffix(2000))")
        #expect(server.log.contains("idle"), "\(server.log.suffix(2000))")
    }

    @Test("A second server on a port one of ours holds exits 1 with 'address already in use'",
          arguments: ["handoff", "reuseport"])
    func secondServerRefused(strategy: String) throws {
        let pki = try PKIFixture()
        let first = try ServerProcess(try mtlsExecutable(), [
            "hello-server", "--pki", pki.path, "--listen", "127.0.0.1:0", "--accept", strategy])
        defer { first.stop() }
        for second in ["handoff", "reuseport"] {
            let run = try ChildProcess(try mtlsExecutable(), [
                "hello-server", "--pki", pki.path, "--listen", "127.0.0.1:\(first.port)", "--accept", second])
            let status = run.wait(seconds: 10)
            #expect(status == 1, "a second server (\(second)) started beside the first (\(strategy)): \(run.output)")
            #expect(run.output.contains("address already in use"), "\(run.output)")
        }
    }
}

extension HostilePeerTests {
    @Test("echo-client against a server that never answers exits 1 with a clear message, TLS or plain",
          arguments: [false, true])
    func echoClientReadTimeout(plain: Bool) throws {
        let pki = try PKIFixture()
        // A listener that never accepts: the kernel completes the TCP handshake, nobody says a word.
        let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(silent) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(silent, $0, length); return getsockname(silent, $0, &length) }
        }
        listen(silent, 8)
        let port = Int(UInt16(bigEndian: address.sin_port))
        var arguments = ["echo-client", "--connect", "127.0.0.1:\(port)", "--bytes", "1000", "--read-timeout", "1"]
        arguments += plain ? ["--plain"] : ["--pki", pki.path]
        let started = Date()
        let run = try runTool(try mtlsExecutable(), arguments)
        #expect(run.status == 1, "\(run.output)")
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(run.output.contains(plain ? "idle" : "did not finish in time"), "\(run.output)")
    }
}
