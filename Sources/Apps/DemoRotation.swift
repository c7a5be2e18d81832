import ArgumentParser
import Foundation
import Logging
import Loop
import PKI
import Service
import TLSBackends
import TLSContract

/// `mtls demo rotation`: the certificate lifecycle under continuous traffic in one command, as a
/// timeline. One hello server per backend and one client per client×server pair, all reading one
/// `pki init` directory and watching it; while the clients request in a loop, the server's leaf is
/// renewed, the root is rotated in three stages, and a second client certificate is revoked. The
/// steps are the `PKIDirectory` functions that `mtls pki renew|rotate|revoke` run.
struct DemoRotation: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotation",
        abstract: "Renew, rotate the root CA (begin, reissue, finish) and revoke under continuous traffic, as a timeline.",
        discussion: """
            Each line: the time since the start, the step, how long until every server and client had \
            picked it up (file watch), and what the clients saw since the previous line: handshakes ok, \
            failed, and the share that resumed a session. Exit 0 only with zero failed handshakes (the \
            revoked certificate's refusals are expected, and counted apart).
            """)

    func run() throws {
        let story = try RotationStory()
        defer { story.stop() }
        let passed = try story.tell()
        if !passed { throw ExitCode(1) }
    }
}

/// The demo's moving parts, and the timeline.
private final class RotationStory: @unchecked Sendable {
    struct Tally: Sendable {
        var ok = 0
        var failed = 0
        var resumed = 0
        var failures: [String] = []
    }

    let scratch: String
    let directory: PKIDirectory
    let group = LoopGroup(count: 2)
    let logger: Logger
    var servers: [(backend: any TLSBackend, reloading: ReloadingContext, triggers: ReloadTriggers, listener: TCPServer)] = []
    var clients: [(label: String, reloading: ReloadingContext, triggers: ReloadTriggers, port: Int)] = []
    private let lock = NSLock()
    private var tally = Tally()
    private var stopping = false
    private var threads: [Thread] = []
    private let finished = DispatchSemaphore(value: 0)
    let start = Date()

    init() throws {
        scratch = NSTemporaryDirectory() + "mtls-demo-rotation-\(UUID().uuidString.prefix(8))"
        try PKIWriter.initialize(at: scratch, keyType: .ecdsaP256, intermediate: false,
                                 serverNames: ["localhost", "127.0.0.1"], clientName: DemoPKI.clientName, days: 1, force: false)
        directory = PKIDirectory(scratch)
        var logger = Logger(label: "mtls.demo.rotation")
        logger.logLevel = .critical
        self.logger = logger
        let layout = directory.layout
        for backend in TLSBackendRegistry.all {
            var configuration = TLSConfiguration.mtlsServer(
                identity: .pem(certificateChain: .file(layout.serverCertificate), privateKey: .file(layout.serverKey)),
                trustRoots: [.file(layout.caCertificate)])
            configuration.crls = [.file(directory.crl)]
            let reloading = try ReloadingContext(backend: backend, configuration: configuration, logger: logger)
            let triggers = ReloadTriggers(reloading)
            triggers.start()
            let listener = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0),
                                         contexts: reloading.provider) { [logger] in
                HelloConnection(logger: logger, requestTimeout: .seconds(10))
            }
            servers.append((backend, reloading, triggers, listener))
        }
        for server in servers {
            for backend in TLSBackendRegistry.all {
                let configuration = TLSConfiguration.mtlsClient(
                    identity: .pem(certificateChain: .file(layout.clientCertificate), privateKey: .file(layout.clientKey)),
                    trustRoots: [.file(layout.caCertificate)], serverName: "localhost")
                let reloading = try ReloadingContext(backend: backend, configuration: configuration, logger: logger)
                let triggers = ReloadTriggers(reloading)
                triggers.start()
                clients.append(("\(backend.name) → \(server.backend.name)", reloading, triggers, server.listener.port))
            }
        }
    }

    func stop() {
        let wasRunning = lock.withLock { () -> Bool in
            defer { stopping = true }
            return !stopping
        }
        if wasRunning { for _ in threads { finished.wait() } }
        clients.forEach { $0.triggers.stop() }
        servers.forEach { $0.triggers.stop(); $0.listener.shutdown(graceful: false) }
        group.shutdown()
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// One request per connection, again and again, with the client's current context.
    private func startTraffic() {
        for client in clients {
            let thread = Thread { [self] in
                while !lock.withLock({ stopping }) {
                    let outcome = HelloFetch.run(loop: group.next(), target: HostAndPort(host: "127.0.0.1", port: client.port),
                                                 path: "/hello", host: "localhost", tls: client.reloading.context, count: 1)
                    lock.withLock {
                        if let error = outcome.error {
                            tally.failed += 1
                            if tally.failures.count < 5 { tally.failures.append("\(client.label): \(error)") }
                        } else {
                            tally.ok += 1
                            if outcome.negotiated?.resumed == true { tally.resumed += 1 }
                        }
                    }
                    usleep(20_000)
                }
                finished.signal()
            }
            threads.append(thread)
            thread.start()
        }
    }

    /// The tally since the last call.
    private func takeTally() -> Tally {
        lock.withLock {
            defer { tally = Tally() }
            return tally
        }
    }

    private var everyone: [ReloadingContext] { servers.map(\.reloading) + clients.map(\.reloading) }

    /// Waits (up to 15 s) until `condition` holds for every server and client (or every server);
    /// says how long it took.
    private func pickedUp(since: Date, serversOnly: Bool = false, _ condition: (ServedCredentials) -> Bool) -> String {
        let who = serversOnly ? servers.map(\.reloading) : everyone
        let whom = serversOnly ? "by every server" : "everywhere"
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if who.allSatisfy({ condition($0.served) }) {
                return String(format: "picked up \(whom) in %.0f ms", Date().timeIntervalSince(since) * 1000)
            }
            usleep(10_000)
        }
        return "NOT picked up \(whom) within 15 s"
    }

    private var totalFailed = 0

    private func line(_ step: String, _ detail: String) {
        usleep(700_000)  // traffic on what the step installed
        let seen = takeTally()
        totalFailed += seen.failed
        let total = seen.ok + seen.failed
        let share = total == 0 ? 0 : Double(seen.resumed) * 100 / Double(total)
        let time = String(format: "+%5.1f s", Date().timeIntervalSince(start))
        print("\(time)  \(step.padding(toLength: 44, withPad: " ", startingAt: 0)) \(detail)")
        print(String(repeating: " ", count: 10) + "clients: \(seen.ok) ok, \(seen.failed) failed, \(String(format: "%.0f", share)) % resumed")
        for failure in seen.failures { print(String(repeating: " ", count: 10) + "FAILED: \(failure)") }
    }

    private func issuerName(_ summary: CertificateSummary?) -> String { summary?.issuer ?? "" }

    /// Runs the story; true when no valid client saw a failed handshake.
    func tell() throws -> Bool {
        print("PKI in \(scratch); servers: \(servers.map { "\($0.backend.name) on \($0.listener.address)" }.joined(separator: ", "))")
        print("\(clients.count) clients (\(clients.map(\.label).joined(separator: ", "))) each connect, request /hello and close, in a loop")
        print("")
        startTraffic()
        line("start", "serving \(servers[0].reloading.served.leaf?.subject ?? "?") from \(issuerName(servers[0].reloading.served.leaf))")

        var t0 = Date()
        let renewed = try directory.renew(.server)
        let renewedSerial = CertificateRevocationListDocument.Entry(serial: Array(renewed.certificate.serialNumber.bytes),
                                                                    revocationDate: Date(), reason: nil).serialHex
        line("pki renew --server", pickedUp(since: t0, serversOnly: true) { $0.leaf?.serialHex == renewedSerial }
                + " (clients keep resuming their tickets)")

        t0 = Date()
        let next = try directory.rotateBegin()
        line("pki rotate begin (ca.pem = old + new root)", pickedUp(since: t0) { $0.trustRoots.count == 2 }
                + " (new root: \(next.commonName ?? "?"))")

        t0 = Date()
        try directory.rotateReissue()
        line("pki rotate reissue (leaves from the new root)",
             pickedUp(since: t0) { $0.leaf?.issuer.contains(next.commonName ?? "?") == true })

        t0 = Date()
        try directory.rotateFinish()
        line("pki rotate finish (ca.pem = new root only)", pickedUp(since: t0) { $0.trustRoots.count == 1 })

        // A second client certificate, then its revocation.
        let mallory = try directory.authorities()[0].issue(.client(name: "mallory"))
        let malloryConfiguration = TLSConfiguration.mtlsClient(
            identity: .pem(certificateChain: .bytes(Array(mallory.chainPEM.utf8), label: "mallory.pem"),
                           privateKey: .bytes(Array(mallory.privateKeyPEM.utf8), label: "mallory.key")),
            trustRoots: [.file(directory.layout.caCertificate)], serverName: "localhost")
        let before = try probe(malloryConfiguration)
        t0 = Date()
        let revoked = try directory.revoke(mallory.certificate, reason: .keyCompromise)
        let loaded = pickedUp(since: t0, serversOnly: true) { $0.crlEntries == 1 }
        var refusal = "NOT refused within 15 s"
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if let error = try probe(malloryConfiguration) {
                refusal = String(format: "refused %.0f ms after the revocation: ", Date().timeIntervalSince(t0) * 1000)
                    + UserFacingError.describe(error, role: .client, options: nil, hasIdentity: true)
                break
            }
            usleep(20_000)
        }
        line("pki revoke mallory (serial \(revoked.serialHex.prefix(12))…)",
             "CRL \(loaded); mallory \(before == nil ? "got in before" : "was refused even before (!)"), then \(refusal)")

        lock.withLock { stopping = true }
        for _ in threads { finished.wait() }
        threads = []
        print("")
        if totalFailed == 0 && before == nil && refusal.hasPrefix("refused") {
            print("zero failed handshakes: renewal, root rotation and revocation without a restart or a dropped client")
            return true
        }
        print("\(totalFailed) failed handshake(s)\(before != nil ? "; mallory was refused before its revocation" : "")\(refusal.hasPrefix("refused") ? "" : "; mallory was not refused")")
        return false
    }

    /// One request with `configuration` to every server; the first error, or nil when all answered.
    private func probe(_ configuration: TLSConfiguration) throws -> ConnectionError? {
        for server in servers {
            let context = try server.backend.makeContext(configuration)
            let outcome = HelloFetch.run(loop: group.next(), target: HostAndPort(host: "127.0.0.1", port: server.listener.port),
                                         path: "/hello", host: "localhost", tls: context, count: 1)
            if let error = outcome.error { return error }
        }
        return nil
    }
}
