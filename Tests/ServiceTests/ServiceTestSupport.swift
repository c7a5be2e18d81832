import Foundation
import Logging
import PKI
import Service
import TLSBackends
import TLSContract
import Testing
import TestSupport

/// Collects what a logger says, for tests that count error lines.
final class LogRecorder: @unchecked Sendable {
    struct Line: Sendable, CustomStringConvertible {
        let level: Logger.Level
        let message: String
        var description: String { "[\(level)] \(message)" }
    }

    private let lock = NSLock()
    private var recorded: [Line] = []

    var lines: [Line] { lock.withLock { recorded } }
    func lines(_ level: Logger.Level) -> [Line] { lines.filter { $0.level == level } }
    func clear() { lock.withLock { recorded.removeAll() } }

    func logger(_ label: String = "test") -> Logger {
        var logger = Logger(label: label) { _ in Handler(recorder: self) }
        logger.logLevel = .debug
        return logger
    }

    fileprivate func append(_ line: Line) { lock.withLock { recorded.append(line) } }

    private struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            recorder.append(Line(level: event.level, message: event.message.description))
        }
    }
}

/// A directory of credentials that tests rewrite the way deployments do: write a temporary file
/// next to the target, then rename it into place.
final class CredentialDirectory: @unchecked Sendable {
    let directory: TemporaryDirectory
    var path: String { directory.path }

    init(prefix: String = "mtls-service") throws {
        directory = try TemporaryDirectory(prefix: prefix)
    }

    func file(_ name: String) -> String { directory.file(name) }

    /// Writes `bytes` to `name` atomically (temporary file, then rename).
    func replace(_ name: String, _ bytes: [UInt8]) throws {
        let target = file(name)
        let temporary = target + ".tmp-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, target) == 0 else {
            throw TestFailure( "rename to \(target) failed: \(String(cString: strerror(errno)))")
        }
    }

    func replace(_ name: String, _ text: String) throws { try replace(name, Array(text.utf8)) }

    /// A leaf's chain and key as NAME.pem and NAME.key.
    func install(_ certificate: IssuedCertificate, as name: String) throws {
        try replace("\(name).pem", certificate.chainPEM)
        try replace("\(name).key", certificate.privateKeyPEM)
    }

    func remove(_ name: String) { unlink(file(name)) }
}

/// A CA and leaves issued on demand, like `mtls pki` with renewals.
struct RenewablePKI: Sendable {
    let root: CertificateAuthority

    init(keyType: KeyType = .ecdsaP256) throws {
        root = try CertificateAuthority.makeRoot(commonName: "swift-mtls Reload Root", keyType: keyType)
    }

    func server(validFor: TimeInterval = 86400) throws -> IssuedCertificate {
        try root.issue(.server(names: ["localhost", "127.0.0.1"], validFor: validFor))
    }

    func client(_ name: String, validFor: TimeInterval = 86400) throws -> IssuedCertificate {
        try root.issue(.client(name: name, validFor: validFor))
    }

    func serial(_ certificate: IssuedCertificate) -> String {
        (try? CertificateSummary(derEncoded: certificate.certificateDER).serialHex) ?? "?"
    }
}

extension RenewablePKI {
    /// server.pem/.key (a new leaf valid for `validFor`), ca.pem and an empty crl.pem in a fresh
    /// directory, and the server configuration that reads them.
    func serverFiles(prefix: String = "mtls-service", validFor: TimeInterval = 86400) throws -> (CredentialDirectory, TLSConfiguration) {
        let files = try CredentialDirectory(prefix: prefix)
        try files.install(try server(validFor: validFor), as: "server")
        try files.replace("ca.pem", root.certificatePEM)
        try files.replace("crl.pem", try CRLFactory.make(by: root))
        var configuration = TLSConfiguration.mtlsServer(
            identity: .pem(certificateChain: .file(files.file("server.pem")), privateKey: .file(files.file("server.key"))),
            trustRoots: [.file(files.file("ca.pem"))])
        configuration.crls = [.file(files.file("crl.pem"))]
        return (files, configuration)
    }
}

/// Every backend on its own.
struct ServiceBackend: Sendable, CustomTestStringConvertible {
    let backend: any TLSBackend
    static let all: [ServiceBackend] = TLSBackendRegistry.all.map(ServiceBackend.init)
    var testDescription: String { backend.name }
}

/// Reload events, recorded as they happen.
final class ReloadLog: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [ReloadEvent] = []

    init(_ reloading: ReloadingContext) {
        reloading.observe { [weak self] event in self?.append(event) }
    }

    private func append(_ event: ReloadEvent) { lock.withLock { recorded.append(event) } }
    var events: [ReloadEvent] { lock.withLock { recorded } }
    var replacements: [ReloadEvent] { events.filter { if case .replaced = $0.outcome { return true }; return false } }
    var failures: [ReloadEvent] { events.filter { if case .failed = $0.outcome { return true }; return false } }
}

extension ReloadingContext {
    var servedSerial: String? { served.leaf?.serialHex }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
