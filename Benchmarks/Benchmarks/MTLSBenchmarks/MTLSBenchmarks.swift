import Benchmark
import Foundation
import PKI
import TLSBackends
import TLSContract

// In-memory benchmarks of the TLS engine: both sides of every connection run in this process,
// driven through the sans-IO contract with `InMemoryPair`, so the figures are the cost of the TLS
// work alone (both sides together), with no sockets and no event loop. See README.md.
//
// Names read "<kind> <version> <key type> <client backend>-><server backend>".

/// Allocations, CPU and memory for one handshake (or one MiB) per iteration.
private let handshakeMetrics: [BenchmarkMetric] = [
    .throughput, .wallClock, .cpuTotal, .mallocCountTotal, .peakMemoryResident,
]

/// 1 when the client's `negotiated.resumed` was true for the measured handshake, else 0. Its
/// percentiles show at a glance whether a "Resumed" benchmark really resumed (p0 = 1: always).
private let resumedMetric = BenchmarkMetric.custom("resumed (1 = yes)", polarity: .prefersLarger, useScalingFactor: false)

/// Application data through one established connection, in MB/s (10^6 bytes per second),
/// from the wall-clock time of each 1 MiB iteration.
private let megabytesPerSecond = BenchmarkMetric.custom(
    "record MB/s (10^6 B/s)", polarity: .prefersLarger, useScalingFactor: false)

/// CPU time of the benchmark thread per iteration (client and server together), in microseconds,
/// at nanosecond resolution: see `threadCPUNanoseconds()`.
private let threadCPU = BenchmarkMetric.custom("thread CPU (μs)", polarity: .prefersSmaller, useScalingFactor: false)

private func handshakeConfiguration() -> Benchmark.Configuration {
    .init(metrics: handshakeMetrics + [threadCPU], warmupIterations: 5, maxDuration: .seconds(2), maxIterations: 20_000)
}

/// Runs `body` once per iteration and records its thread CPU time.
@inline(__always)
private func measuringCPU(_ benchmark: Benchmark, _ body: () -> Void) {
    for _ in benchmark.scaledIterations {
        let start = threadCPUNanoseconds()
        body()
        benchmark.measurement(threadCPU, (threadCPUNanoseconds() - start) / 1_000)
    }
}

let benchmarks: @Sendable () -> Void = {
    let pairs = TLSBackendRegistry.pairs

    // 1. Full TLS 1.3 mTLS handshakes: every backend pair, every key type.
    for keyType in BenchPKI.keyTypes {
        for (clientBackend, serverBackend) in pairs {
            let name = "Full TLS1.3 \(keyType) \(clientBackend.name)->\(serverBackend.name)"
            Benchmark(name, configuration: handshakeConfiguration()) { benchmark, contexts in
                measuringCPU(benchmark) { blackHole(contexts.handshake()) }
            } setup: {
                try fullHandshakeContexts(clientBackend, serverBackend, keyType, .tls13)
            }
        }
    }

    // 2. Full TLS 1.2 mTLS handshakes: ECDSA P-256, every backend pair.
    for (clientBackend, serverBackend) in pairs {
        let name = "Full TLS1.2 ecdsa-p256 \(clientBackend.name)->\(serverBackend.name)"
        Benchmark(name, configuration: handshakeConfiguration()) { benchmark, contexts in
            measuringCPU(benchmark) { blackHole(contexts.handshake()) }
        } setup: {
            try fullHandshakeContexts(clientBackend, serverBackend, .ecdsaP256, .tls12)
        }
    }

    // 3. Record throughput: 1 MiB per iteration from the client to the server of one established
    //    TLS 1.3 connection (ECDSA certificates; the bulk cipher is what both backends prefer,
    //    TLS_AES_128_GCM_SHA256). `throughput` counts iterations, so its figure is MiB/s.
    for (clientBackend, serverBackend) in pairs {
        let name = "Records 1MiB TLS1.3 \(clientBackend.name)->\(serverBackend.name)"
        Benchmark(
            name,
            configuration: .init(
                metrics: handshakeMetrics + [threadCPU, megabytesPerSecond],
                warmupIterations: 5, maxDuration: .seconds(2), maxIterations: 10_000)
        ) { (benchmark: Benchmark, pump: RecordPump) in
            let clock = ContinuousClock()
            for _ in benchmark.scaledIterations {
                let start = clock.now
                let cpuStart = threadCPUNanoseconds()
                let bytes = pump.transferOneMiB()
                benchmark.measurement(threadCPU, (threadCPUNanoseconds() - cpuStart) / 1_000)
                let elapsed = (clock.now - start) / .nanoseconds(1)
                if elapsed > 0 {
                    benchmark.measurement(megabytesPerSecond, Int(Double(bytes) * 1_000 / elapsed))
                }
            }
        } setup: { () throws -> RecordPump in
            let contexts = try ContextPair(
                client: clientBackend, server: serverBackend, keyType: .ecdsaP256, version: .tls13,
                clientTickets: false)
            let pair = contexts.handshake()
            if let negotiated = pair.client.negotiated {
                FileHandle.standardError.write(Data("\(name): \(negotiated.cipherSuite)\n".utf8))
            }
            return RecordPump(pair: pair, label: contexts.label)
        }
    }

    // 4. Resumed TLS 1.3 handshakes: the client context keeps the ticket of its last handshake with
    //    the server name, so every measured handshake after the first full one (done in setup) can
    //    resume. Whether it did is the `resumed` metric, and setup warns when it did not.
    //    In the run of 2026-11-24 recorded in README.md, every pair resumed every handshake
    //    (resumed p0 = 1); a run minutes before, with the resumption work unfinished, resumed none.
    for (clientBackend, serverBackend) in pairs {
        let name = "Resumed TLS1.3 ecdsa-p256 \(clientBackend.name)->\(serverBackend.name)"
        Benchmark(
            name,
            configuration: .init(
                metrics: handshakeMetrics + [threadCPU, resumedMetric],
                warmupIterations: 5, maxDuration: .seconds(2), maxIterations: 50_000)
        ) { (benchmark: Benchmark, contexts: ContextPair) in
            for _ in benchmark.scaledIterations {
                let start = threadCPUNanoseconds()
                let pair = contexts.handshake()
                benchmark.measurement(threadCPU, (threadCPUNanoseconds() - start) / 1_000)
                benchmark.measurement(resumedMetric, pair.client.negotiated?.resumed == true ? 1 : 0)
            }
        } setup: { () throws -> ContextPair in
            let contexts = try ContextPair(
                client: clientBackend, server: serverBackend, keyType: .ecdsaP256, version: .tls13,
                clientTickets: true)
            // One full handshake, then a few that should resume: with TLS 1.3 each resumed
            // handshake brings a fresh ticket, so every one of them must resume, not just the first.
            let first = contexts.handshake()
            let later = (0..<3).map { _ in contexts.handshake().client.negotiated?.resumed == true }
            if first.client.negotiated?.resumed == true {
                warn("\(name): the first handshake from a new client context claims to be resumed")
            }
            if later.contains(false) {
                let supports = clientBackend.capabilities.contains(.tls13Resumption)
                warn("\(name): handshakes 2 to 4 from one client context resumed: \(later) "
                    + "(client \(clientBackend.name) \(supports ? "claims" : "lacks") tls13Resumption); "
                    + "the iterations that do not resume are full handshakes with tickets enabled")
            } else {
                FileHandle.standardError.write(Data("\(name): handshakes 2 to 4 resumed\n".utf8))
            }
            return contexts
        }
    }
}

/// Contexts for full handshakes: the client never offers a ticket. Setup checks that two handshakes
/// in a row both come out full, so that resumption support arriving later cannot skew the figures.
private func fullHandshakeContexts(
    _ clientBackend: any TLSBackend, _ serverBackend: any TLSBackend, _ keyType: KeyType, _ version: TLSVersion
) throws -> ContextPair {
    let contexts = try ContextPair(
        client: clientBackend, server: serverBackend, keyType: keyType, version: version, clientTickets: false)
    for _ in 0..<2 {
        let pair = contexts.handshake()
        if pair.client.negotiated?.version != version {
            warn("\(contexts.label): negotiated \(String(describing: pair.client.negotiated?.version))")
        }
        if pair.client.negotiated?.resumed == true {
            warn("\(contexts.label): a handshake resumed although the client has tickets disabled")
        }
    }
    return contexts
}
