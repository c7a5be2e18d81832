import Foundation
import PKI
import Service
import TLSContract
import Testing
import TestSupport

/// `ReloadingContext` and `ReloadTriggers` on their own: what a reload swaps in, what it refuses,
/// and which changes the watch sees.
@Suite("Reload")
struct ReloadTests {
    /// server.pem/.key, ca.pem and crl.pem in a fresh directory, and a reloading server context over them.
    private func serverSetup(_ backend: ServiceBackend, pki: RenewablePKI, logs: LogRecorder,
                             p12Password: String? = nil) throws -> (CredentialDirectory, ReloadingContext) {
        var (files, configuration) = try pki.serverFiles()
        if let p12Password {
            try makePKCS12(files, password: p12Password)
            configuration.identity = .pkcs12(.file(files.file("server.p12")), password: p12Password)
        }
        let reloading = try ReloadingContext(backend: backend.backend, configuration: configuration, logger: logs.logger())
        return (files, reloading)
    }

    private func makePKCS12(_ files: CredentialDirectory, password: String, from name: String = "server") throws {
        let result = try runTool("openssl", ["pkcs12", "-export", "-in", files.file("\(name).pem"), "-inkey", files.file("\(name).key"),
                                             "-passout", "pass:\(password)", "-out", files.file("server.p12.new")])
        guard result.succeeded else { throw TestFailure( result.output) }
        guard rename(files.file("server.p12.new"), files.file("server.p12")) == 0 else {
            throw TestFailure( "rename failed")
        }
    }

    @Test("Start-up logs what is served; a reload with new files swaps a new context in and logs it; unchanged files build nothing",
          arguments: ServiceBackend.all)
    func reloads(backend: ServiceBackend) throws {
        let pki = try RenewablePKI()
        let logs = LogRecorder()
        let (files, reloading) = try serverSetup(backend, pki: pki, logs: logs)
        let first = reloading.context
        let startLine = try #require(logs.lines(.info).first?.message)
        #expect(startLine.contains("serial=\(reloading.servedSerial ?? "-")"), "\(startLine)")
        #expect(startLine.contains("subject=CN=localhost"), "\(startLine)")
        #expect(startLine.contains("not-after="), "\(startLine)")
        #expect(startLine.contains("trust roots=1"), "\(startLine)")
        #expect(startLine.contains("CRL entries=0"), "\(startLine)")

        let renewed = try pki.server()
        try files.install(renewed, as: "server")
        let revoked = try pki.client("gone")
        try files.replace("crl.pem", try CRLFactory.make(by: pki.root, revoking: [revoked]))
        logs.clear()
        guard case .replaced(let served) = reloading.reload(.request) else {
            Issue.record("not replaced: \(logs.lines)")
            return
        }
        #expect(served.leaf?.serialHex == pki.serial(renewed))
        #expect(served.crlEntries == 1)
        #expect(reloading.context !== first)
        #expect(reloading.provider.generation == 1)
        let line = try #require(logs.lines(.info).first?.message)
        #expect(line.contains("reloaded (request)") && line.contains("serial=\(pki.serial(renewed))") && line.contains("CRL entries=1"),
                "\(line)")

        let second = reloading.context
        guard case .unchanged = reloading.reload(.signal) else {
            Issue.record("identical files built a new context")
            return
        }
        #expect(reloading.context === second)
        #expect(reloading.provider.generation == 1)
        #expect(logs.lines(.error).isEmpty)
    }

    /// One broken state of the files, and the file its error must name.
    struct Breakage: Sendable, CustomTestStringConvertible {
        let name: String
        let file: String
        let problem: TLSError.ConfigurationProblem?
        let breakFiles: @Sendable (CredentialDirectory, RenewablePKI) throws -> Void
        var testDescription: String { name }
    }

    static let breakages: [Breakage] = [
        Breakage(name: "the certificate file is missing", file: "server.pem", problem: .fileNotFound) { files, _ in
            files.remove("server.pem")
        },
        Breakage(name: "the key belongs to another certificate", file: "server.key", problem: .keyDoesNotMatchCertificate) { files, pki in
            try files.replace("server.key", try pki.server().privateKeyPEM)
        },
        Breakage(name: "the certificate file is garbage", file: "server.pem", problem: .noCertificateInPEM) { files, _ in
            try files.replace("server.pem", "this is not PEM\n")
        },
        Breakage(name: "the certificate PEM block is corrupt", file: "server.pem", problem: .invalidCertificate) { files, _ in
            try files.replace("server.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        },
        Breakage(name: "the key file is garbage", file: "server.key", problem: nil) { files, _ in
            try files.replace("server.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        },
        Breakage(name: "the CA file is garbage", file: "ca.pem", problem: nil) { files, _ in
            try files.replace("ca.pem", "garbage\n")
        },
        Breakage(name: "the CRL file is garbage", file: "crl.pem", problem: .invalidCRL) { files, _ in
            try files.replace("crl.pem", "garbage\n")
        },
        Breakage(name: "the new certificate is not valid yet", file: "server.pem", problem: .certificateNotYetValid) { files, pki in
            var request = LeafRequest.server(names: ["localhost"])
            request.notValidBefore = Date().addingTimeInterval(86400)
            request.notValidAfter = Date().addingTimeInterval(2 * 86400)
            try files.install(try pki.root.issue(request), as: "server")
        },
        Breakage(name: "the new certificate has expired", file: "server.pem", problem: .certificateExpired) { files, pki in
            var request = LeafRequest.server(names: ["localhost"])
            request.notValidBefore = Date().addingTimeInterval(-2 * 86400)
            request.notValidAfter = Date().addingTimeInterval(-86400)
            try files.install(try pki.root.issue(request), as: "server")
        },
    ]

    @Test("A reload that cannot use the files keeps the previous context, logs one error naming the file, and the next valid change is picked up",
          arguments: ServiceBackend.all, breakages)
    func failedReload(backend: ServiceBackend, breakage: Breakage) throws {
        let pki = try RenewablePKI()
        let logs = LogRecorder()
        let (files, reloading) = try serverSetup(backend, pki: pki, logs: logs)
        let serving = reloading.context
        let servedSerial = reloading.servedSerial
        logs.clear()

        try breakage.breakFiles(files, pki)
        let outcome = reloading.reload(.fileChange)
        guard case .failed(let error) = outcome else {
            Issue.record("\(breakage.name): the reload did not fail: \(outcome)")
            return
        }
        if case .configuration(let file, let problem) = error.reason {
            #expect(file == files.file(breakage.file), "\(breakage.name): \(error)")
            if let expected = breakage.problem { #expect(problem == expected, "\(breakage.name): \(error)") }
        } else {
            Issue.record("\(breakage.name): not a configuration error: \(error)")
        }
        #expect(reloading.context === serving, "\(breakage.name): the broken files replaced the context")
        #expect(reloading.servedSerial == servedSerial)
        let errors = logs.lines(.error)
        #expect(errors.count == 1, "\(breakage.name): \(errors)")
        #expect(errors.first?.message.contains(files.file(breakage.file)) == true, "\(breakage.name): \(errors)")
        #expect(errors.first?.message.contains("still serving") == true, "\(breakage.name): \(errors)")

        // The watch sees nothing new, so nothing is retried and nothing more is logged.
        _ = reloading.reload(.fileChange)
        _ = reloading.reload(.interval)
        #expect(logs.lines(.error).count == 1, "\(breakage.name): the same failure was logged again: \(logs.lines(.error))")

        // Repaired with a renewal: picked up.
        let renewed = try pki.server()
        try files.install(renewed, as: "server")
        try files.replace("ca.pem", pki.root.certificatePEM)
        try files.replace("crl.pem", try CRLFactory.make(by: pki.root))
        guard case .replaced = reloading.reload(.fileChange) else {
            Issue.record("\(breakage.name): the repair was not picked up: \(logs.lines)")
            return
        }
        #expect(reloading.servedSerial == pki.serial(renewed))
    }

    @Test("A PKCS#12 bundle with a new password fails the reload, naming the bundle; the old one keeps serving",
          arguments: ServiceBackend.all)
    func pkcs12Password(backend: ServiceBackend) throws {
        let pki = try RenewablePKI()
        let logs = LogRecorder()
        let (files, reloading) = try serverSetup(backend, pki: pki, logs: logs, p12Password: "right")
        let serving = reloading.context
        #expect(reloading.served.leaf != nil, "a PKCS#12 identity reports its certificate")
        try files.install(try pki.server(), as: "server")
        try makePKCS12(files, password: "other")
        guard case .failed(let error) = reloading.reload(.signal) else {
            Issue.record("accepted a bundle under another password")
            return
        }
        #expect(error.reason == .configuration(file: files.file("server.p12"), problem: .wrongPKCS12Password), "\(error)")
        #expect(reloading.context === serving)
        try makePKCS12(files, password: "right")
        guard case .replaced = reloading.reload(.signal) else {
            Issue.record("the bundle under the right password was not picked up")
            return
        }
    }

    @Test("The watch picks up a rename into place and a Kubernetes ..data symlink swap", arguments: ServiceBackend.all)
    func watch(backend: ServiceBackend) throws {
        let pki = try RenewablePKI()
        let logs = LogRecorder()
        // Kubernetes' layout: FILE -> ..data/FILE, ..data -> ..<timestamp>/ (swapped atomically).
        let files = try CredentialDirectory()
        func publish(_ version: String, _ certificate: IssuedCertificate) throws {
            let directory = files.file("..\(version)")
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(certificate.chainPEM.utf8).write(to: URL(fileURLWithPath: directory + "/tls.crt"))
            try Data(certificate.privateKeyPEM.utf8).write(to: URL(fileURLWithPath: directory + "/tls.key"))
            try Data(pki.root.certificatePEM.utf8).write(to: URL(fileURLWithPath: directory + "/ca.crt"))
            unlink(files.file("..data_tmp"))
            guard symlink("..\(version)", files.file("..data_tmp")) == 0, rename(files.file("..data_tmp"), files.file("..data")) == 0 else {
                throw TestFailure( "symlink swap failed: \(String(cString: strerror(errno)))")
            }
        }
        try publish("2026_01", try pki.server())
        for name in ["tls.crt", "tls.key", "ca.crt"] { _ = symlink("..data/\(name)", files.file(name)) }
        let configuration = TLSConfiguration.mtlsServer(
            identity: .pem(certificateChain: .file(files.file("tls.crt")), privateKey: .file(files.file("tls.key"))),
            trustRoots: [.file(files.file("ca.crt"))])
        let reloading = try ReloadingContext(backend: backend.backend, configuration: configuration, logger: logs.logger())
        let log = ReloadLog(reloading)
        let triggers = ReloadTriggers(reloading)
        triggers.start()
        defer { triggers.stop() }

        let swapped = try pki.server()
        try publish("2026_02", swapped)
        #expect(eventually { reloading.servedSerial == pki.serial(swapped) }, "the symlink swap was not seen: \(logs.lines)")

        // Then a plain rename into place over the symlink: the path now holds a regular file.
        let renamed = try pki.server()
        try files.replace("tls.crt", renamed.chainPEM)
        try files.replace("tls.key", renamed.privateKeyPEM)
        #expect(eventually { reloading.servedSerial == pki.serial(renamed) }, "the rename was not seen: \(logs.lines)")
        #expect(eventually { log.replacements.count == 2 }, "\(log.events.map(\.trigger))")
        #expect(log.failures.isEmpty, "\(logs.lines(.error))")
        #expect(log.replacements.allSatisfy { $0.trigger == .fileChange })
    }

    @Test("A certificate written before its key is loaded with it, not refused as a mismatched pair", arguments: ServiceBackend.all)
    func debounce(backend: ServiceBackend) throws {
        let pki = try RenewablePKI()
        let logs = LogRecorder()
        let (files, reloading) = try serverSetup(backend, pki: pki, logs: logs)
        let log = ReloadLog(reloading)
        // The quiet period counts from the poll that saw the certificate change, which may come just
        // after it: with the default 0.3 s, a writer delayed 150 ms past its 150 ms pause (a busy CI
        // machine) writes the key after the reload. One second leaves the pause that margin and more.
        var options = ReloadTriggers.Options()
        options.quietPeriod = 1.0
        let triggers = ReloadTriggers(reloading, options: options)
        triggers.start()
        defer { triggers.stop() }
        for round in 1...3 {
            let renewed = try pki.server()
            try files.replace("server.pem", renewed.chainPEM)
            usleep(150_000)  // well within the quiet period
            try files.replace("server.key", renewed.privateKeyPEM)
            #expect(eventually { reloading.servedSerial == pki.serial(renewed) }, "round \(round): \(logs.lines)")
        }
        #expect(eventually { log.replacements.count == 3 }, "\(log.events.map(\.trigger))")
        #expect(log.failures.isEmpty, "a half-written pair was tried: \(logs.lines(.error))")
    }

    @Test("--reload-interval reloads on a timer without any watch", arguments: ServiceBackend.all)
    func interval(backend: ServiceBackend) throws {
        let pki = try RenewablePKI()
        let logs = LogRecorder()
        let (files, reloading) = try serverSetup(backend, pki: pki, logs: logs)
        let log = ReloadLog(reloading)
        var options = ReloadTriggers.Options()
        options.watchFiles = false
        options.reloadInterval = 0.3
        let triggers = ReloadTriggers(reloading, options: options)
        triggers.start()
        defer { triggers.stop() }
        let renewed = try pki.server()
        try files.install(renewed, as: "server")
        #expect(eventually { reloading.servedSerial == pki.serial(renewed) }, "\(logs.lines)")
        // Observers hear of a reload just after it takes effect.
        #expect(eventually { log.replacements.count == 1 })
        #expect(log.replacements.map(\.trigger) == [.interval])
        // Later ticks find nothing new and build nothing.
        usleep(700_000)
        #expect(log.replacements.count == 1)
        #expect(reloading.provider.generation == 1)
    }

    @Test("Expiry: one warning per certificate once less than a third of its lifetime is left", arguments: ServiceBackend.all)
    func expiryWarnings(backend: ServiceBackend) throws {
        let pki = try RenewablePKI()
        let logs = LogRecorder()
        let files = try CredentialDirectory()
        // Lifetime 30 days, 20 left: not yet.
        var request = LeafRequest.server(names: ["localhost"])
        request.notValidBefore = Date().addingTimeInterval(-10 * 86400)
        request.notValidAfter = Date().addingTimeInterval(20 * 86400)
        try files.install(try pki.root.issue(request), as: "server")
        try files.replace("ca.pem", pki.root.certificatePEM)
        let configuration = TLSConfiguration.mtlsServer(
            identity: .pem(certificateChain: .file(files.file("server.pem")), privateKey: .file(files.file("server.key"))),
            trustRoots: [.file(files.file("ca.pem"))])
        let reloading = try ReloadingContext(backend: backend.backend, configuration: configuration, logger: logs.logger())
        #expect(logs.lines(.warning).isEmpty, "\(logs.lines(.warning))")

        // Eleven days on: 9 of 30 days left.
        reloading.checkExpiry(now: Date().addingTimeInterval(11 * 86400))
        let warnings = logs.lines(.warning)
        #expect(warnings.count == 1, "\(warnings)")
        #expect(warnings.first?.message.contains("our certificate") == true, "\(warnings)")
        #expect(warnings.first?.message.contains("less than a third") == true, "\(warnings)")
        reloading.checkExpiry(now: Date().addingTimeInterval(12 * 86400))
        #expect(logs.lines(.warning).count == 1, "warned twice about one certificate")

        // Seven years on (the root lives ten): the CA too, once.
        reloading.checkExpiry(now: Date().addingTimeInterval(7 * 365 * 86400))
        let caWarnings = logs.lines(.warning).filter { $0.message.contains("trusted CA") }
        #expect(caWarnings.count == 1, "\(logs.lines(.warning))")
        #expect(caWarnings.first?.message.contains("swift-mtls Reload Root") == true)
    }
}
