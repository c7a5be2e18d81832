import Metrics
import Foundation
import Loop
import TLSContract

/// Every server's metrics, recorded through the swift-metrics API into the factory it is given
/// (the app passes its Prometheus exporter's; nothing here bootstraps the global MetricsSystem, so
/// many servers can run in one process, each with its own registry):
///
/// - `mtls_handshakes_total{result="ok"|<reason>}`: TLS handshakes, refusals included, with the
///   reason's stable name (`ConnectionError.metricName`, `TLSError.Reason.metricName`);
/// - `mtls_handshake_duration_seconds`: histogram, from accept to established;
/// - `mtls_connections_open`: established connections open now;
/// - `mtls_bytes_total{direction="in"|"out"}`: application bytes (plaintext for TLS);
/// - `mtls_reloads_total{result="ok"|"unchanged"|<reason>}` (a watch or timer that found nothing to
///   do is not a reload);
/// - `mtls_certificate_expiry_timestamp_seconds{which="served"|"ca"}`: notAfter as Unix time (for
///   the CA, the earliest among the trust roots).
///
/// The Loop reports to it as the `ConnectionObserver` of every accepted connection.
public final class ServerMetrics: ConnectionObserver, @unchecked Sendable {
    private let factory: any MetricsFactory
    private let handshakesOK: CoreMetrics.Counter
    private let handshakeDuration: CoreMetrics.Timer
    private let connectionsOpen: Meter
    private let bytesIn: CoreMetrics.Counter
    private let bytesOut: CoreMetrics.Counter
    private let servedExpiry: Gauge
    private let caExpiry: Gauge
    /// One counter per label value met so far, so the hot paths never build a label twice.
    private let lock = NSLock()
    private var refusals: [String: CoreMetrics.Counter] = [:]
    private var reloads: [String: CoreMetrics.Counter] = [:]

    public static let handshakes = "mtls_handshakes_total"
    public static let reloadsTotal = "mtls_reloads_total"

    public init(factory: any MetricsFactory) {
        self.factory = factory
        handshakesOK = Counter(label: Self.handshakes, dimensions: [("result", "ok")], factory: factory)
        handshakeDuration = CoreMetrics.Timer(label: "mtls_handshake_duration_seconds", factory: factory)
        connectionsOpen = Meter(label: "mtls_connections_open", factory: factory)
        bytesIn = Counter(label: "mtls_bytes_total", dimensions: [("direction", "in")], factory: factory)
        bytesOut = Counter(label: "mtls_bytes_total", dimensions: [("direction", "out")], factory: factory)
        servedExpiry = Gauge(label: "mtls_certificate_expiry_timestamp_seconds", dimensions: [("which", "served")], factory: factory)
        caExpiry = Gauge(label: "mtls_certificate_expiry_timestamp_seconds", dimensions: [("which", "ca")], factory: factory)
        connectionsOpen.set(0)
    }

    // MARK: ConnectionObserver

    public func handshakeSucceeded(duration: Duration) {
        handshakesOK.increment()
        handshakeDuration.recordNanoseconds(Self.nanoseconds(duration))
    }

    public func handshakeFailed(_ error: ConnectionError?) {
        counter(for: error?.metricName ?? "closed", in: \.refusals, label: Self.handshakes).increment()
    }

    public func connectionOpened() { connectionsOpen.increment() }
    public func connectionClosed() { connectionsOpen.decrement() }
    public func bytesReceived(_ count: Int) { bytesIn.increment(by: Int64(count)) }
    public func bytesSent(_ count: Int) { bytesOut.increment(by: Int64(count)) }

    // MARK: Credentials

    /// Counts every reload of `reloading` and keeps the expiry gauges on what it serves now.
    public func watch(_ reloading: ReloadingContext) {
        record(reloading.served)
        reloading.observe { [weak self] event in self?.record(event) }
    }

    func record(_ event: ReloadEvent) {
        guard !event.isIdleCheck else { return }
        let result: String
        switch event.outcome {
        case .replaced(let served):
            result = "ok"
            record(served)
        case .unchanged: result = "unchanged"
        case .failed(let error): result = error.reason.metricName
        }
        counter(for: result, in: \.reloads, label: Self.reloadsTotal).increment()
    }

    func record(_ served: ServedCredentials) {
        if let leaf = served.leaf { servedExpiry.record(leaf.notValidAfter.timeIntervalSince1970) }
        if let earliest = served.trustRoots.map(\.notValidAfter).min() { caExpiry.record(earliest.timeIntervalSince1970) }
    }

    private func counter(for result: String, in table: ReferenceWritableKeyPath<ServerMetrics, [String: CoreMetrics.Counter]>,
                         label: String) -> CoreMetrics.Counter {
        lock.withLock {
            if let existing = self[keyPath: table][result] { return existing }
            let made = Counter(label: label, dimensions: [("result", result)], factory: factory)
            self[keyPath: table][result] = made
            return made
        }
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
