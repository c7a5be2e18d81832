import Foundation
import Loop
import PKI
import Service
import TLSBackends
import TLSContract
import Testing
import TestSupport

/// The certificate lifecycle under continuous traffic, in one process for each client×server
/// backend pair: a server (Loop + ReloadingContext + ReloadTriggers) and three clients that each
/// reconnect in a loop with their own reloading credentials, plus one connection that stays open
/// and keeps echoing throughout. While they run:
///
/// 1. the server's leaf is renewed by renaming new files into place (the watch picks it up; the
///    clients keep resuming the tickets issued before, a new client sees the new leaf);
/// 2. client A's leaf is renewed the same way (A's own watch);
/// 3. client C is revoked: a CRL listing it is renamed over the server's crl.pem;
/// 4. the server's certificate file is replaced by garbage, then restored;
/// 5. the server's leaf is renewed again, with the watch stopped, by an explicit reload call
///    (the in-process stand-in for SIGHUP; the binary's SIGHUP is ReloadCommandTests').
///
/// Valid clients (A and B, and C until its revocation) see zero failed handshakes, the long-lived
/// connection is never dropped, C is refused from the first connection after the reload that
/// loaded its revocation, and the broken file changes nothing but one error line. Each change's
/// pick-up time is printed.
@Suite("Lifecycle under traffic", .serialized)
struct LifecycleTests {
    struct Pair: Sendable, CustomTestStringConvertible {
        let client: any TLSBackend
        let server: any TLSBackend
        static let all: [Pair] = TLSBackendRegistry.pairs.map { Pair(client: $0.client, server: $0.server) }
        var testDescription: String { "\(client.name) client → \(server.name) server" }
    }

    @Test("Renewals, a revocation and a broken file under continuous traffic: zero failed handshakes for valid clients",
          .timeLimit(.minutes(2)), arguments: Pair.all)
    func lifecycle(pair: Pair) throws {
        let run = try LifecycleRun(pair: pair)
        try run.execute()
    }
}

/// A reloading server with its file watch, echoing on a loopback port and recording who connected,
/// and the loops its clients run on. `shutdown` stops it all.
final class ServerUnderTraffic: @unchecked Sendable {
    let logs = LogRecorder()
    let reloading: ReloadingContext
    let reloads: ReloadLog
    let triggers: ReloadTriggers
    let group = LoopGroup(count: 2)
    let clientGroup = LoopGroup(count: 1)
    let listener: TCPServer
    let accepted = Shared<[LifecycleRun.ServerSide]>([])

    init(backend: any TLSBackend, configuration: TLSConfiguration) throws {
        reloading = try ReloadingContext(backend: backend, configuration: configuration, logger: logs.logger("server"))
        reloads = ReloadLog(reloading)
        triggers = ReloadTriggers(reloading)
        triggers.start()
        let accepted = self.accepted
        listener = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), contexts: reloading.provider) {
            RecordingEcho(accepted)
        }
    }

    func shutdown() {
        triggers.stop()
        listener.shutdown(graceful: false)
        group.shutdown()
        clientGroup.shutdown()
    }
}

/// One pair's run: the setup, the steps, the checks and the timings.
final class LifecycleRun: @unchecked Sendable {
    let pair: LifecycleTests.Pair
    let pki: RenewablePKI
    let serverFiles: CredentialDirectory
    let site: ServerUnderTraffic
    var clients: [TrafficClient] = []
    var timings: [(String, String)] = []
    var server: ReloadingContext { site.reloading }
    var serverLogs: LogRecorder { site.logs }
    var serverReloads: ReloadLog { site.reloads }
    var serverTriggers: ReloadTriggers { site.triggers }
    var clientGroup: LoopGroup { site.clientGroup }
    var listener: TCPServer { site.listener }
    var accepted: Shared<[ServerSide]> { site.accepted }

    struct ServerSide: Sendable {
        let at: Date
        let clientLeafDER: [UInt8]?
        let error: String?
        let reason: TLSError.Reason?
    }

    init(pair: LifecycleTests.Pair) throws {
        self.pair = pair
        pki = try RenewablePKI()
        let configuration: TLSConfiguration
        (serverFiles, configuration) = try pki.serverFiles(prefix: "mtls-lifecycle-server")
        site = try ServerUnderTraffic(backend: pair.server, configuration: configuration)
    }

    deinit {
        clients.forEach { $0.stop() }
        site.shutdown()
    }

    func execute() throws {
        for name in ["A", "B", "C"] {
            clients.append(try TrafficClient(name: name, pki: pki, backend: pair.client, group: clientGroup, port: listener.port))
        }
        let a = clients[0], b = clients[1], c = clients[2]
        let longLived = try KeepAlive(context: b.reloading.context, loop: clientGroup.loops[0], port: listener.port)
        clients.forEach { $0.start() }
        longLived.start()
        try TrafficClient.waitForFirstHandshakes(clients)

        // 1. The server's leaf, renamed into place (certificate, then key 50 ms later).
        let renewed = try pki.server()
        var t0 = Date()
        try serverFiles.replace("server.pem", renewed.chainPEM)
        usleep(50_000)
        try serverFiles.replace("server.key", renewed.privateKeyPEM)
        let afterKey = Date()
        try #require(eventually { self.serverReloads.replacements.count == 1 }, "the watch did not reload: \(serverLogs.lines)")
        let reload1 = serverReloads.replacements[0].finishedAt
        // The clients keep resuming their tickets (kept across the renewal); a new client sees the new leaf.
        let seen1 = try #require(newClientSees(serverLeaf: renewed.certificateDER), "no new client saw the renewed leaf")
        record("server leaf renewed (rename, watch)",
               "reloaded \(ms(reload1, since: afterKey)) after the key's rename (\(ms(reload1, since: t0)) after the certificate's); a new client's handshake on it \(ms(seen1, since: afterKey))")

        // 2. Client A's leaf, renamed into place in A's directory.
        let renewedA = try pki.client("client-A")
        t0 = Date()
        try a.files.install(renewedA, as: "client")
        try #require(eventually { a.reloads.replacements.count == 1 }, "A's watch did not reload: \(a.logs.lines)")
        let reloadA = a.reloads.replacements[0].finishedAt
        try #require(eventually { self.firstServerSaw(clientLeaf: renewedA.certificateDER) != nil })
        let sawA = firstServerSaw(clientLeaf: renewedA.certificateDER)!
        record("client A leaf renewed (rename, A's watch)",
               "A reloaded \(ms(reloadA, since: t0)) after the rename; server saw A's new certificate \(ms(sawA, since: t0))")

        // 3. Revoke C: a CRL listing it, renamed over crl.pem.
        let revokingCRL = try CRLFactory.make(by: pki.root, revoking: [c.certificate!])
        t0 = Date()
        try serverFiles.replace("crl.pem", revokingCRL)
        try #require(eventually { self.serverReloads.replacements.count == 2 }, "the CRL was not loaded: \(serverLogs.lines)")
        let revocationLoaded = serverReloads.replacements[1].finishedAt
        // The new context is swapped in between the reload's start and its finishedAt (which comes
        // after logging): only connections over before the start certainly used the old one.
        let revocationStarted = revocationLoaded.addingTimeInterval(-serverReloads.replacements[1].duration)
        #expect(server.served.crlEntries == 1)
        try #require(eventually { c.firstFailure != nil }, "C was never refused: \(c.summary)")
        let refused = c.firstFailure!
        record("client C revoked (CRL renamed into place)",
               "CRL loaded \(ms(revocationLoaded, since: t0)) after the rename; C's first refusal \(ms(refused, since: t0))")
        usleep(300_000)

        // 4. Garbage over server.pem, then the good file back.
        let generation = server.provider.generation
        let good = try Data(contentsOf: URL(fileURLWithPath: serverFiles.file("server.pem")))
        t0 = Date()
        try serverFiles.replace("server.pem", "garbage\n")
        try #require(eventually { self.serverReloads.failures.count == 1 }, "the broken file was not tried: \(serverLogs.lines)")
        let failedAt = serverReloads.failures[0].finishedAt
        usleep(400_000)
        try serverFiles.replace("server.pem", [UInt8](good))
        let restored = Date()
        try #require(eventually { self.serverReloads.events.last.map { if case .unchanged = $0.outcome { return $0.finishedAt > restored }; return false } ?? false },
                     "the restored file was not seen: \(serverLogs.lines)")
        #expect(server.provider.generation == generation, "the broken and restored file replaced the context")
        let errors = serverLogs.lines(.error)
        #expect(errors.count == 1, "\(errors)")
        #expect(errors.first?.message.contains(serverFiles.file("server.pem")) == true, "\(errors)")
        record("garbage server.pem, then restored",
               "one error \(ms(failedAt, since: t0)) after the rename, context kept; restore seen as unchanged")

        // 5. The server's leaf again, by an explicit reload with the watch stopped.
        serverTriggers.stop()
        let renewedAgain = try pki.server()
        try serverFiles.install(renewedAgain, as: "server")
        t0 = Date()
        guard case .replaced = server.reload(.request) else {
            Issue.record("the explicit reload did not replace the context: \(serverLogs.lines)")
            return
        }
        let returned = Date()
        let seen5 = try #require(newClientSees(serverLeaf: renewedAgain.certificateDER), "no new client saw the renewed leaf")
        record("server leaf renewed (explicit reload)",
               "reload call took \(ms(returned, since: t0)); a new client's handshake on it \(ms(seen5, since: t0))")
        usleep(300_000)

        // The end: stop the clients, then check the long-lived connection is still there.
        clients.forEach { $0.stop() }
        let alive = longLived.finish()
        #expect(alive.error == nil, "the long-lived connection was dropped: \(alive.error ?? "")")
        #expect(alive.echoes > 20, "the long-lived connection stopped echoing: \(alive.echoes) echoes")

        for client in [a, b] {
            #expect(client.failed == 0, "client \(client.name) saw failed handshakes: \(client.failures.prefix(3))")
            #expect(client.succeeded > 20, "\(client.summary)")
        }
        let before = c.attempts.filter { $0.finished < revocationStarted }
        #expect(before.allSatisfy { $0.ok }, "C failed before its revocation was loaded: \(before.filter { !$0.ok }.prefix(3))")
        let after = c.attempts.filter { $0.started > revocationLoaded }
        #expect(!after.isEmpty && after.allSatisfy { !$0.ok }, "C got in after its revocation: \(after.filter(\.ok).count) of \(after.count)")
        let serverRefusals = accepted.current.filter { $0.error != nil && $0.at > revocationLoaded }
        #expect(!serverRefusals.isEmpty && serverRefusals.allSatisfy { $0.reason == .certificateRejected(.revoked) },
                "the server refused for other reasons: \(serverRefusals.prefix(3).map { $0.error ?? "" })")
        record("traffic", clients.map(\.summary).joined(separator: "; ") + "; long-lived connection: \(alive.echoes) echoes, never dropped")
        print("── \(pair.testDescription)")
        for (step, timing) in timings { print("   \(step): \(timing)") }
    }

    private func record(_ step: String, _ text: String) { timings.append((step, text)) }

    private func newClientSees(serverLeaf der: [UInt8]) -> Date? {
        firstFreshHandshake(seeing: der, backend: pair.client, configuration: clients[1].reloading.configuration,
                            group: clientGroup, port: listener.port)
    }

    private func firstServerSaw(clientLeaf der: [UInt8]) -> Date? {
        accepted.current.first { $0.clientLeafDER == der }?.at
    }
}

func ms(_ date: Date, since start: Date) -> String {
    String(format: "%.0f ms", date.timeIntervalSince(start) * 1000)
}

/// When a client without tickets (a fresh context of `configuration`) first got `der` as the
/// server's leaf, trying until it does (nil after 10 s). Clients that keep resuming across a
/// renewal see the certificate of their first handshake; a new client sees what is served now.
func firstFreshHandshake(seeing der: [UInt8], backend: any TLSBackend, configuration: TLSConfiguration,
                         group: LoopGroup, port: Int) -> Date? {
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
        guard let context = try? backend.makeContext(configuration) else { return nil }
        let handler = PingClient()
        TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: port), tls: context) { handler }
        if handler.done.wait(timeout: .now() + 10) == .success, handler.outcome.current.serverLeafDER == der {
            return Date()
        }
        usleep(10_000)
    }
    return nil
}

/// The server's handler: echoes, and records who connected and who was refused.
final class RecordingEcho: ConnectionHandler, @unchecked Sendable {
    let accepted: Shared<[LifecycleRun.ServerSide]>
    init(_ accepted: Shared<[LifecycleRun.ServerSide]>) { self.accepted = accepted }

    func connectionDidEstablish(_ connection: Connection) {
        let leaf = connection.peerIdentity?.certificateChainDER.first
        accepted.with { $0.append(.init(at: Date(), clientLeafDER: leaf, error: nil, reason: nil)) }
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        try? connection.write(bytes)
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        guard let error, connection.negotiated == nil else { return }
        accepted.with { $0.append(.init(at: Date(), clientLeafDER: nil, error: "\(error)", reason: error.tlsError?.reason)) }
    }
}

/// One client: its own credential files, reloading context and watch, and a thread that connects,
/// exchanges a ping, and closes, again and again.
final class TrafficClient: @unchecked Sendable {
    /// Every client's first handshake, before the first change is made; a wait, not a measurement
    /// (under a sanitizer on a busy machine the first handshakes take seconds).
    static func waitForFirstHandshakes(_ clients: [TrafficClient], sourceLocation: SourceLocation = #_sourceLocation) throws {
        try #require(eventually(seconds: 60) { clients.allSatisfy { $0.succeeded > 0 } },
                     "no traffic at the start: \(clients.map(\.summary))", sourceLocation: sourceLocation)
    }

    struct Attempt: Sendable {
        let started: Date
        let finished: Date
        let ok: Bool
        let error: String?
        let serverLeafDER: [UInt8]?
        let resumed: Bool
    }

    let name: String
    /// The client's own directory, when it has one.
    private(set) var ownFiles: CredentialDirectory?
    var files: CredentialDirectory { ownFiles! }
    let logs = LogRecorder()
    let reloading: ReloadingContext
    let reloads: ReloadLog
    let triggers: ReloadTriggers
    /// The leaf it starts with, when the test made it.
    let certificate: IssuedCertificate?
    private let group: LoopGroup
    private let port: Int
    private let recorded = Shared<[Attempt]>([])
    private let stopping = Shared(false)
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    /// A client with its own directory: its own leaf from `pki` and the root.
    convenience init(name: String, pki: RenewablePKI, backend: any TLSBackend, group: LoopGroup, port: Int) throws {
        let files = try CredentialDirectory(prefix: "mtls-lifecycle-client-\(name)")
        let certificate = try pki.client("client-\(name)")
        try files.install(certificate, as: "client")
        try files.replace("ca.pem", pki.root.certificatePEM)
        try self.init(name: name, directory: files.path, certificate: certificate, backend: backend, group: group, port: port)
        self.ownFiles = files
    }

    /// A client of the client.pem, client.key and ca.pem of `directory` (shared with other clients).
    init(name: String, directory: String, certificate: IssuedCertificate?, backend: any TLSBackend, group: LoopGroup, port: Int) throws {
        self.name = name
        self.group = group
        self.port = port
        self.certificate = certificate
        let file = { (name: String) in (directory as NSString).appendingPathComponent(name) }
        let configuration = TLSConfiguration.mtlsClient(
            identity: .pem(certificateChain: .file(file("client.pem")), privateKey: .file(file("client.key"))),
            trustRoots: [.file(file("ca.pem"))], serverName: "localhost")
        reloading = try ReloadingContext(backend: backend, configuration: configuration, logger: logs.logger("client-\(name)"))
        reloads = ReloadLog(reloading)
        triggers = ReloadTriggers(reloading)
    }

    func start() {
        triggers.start()
        let thread = Thread { [self] in
            while !stopping.current {
                attempt()
                usleep(25_000)
            }
            finished.signal()
        }
        self.thread = thread
        thread.start()
    }

    func stop() {
        guard thread != nil, !stopping.current else { return }
        stopping.with { $0 = true }
        finished.wait()
        triggers.stop()
    }

    private func attempt() {
        let handler = PingClient()
        let started = Date()
        let context = reloading.context
        TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: port), tls: context) { handler }
        let outcome: PingClient.Outcome
        if handler.done.wait(timeout: .now() + 15) == .timedOut {
            outcome = PingClient.Outcome(error: "no answer within 15 s", serverLeafDER: nil, resumed: false)
        } else {
            outcome = handler.outcome.current
        }
        let attempt = Attempt(started: started, finished: Date(), ok: outcome.error == nil, error: outcome.error,
                              serverLeafDER: outcome.serverLeafDER, resumed: outcome.resumed)
        recorded.with { $0.append(attempt) }
    }

    var attempts: [Attempt] { recorded.current }
    var succeeded: Int { attempts.filter(\.ok).count }
    var failed: Int { attempts.filter { !$0.ok }.count }
    var failures: [String] { attempts.compactMap(\.error) }
    var firstFailure: Date? { attempts.first { !$0.ok }?.finished }

    func firstSeen(serverLeaf der: [UInt8]) -> Date? {
        attempts.first { $0.ok && $0.serverLeafDER == der }?.finished
    }

    var summary: String {
        let resumed = attempts.filter { $0.ok && $0.resumed }.count
        return "\(name): \(succeeded) ok (\(resumed) resumed), \(failed) refused"
    }
}

/// Connects, sends "ping", waits for the echo, closes.
final class PingClient: ConnectionHandler, @unchecked Sendable {
    struct Outcome: Sendable {
        var error: String?
        var serverLeafDER: [UInt8]?
        var resumed = false
    }

    let outcome = Shared(Outcome())
    let done = DispatchSemaphore(value: 0)
    private var received = 0
    private var signalled = false

    func connectionDidEstablish(_ connection: Connection) {
        let leaf = connection.peerIdentity?.certificateChainDER.first
        let resumed = connection.negotiated?.resumed ?? false
        outcome.with { $0.serverLeafDER = leaf; $0.resumed = resumed }
        do { try connection.write(Array("ping".utf8)) } catch { finish("\(error)") }
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        received += bytes.count
        if received >= 4 { connection.close() }
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        if error == nil && received < 4 { finish("closed before the echo") } else { finish(error.map { "\($0)" }) }
    }

    private func finish(_ error: String?) {
        guard !signalled else { return }
        signalled = true
        outcome.with { if $0.error == nil { $0.error = error } }
        done.signal()
    }
}

/// One connection opened at the start and kept for the whole run, echoing a tick every 100 ms.
final class KeepAlive: ConnectionHandler, @unchecked Sendable {
    struct Result: Sendable {
        var echoes = 0
        var error: String?
    }

    private let loop: EventLoop
    private let state = Shared(Result())
    private let established = DispatchSemaphore(value: 0)
    private let closed = DispatchSemaphore(value: 0)
    private let stopping = Shared(false)
    private var connection: Connection?
    private var thread: Thread?
    private var pending = 0

    init(context: any TLSContext, loop: EventLoop, port: Int) throws {
        self.loop = loop
        var options = ConnectionOptions()
        options.idleTimeout = nil
        TCPClient.connect(on: loop, to: HostAndPort(host: "127.0.0.1", port: port), tls: context, options: options) { self }
        guard established.wait(timeout: .now() + 10) == .success else { throw TestFailure("the long-lived connection did not establish") }
    }

    func start() {
        let thread = Thread { [self] in
            while !stopping.current {
                _ = loop.execute { self.tick() }
                usleep(100_000)
            }
        }
        self.thread = thread
        thread.start()
    }

    /// Stops ticking, waits for the last echo, closes, and reports.
    func finish() -> Result {
        stopping.with { $0 = true }
        usleep(300_000)
        _ = loop.execute { self.connection?.close() }
        _ = closed.wait(timeout: .now() + 10)
        return state.current
    }

    private func tick() {
        guard let connection else { return }
        do { try connection.write(Array("tick".utf8)) } catch { state.with { $0.error = "\(error)" } }
    }

    func connectionDidEstablish(_ connection: Connection) {
        self.connection = connection
        established.signal()
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        pending += bytes.count
        let echoes = pending / 4
        pending %= 4
        state.with { $0.echoes += echoes }
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        if let error { state.with { $0.error = "\(error)" } }
        self.connection = nil
        closed.signal()
    }
}

/// A thread-safe box for values loop callbacks write and the test thread reads.
final class Shared<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func with<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
    var current: Value { with { $0 } }
}
