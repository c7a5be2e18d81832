import ArgumentParser
import Dispatch
import Foundation
import HTTPHello
import Histogram
import Loop
import TLSContract

/// `mtls bench`: load generators on the Loop, for numbers that compare backends and servers.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure handshakes per second and echo throughput.",
        subcommands: [HandshakeBench.self, ThroughputBench.self, IdleBench.self])
}

/// Full (or resumed) mTLS handshakes against a server, N in flight across the loops.
struct HandshakeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "handshakes", abstract: "Open, handshake, optionally GET /hello, close; N at a time.")

    @OptionGroup var credentials: CredentialOptions
    @Option(help: "The server, HOST:PORT.") var target: String = "127.0.0.1:8443"
    @Option(name: .customLong("server-name"), help: "Name to verify the server against (default: localhost).")
    var serverName: String = "localhost"
    @Option(help: "Connections in flight.") var concurrency: Int = 32
    @Option(help: "Seconds to run (ignored with --count).") var duration: Double = 5
    @Option(help: "Stop after this many handshakes.") var count: Int?
    @Option(help: "The only TLS version to offer: 1.2 or 1.3.") var tls: String = "1.3"
    @Option(help: "hello (GET /hello and check the reply) or none (close after the handshake).")
    var request: BenchRequest = .hello
    @Flag(help: "Resume sessions with tickets after the first full handshake of each connection slot.")
    var resume = false
    @Option(help: "Event loops (threads).") var loops: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Also write the figures as JSON to this file.") var json: String?
    @Option(name: .customLong("server-pid"),
            help: "A local server's PID (repeat for a master and its workers): report its CPU time per handshake too.")
    var serverPIDs: [Int32] = []
    @Option(help: "With --request hello: the reply body must start with this (empty: any 200 reply).")
    var expect: String = "hello"

    func validate() throws {
        guard ["1.2", "1.3"].contains(tls) else { throw ValidationError("--tls takes 1.2 or 1.3") }
        guard concurrency > 0 else { throw ValidationError("--concurrency must be positive") }
    }

    func run() throws {
        guard let endpoint = HostAndPort(target) else { throw ValidationError("--target takes HOST:PORT") }
        let version: TLSVersion = tls == "1.2" ? .tls12 : .tls13
        var configuration = TLSConfiguration(role: .client, identity: credentials.identity(role: .client),
                                             trustRoots: credentials.trustRoots, serverName: serverName,
                                             minimumVersion: version, maximumVersion: version)
        configuration.sessionTicketsEnabled = resume
        let context: any TLSContext
        do { context = try credentials.selectedBackend.makeContext(configuration) } catch {
            printError("mtls bench: \(error.summary)")
            throw ExitCode(1)
        }
        let group = LoopGroup(count: loops)
        defer { group.shutdown() }
        let run = HandshakeLoad(group: group, target: endpoint, tls: context, request: request, expectedBody: expect,
                                concurrency: concurrency, deadline: count == nil ? .now() + duration : nil, limit: count)
        let serverBefore = ProcessCPU.seconds(pids: serverPIDs)
        let clientBefore = ProcessCPU.selfSeconds()
        let report = run.execute(progress: isatty(1) == 1)
        let clientCPU = ProcessCPU.selfSeconds() - clientBefore
        let serverCPU = ProcessCPU.seconds(pids: serverPIDs).flatMap { after in serverBefore.map { after - $0 } }
        var figures = BenchFigures(report: report, backend: credentials.backend, target: target, concurrency: concurrency,
                                   loops: loops, request: request.rawValue, resume: resume,
                                   clientCPUSeconds: clientCPU, serverCPUSeconds: serverCPU)
        figures.tlsVersion = report.negotiated.map { "\($0.version)" }
        print(figures.table())
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(figures).write(to: URL(fileURLWithPath: json))
        }
        if report.completed == 0 { throw ExitCode(1) }
    }
}

enum BenchRequest: String, ExpressibleByArgument, Codable { case hello, none }

/// What one handshake run produced.
struct HandshakeReport: Sendable {
    var completed = 0
    var resumed = 0
    var errors: [String: Int] = [:]
    var seconds: Double = 0
    var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var negotiated: NegotiatedParameters?
}

/// Keeps `concurrency` connections in flight: each slot connects, handshakes, optionally asks for
/// /hello, closes and starts over, until the deadline or the count.
final class HandshakeLoad: @unchecked Sendable {
    let group: LoopGroup
    let target: HostAndPort
    let tls: any TLSContext
    let request: BenchRequest
    let expectedBody: String
    let concurrency: Int
    let deadline: DispatchTime?
    let limit: Int?

    private let lock = NSLock()
    private var report = HandshakeReport()
    private var started = 0
    private var active = 0
    private let finished = DispatchSemaphore(value: 0)

    init(group: LoopGroup, target: HostAndPort, tls: any TLSContext, request: BenchRequest, expectedBody: String,
         concurrency: Int, deadline: DispatchTime?, limit: Int?) {
        self.group = group
        self.target = target
        self.tls = tls
        self.request = request
        self.expectedBody = expectedBody
        self.concurrency = concurrency
        self.deadline = deadline
        self.limit = limit
    }

    func execute(progress: Bool) -> HandshakeReport {
        let start = DispatchTime.now()
        lock.lock()
        active = concurrency
        lock.unlock()
        for slot in 0..<concurrency {
            let loop = group.loops[slot % group.loops.count]
            loop.execute { [self] in startNext(on: loop) }
        }
        var lastPrinted = DispatchTime.now()
        while finished.wait(timeout: .now() + 0.25) == .timedOut {
            if progress && DispatchTime.now().uptimeNanoseconds - lastPrinted.uptimeNanoseconds > 1_000_000_000 {
                lastPrinted = .now()
                let (done, failed) = lock.withLock { (report.completed, report.errors.values.reduce(0, +)) }
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
                FileHandle.standardOutput.write(Data(String(format: "\r%6.1f s  %8d handshakes  %8.0f/s  %d errors   ",
                                                            elapsed, done, Double(done) / elapsed, failed).utf8))
            }
        }
        if progress { FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8)) }
        return lock.withLock {
            report.seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            return report
        }
    }

    /// Runs on `loop`: starts the slot's next connection, or retires the slot.
    private func startNext(on loop: EventLoop) {
        let shouldStart: Bool = lock.withLock {
            if let limit, started >= limit { return false }
            if let deadline, DispatchTime.now() >= deadline { return false }
            started += 1
            return true
        }
        guard shouldStart else {
            let last = lock.withLock { active -= 1; return active == 0 }
            if last { finished.signal() }
            return
        }
        let request = self.request
        let expectedBody = self.expectedBody
        TCPClient.connect(on: loop, to: target, tls: tls) { [self] in
            HandshakeAttempt(request: request, expectedBody: expectedBody) { outcome in
                self.record(outcome)
                self.startNext(on: loop)
            }
        }
    }

    private func record(_ outcome: HandshakeAttempt.Outcome) {
        lock.withLock {
            if let error = outcome.error {
                report.errors[error, default: 0] += 1
            } else {
                report.completed += 1
                if outcome.negotiated?.resumed == true { report.resumed += 1 }
                _ = report.latency.record(outcome.microseconds)
                if report.negotiated == nil { report.negotiated = outcome.negotiated }
            }
        }
    }
}

/// One connection of the load: measures from connect to the checked reply (or to the handshake).
final class HandshakeAttempt: ConnectionHandler {
    struct Outcome {
        var microseconds: UInt64 = 0
        var negotiated: NegotiatedParameters?
        var error: String?
    }
    private let request: BenchRequest
    private let expectedBody: String
    private let completion: (Outcome) -> Void
    private let started = DispatchTime.now()
    private var outcome = Outcome()
    private var parser = HTTPResponseParser()
    private var done = false

    init(request: BenchRequest, expectedBody: String, completion: @escaping (Outcome) -> Void) {
        self.request = request
        self.expectedBody = expectedBody
        self.completion = completion
    }

    func connectionDidEstablish(_ connection: Connection) {
        outcome.negotiated = connection.negotiated
        switch request {
        case .none:
            finish(error: nil)
            connection.close()
        case .hello:
            do { try connection.write(HTTPRequest.get("/hello", host: "localhost", keepAlive: false).serialized()) } catch {
                finish(error: "write failed")
            }
        }
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        parser.append(bytes)
        checkReply(connection)
    }

    private func checkReply(_ connection: Connection?) {
        guard let response = try? parser.nextResponse() else { return }
        let ok = response.head.status == 200 && String(decoding: response.body, as: UTF8.self).hasPrefix(expectedBody)
        finish(error: ok ? nil : "bad reply (\(response.head.status))")
        connection?.close()
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        if let error, !done { finish(error: BenchErrorName.of(error)); return }
        guard !done else { return }
        // Servers that frame the reply by closing (HTTP/1.0 style, e.g. s_server -WWW).
        parser.endOfInput()
        checkReply(nil)
        if !done { finish(error: "closed before the reply") }
    }

    private func finish(error: String?) {
        guard !done else { return }
        done = true
        outcome.error = error
        outcome.microseconds = (DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1000
        completion(outcome)
    }
}

/// Errors grouped by the contract's reason, so a table reads the same for both backends.
enum BenchErrorName {
    static func of(_ error: ConnectionError) -> String {
        switch error {
        case .tls(let tlsError): return "tls: \(tlsError.reason)"
        case .transport(let code, _): return "transport: \(String(cString: strerror(-code)))"
        case .connectTimeout: return "connect timeout"
        case .nameResolution: return "name resolution"
        case .refused(let why): return why
        case .timedOut(let what): return "\(what) timed out"
        }
    }
}

/// CPU time (user + system) of a process, from /proc, in seconds.
enum ProcessCPU {
    /// The sum over `pids`, or nil if none is given or one cannot be read.
    static func seconds(pids: [Int32]) -> Double? {
        guard !pids.isEmpty else { return nil }
        var total = 0.0
        for pid in pids {
            guard let seconds = seconds(pid: pid) else { return nil }
            total += seconds
        }
        return total
    }

    static func seconds(pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after the command name: state is field 3, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func selfSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }
}

/// The figures of a run, as printed and as written with --json.
struct BenchFigures: Codable {
    var backend: String
    var target: String
    var concurrency: Int
    var loops: Int
    var request: String
    var resume: Bool
    var seconds: Double
    var handshakes: Int
    var resumed: Int
    var handshakesPerSecond: Double
    var latencyMicroseconds: [String: UInt64]
    var errors: [String: Int]
    var tlsVersion: String?
    var cipherSuite: String?
    var group: String?
    var clientCPUMicrosecondsPerHandshake: Double
    var serverCPUMicrosecondsPerHandshake: Double?

    init(report: HandshakeReport, backend: String, target: String, concurrency: Int, loops: Int, request: String,
         resume: Bool, clientCPUSeconds: Double, serverCPUSeconds: Double?) {
        self.backend = backend
        self.target = target
        self.concurrency = concurrency
        self.loops = loops
        self.request = request
        self.resume = resume
        seconds = report.seconds
        handshakes = report.completed
        resumed = report.resumed
        handshakesPerSecond = report.seconds > 0 ? Double(report.completed) / report.seconds : 0
        latencyMicroseconds = report.completed == 0 ? [:] : [
            "p50": report.latency.valueAtPercentile(50), "p90": report.latency.valueAtPercentile(90),
            "p99": report.latency.valueAtPercentile(99), "max": report.latency.max,
        ]
        errors = report.errors
        cipherSuite = report.negotiated?.cipherSuite
        group = report.negotiated?.group
        let perHandshake = Double(max(report.completed, 1))
        clientCPUMicrosecondsPerHandshake = clientCPUSeconds * 1e6 / perHandshake
        serverCPUMicrosecondsPerHandshake = serverCPUSeconds.map { $0 * 1e6 / perHandshake }
    }

    func table() -> String {
        var table = TextTable(columns: ["figure", "value"])
        table.add(["handshakes", "\(handshakes) in \(String(format: "%.2f", seconds)) s" + (resume ? " (\(resumed) resumed)" : "")])
        table.add(["handshakes/s", String(format: "%.0f", handshakesPerSecond)])
        for key in ["p50", "p90", "p99", "max"] {
            if let value = latencyMicroseconds[key] { table.add(["latency \(key)", String(format: "%.2f ms", Double(value) / 1000)]) }
        }
        table.add(["TLS", [tlsVersion, cipherSuite, group].compactMap { $0 }.joined(separator: ", ")])
        table.add(["client CPU/handshake", String(format: "%.0f µs", clientCPUMicrosecondsPerHandshake)])
        if let server = serverCPUMicrosecondsPerHandshake { table.add(["server CPU/handshake", String(format: "%.0f µs", server)]) }
        for (name, count) in errors.sorted(by: { $0.key < $1.key }) { table.add(["errors: \(name)", "\(count)"]) }
        table.add(["client", "\(backend), \(concurrency) in flight, \(loops) loops, request \(request)"])
        return table.render()
    }
}

/// Echo MB/s over 1 or N connections at once.
struct ThroughputBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput", abstract: "Stream bytes through an echo server on N connections; report MB/s.")

    @OptionGroup var credentials: CredentialOptions
    @Option(help: "The echo server, HOST:PORT.") var target: String = "127.0.0.1:9443"
    @Option(name: .customLong("server-name"), help: "Name to verify the server against.") var serverName: String = "localhost"
    @Option(help: "Connections at once.") var connections: Int = 1
    @Option(help: "Bytes per connection, each way.") var bytes: Int = 256 << 20
    @Flag(help: "Plain TCP, no TLS.") var plain = false
    @Option(help: "Also write the figures as JSON to this file.") var json: String?

    func run() throws {
        guard let endpoint = HostAndPort(target) else { throw ValidationError("--target takes HOST:PORT") }
        var context: (any TLSContext)?
        if !plain {
            let configuration = TLSConfiguration(role: .client, identity: credentials.identity(role: .client),
                                                 trustRoots: credentials.trustRoots, serverName: serverName,
                                                 minimumVersion: credentials.minimumVersion,
                                                 maximumVersion: credentials.maximumVersion)
            do { context = try credentials.selectedBackend.makeContext(configuration) } catch {
                printError("mtls bench: \(error.summary)")
                throw ExitCode(1)
            }
        }
        var pattern = [UInt8](repeating: 0, count: bytes)
        for index in pattern.indices { pattern[index] = UInt8(truncatingIfNeeded: index &* 7 &+ index >> 10) }
        let payload = pattern
        let tls = context
        let group = LoopGroup(count: min(connections, ProcessInfo.processInfo.activeProcessorCount))
        defer { group.shutdown() }
        let results = SharedList<EchoRun.Result>([])
        let start = DispatchTime.now()
        DispatchQueue.concurrentPerform(iterations: connections) { index in
            let result = EchoRun.run(loop: group.loops[index % group.loops.count], target: endpoint, tls: tls, payload: payload)
            results.append(result)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        let all = results.values
        let failures = all.filter { $0.error != nil || $0.echoed != payload }
        let megabytes = Double(bytes * (connections - failures.count)) / 1_000_000
        var table = TextTable(columns: ["figure", "value"])
        table.add(["connections", "\(connections), \(bytes) bytes each way on each"])
        table.add(["MB/s each way", String(format: "%.1f", megabytes / seconds)])
        table.add(["TLS", all.first?.negotiated.map { "\($0.version), \($0.cipherSuite)" } ?? "plain"])
        table.add(["failed", "\(failures.count)" + (failures.first?.error.map { ": \($0)" } ?? "")])
        print(table.render())
        if let json {
            let figures = ["connections": Double(connections), "bytesEachWay": Double(bytes), "seconds": seconds,
                           "megabytesPerSecondEachWay": megabytes / seconds, "failed": Double(failures.count)]
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(figures).write(to: URL(fileURLWithPath: json))
        }
        if !failures.isEmpty { throw ExitCode(1) }
    }
}

/// A lock-protected list that concurrent workers append to.
final class SharedList<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Element]
    init(_ items: [Element]) { self.items = items }
    func append(_ item: Element) { lock.withLock { items.append(item) } }
    var values: [Element] { lock.withLock { items } }
}
