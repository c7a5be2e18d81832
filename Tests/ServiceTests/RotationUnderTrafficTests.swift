import Foundation
import Loop
import PKI
import Service
import TLSBackends
import TLSContract
import Testing
import TestSupport

/// A root rotation under continuous traffic, driven by the functions `mtls pki rotate` runs, for
/// each client×server backend pair. One `pki init` directory is shared the way one host would share
/// it: the server serves server.pem/.key and trusts ca.pem with crl.pem; three clients present
/// client.pem/.key and trust ca.pem, each with its own reloading context and file watch; one more
/// connection stays open throughout. The three stages each go everywhere (every side reloads)
/// before the next starts:
///
/// 1. begin: ca.pem becomes old + new root (and crl.pem gains the new root's CRL);
/// 2. reissue: server and client leaves renewed under the new root;
/// 3. finish: ca.pem = new root only.
///
/// Valid clients see zero failed handshakes; the long-lived connection is never dropped; no reload
/// fails (the key-then-certificate writes land as one pair). Each stage's pick-up time is printed.
@Suite("Root rotation under traffic", .serialized)
struct RotationUnderTrafficTests {
    @Test("begin → reload everywhere → reissue → reload → finish → reload: zero failed handshakes, no connection dropped",
          .timeLimit(.minutes(2)), arguments: LifecycleTests.Pair.all)
    func rotation(pair: LifecycleTests.Pair) throws {
        let run = try RotationRun(pair: pair)
        try run.execute()
    }
}

private final class RotationRun: @unchecked Sendable {
    let pair: LifecycleTests.Pair
    let scratch: TemporaryDirectory
    let directory: PKIDirectory
    let site: ServerUnderTraffic
    var clients: [TrafficClient] = []
    var timings: [(String, String)] = []

    init(pair: LifecycleTests.Pair) throws {
        self.pair = pair
        scratch = try TemporaryDirectory(prefix: "mtls-rotation")
        let path = scratch.file("pki")
        try PKIWriter.initialize(at: path, keyType: .ecdsaP256, intermediate: false, serverNames: ["localhost", "127.0.0.1"],
                                 clientName: "client", days: 1, force: false)
        directory = PKIDirectory(path)
        let layout = directory.layout
        var configuration = TLSConfiguration.mtlsServer(
            identity: .pem(certificateChain: .file(layout.serverCertificate), privateKey: .file(layout.serverKey)),
            trustRoots: [.file(layout.caCertificate)])
        configuration.crls = [.file(directory.crl)]
        site = try ServerUnderTraffic(backend: pair.server, configuration: configuration)
    }

    deinit {
        clients.forEach { $0.stop() }
        site.shutdown()
    }

    func execute() throws {
        for name in ["A", "B", "C"] {
            clients.append(try TrafficClient(name: name, directory: directory.layout.directory, certificate: nil,
                                             backend: pair.client, group: site.clientGroup, port: site.listener.port))
        }
        let longLived = try KeepAlive(context: clients[0].reloading.context, loop: site.clientGroup.loops[0], port: site.listener.port)
        clients.forEach { $0.start() }
        longLived.start()
        try TrafficClient.waitForFirstHandshakes(clients)
        let everyone: [ReloadingContext] = [site.reloading] + clients.map(\.reloading)

        // 1. begin: everyone must come to trust both roots.
        var t0 = Date()
        let next = try directory.rotateBegin()
        try #require(eventually { everyone.allSatisfy { $0.served.trustRoots.count == 2 } },
                     "not every side loaded the bundle: \(site.logs.lines)")
        let bundleLoaded = Date()
        // The reload's event is recorded just after its context is swapped in.
        let serverReload = try #require(eventually { !site.reloads.replacements.isEmpty } ? site.reloads.replacements.last : nil,
                                        "the server's reload was not recorded: \(site.logs.lines)")
        record("1. rotate begin (bundle old + new)",
               "server reloaded \(ms(serverReload.finishedAt, since: t0)), every side \(ms(bundleLoaded, since: t0)) after the write")
        usleep(300_000)

        // 2. reissue: everyone must come to present a leaf of the new root.
        t0 = Date()
        let (serverLeaf, _) = try directory.rotateReissue()
        try #require(eventually { everyone.allSatisfy { $0.served.leaf?.issuer.contains("G2") == true } },
                     "not every side serves its new leaf: \(everyone.map { $0.served.description })")
        let reissued = Date()
        // Clients may keep resuming tickets from before (the server keeps them: its roots did not
        // change); a new client sees the new leaf.
        let seen = try #require(firstFreshHandshake(seeing: serverLeaf.certificateDER, backend: pair.client,
                                                    configuration: clients[0].reloading.configuration,
                                                    group: site.clientGroup, port: site.listener.port))
        record("2. rotate reissue (leaves under the new root)",
               "every side serves its new leaf \(ms(reissued, since: t0)) after the write; a new client's handshake on the new server leaf \(ms(seen, since: t0))")
        usleep(300_000)

        // 3. finish: everyone must come to trust the new root alone.
        t0 = Date()
        try directory.rotateFinish()
        try #require(eventually { everyone.allSatisfy { $0.served.trustRoots.count == 1 } },
                     "not every side dropped the old root: \(site.logs.lines)")
        let finished = Date()
        #expect(site.reloading.served.trustRoots.first?.subject.contains(next.commonName ?? "?") == true)
        record("3. rotate finish (new root only)", "every side \(ms(finished, since: t0)) after the write")
        usleep(400_000)

        clients.forEach { $0.stop() }
        let alive = longLived.finish()
        #expect(alive.error == nil, "the long-lived connection was dropped: \(alive.error ?? "")")
        #expect(alive.echoes > 10, "the long-lived connection stopped echoing: \(alive.echoes) echoes")
        for client in clients {
            #expect(client.failed == 0, "client \(client.name) saw failed handshakes: \(client.failures.prefix(3))")
            #expect(client.succeeded > 10, "\(client.summary)")
        }
        let failedReloads = ([site.reloads] + clients.map(\.reloads)).flatMap(\.failures)
        #expect(failedReloads.isEmpty, "reloads failed: \(failedReloads.map { "\($0.outcome)" })")
        record("traffic", clients.map(\.summary).joined(separator: "; ") + "; long-lived connection: \(alive.echoes) echoes, never dropped")
        print("── root rotation, \(pair.testDescription)")
        for (step, timing) in timings { print("   \(step): \(timing)") }
    }

    private func record(_ step: String, _ text: String) { timings.append((step, text)) }
}
