import Foundation
import Loop
import TLSContract

/// The `/_status` document of a server:
///
/// ```json
/// {"ok": true,
///  "backend": {"name": "openssl", "version": "OpenSSL 3.0.17 1 Jul 2025"},
///  "certificate": {"subject": "CN=localhost", "serial": "4A1F...", "notAfter": "2027-11-26T05:00:00Z"},
///  "lastReload": {"time": "...", "trigger": "SIGHUP", "result": "ok"},
///  "target": {"address": "127.0.0.1:8080", "reachable": true}}
/// ```
///
/// `certificate` is null for a plain-TCP server, `lastReload` until the first reload, and `target`
/// is there for a proxy only. A reload's result is "ok" (new credentials served), "unchanged" (the
/// files hold what is served), or the one-line summary of the error that kept the previous ones.
public struct StatusReport: Encodable, Sendable {
    public struct Backend: Encodable, Sendable {
        public let name: String
        public let version: String
    }

    public struct Certificate: Encodable, Sendable {
        public let subject: String
        public let serial: String
        public let notAfter: String
    }

    public struct Reload: Encodable, Sendable {
        public let time: String
        public let trigger: String
        public let result: String
    }

    public struct Target: Encodable, Sendable {
        public let address: String
        public let reachable: Bool
    }

    public let ok = true
    public let backend: Backend
    public let certificate: Certificate?
    public let lastReload: Reload?
    public let target: Target?

    enum CodingKeys: String, CodingKey { case ok, backend, certificate, lastReload, target }

    /// Null rather than absent for `certificate` and `lastReload`, so a reader sees every field; a
    /// non-proxy has no `target` at all.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(ok, forKey: .ok)
        try container.encode(backend, forKey: .backend)
        try container.encode(certificate, forKey: .certificate)
        try container.encode(lastReload, forKey: .lastReload)
        try container.encodeIfPresent(target, forKey: .target)
    }

    public var json: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return Array(((try? encoder.encode(self)) ?? Data("{\"ok\":false}".utf8))) + [UInt8(ascii: "\n")]
    }
}

/// Builds a server's `StatusReport` from what it serves now: the backend, the credentials of its
/// `ReloadingContext` (nil for plain TCP) and, for a proxy, a TCP connect to the target made when
/// the status is asked for.
public struct ServerStatus: Sendable {
    public let backend: any TLSBackend
    public let reloading: ReloadingContext?
    public let target: Endpoint?
    /// How long the target probe may take before the target counts as unreachable.
    public var probeTimeout: Duration = .seconds(2)

    public init(backend: any TLSBackend, reloading: ReloadingContext?, target: Endpoint? = nil) {
        self.backend = backend
        self.reloading = reloading
        self.target = target
    }

    /// The report, on `loop` (after the probe for a proxy); `reply` runs there.
    public func report(on loop: EventLoop, reply: @escaping (StatusReport) -> Void) {
        guard let target else {
            reply(report(target: nil))
            return
        }
        TCPReachability.probe(target, on: loop, timeout: probeTimeout) { reachable in
            reply(report(target: StatusReport.Target(address: target.description, reachable: reachable)))
        }
    }

    /// `/_status` from this, `/metrics` from `metrics`.
    public func endpoints(metrics: @escaping @Sendable () -> [UInt8]) -> StatusEndpoints {
        StatusEndpoints(status: { loop, reply in report(on: loop) { reply($0.json) } }, metrics: metrics)
    }

    func report(target: StatusReport.Target?) -> StatusReport {
        let leaf = reloading?.served.leaf
        let certificate = leaf.map {
            StatusReport.Certificate(subject: $0.subject, serial: $0.serialHex, notAfter: DateText.format($0.notValidAfter))
        }
        let reload = reloading?.lastReload.map { event in
            let result: String
            switch event.outcome {
            case .replaced: result = "ok"
            case .unchanged: result = "unchanged"
            case .failed(let error): result = error.summary
            }
            return StatusReport.Reload(time: DateText.format(event.finishedAt), trigger: event.trigger.rawValue, result: result)
        }
        return StatusReport(backend: .init(name: backend.name, version: backend.libraryVersion), certificate: certificate,
                            lastReload: reload, target: target)
    }
}
