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

/// Full (or resumed) mTLS handshakes against a server: N in flight across the loops, or N blocking
/// threads with one connection each at a time.
struct HandshakeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "handshakes", abstract: "Open, handshake, optionally GET /hello, close; N at a time.",
        discussion: """
            By default the connections run on the event loops, --concurrency of them in flight at once. \
            With --blocking, each of --threads threads runs one connection at a time on a blocking socket: \
            connect, handshake, GET /hello, read the reply, close, then the next (one connection in flight \
            per thread, the load of a plain blocking client).

            With --resume, each blocking thread has its own client context and offers the newest ticket it \
            has received: the previous connection's if the server issued one on it (then each ticket is offered \
            once), else the older one again, as the client contexts do. On the loops, all slots share one \
            client context and its newest ticket. Benchmarks/reconnect-resumption.py checks that a server \
            resumes a client that never offers a ticket twice.
            """)

    @OptionGroup var credentials: CredentialOptions
    @Option(help: "The server, HOST:PORT.") var target: String = "127.0.0.1:8443"
    @Option(name: .customLong("server-name"), help: "Name to verify the server against (default: localhost).")
    var serverName: String = "localhost"
    @Option(help: "Connections in flight on the loops (without --blocking).") var concurrency: Int = 32
    @Flag(help: "Blocking sockets: --threads threads, each with one connection in flight at a time.")
    var blocking = false
    @Option(help: "With --blocking: client threads.") var threads: Int = 4
    @Option(help: "Seconds to run (ignored with --count).") var duration: Double = 5
    @Option(help: "Stop after this many handshakes.") var count: Int?
    @Option(help: "The only TLS version to offer: 1.2 or 1.3.") var tls: String = "1.3"
    @Option(help: "hello (GET /hello and check the reply) or none (close after the handshake).")
    var request: BenchRequest = .hello
    @Flag(help: "Resume sessions with tickets after the first full handshake of each connection slot or thread.")
    var resume = false
    @Option(help: "Event loops (threads), without --blocking.") var loops: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Also write the figures as JSON to this file.") var json: String?
    @Option(name: .customLong("server-pid"),
            help: "A local server's PID (repeat for a master and its workers): report its CPU time per handshake too.")
    var serverPIDs: [Int32] = []
    @Option(help: "With --request hello: the reply body must start with this (empty: any 200 reply).")
    var expect: String = "hello"

    func validate() throws {
        guard ["1.2", "1.3"].contains(tls) else { throw ValidationError("--tls takes 1.2 or 1.3") }
        guard concurrency > 0 else { throw ValidationError("--concurrency must be positive") }
        guard threads > 0 else { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        guard let endpoint = HostAndPort(target) else { throw ValidationError("--target takes HOST:PORT") }
        let version: TLSVersion = tls == "1.2" ? .tls12 : .tls13
        var configuration = TLSConfiguration(role: .client, identity: credentials.identity(role: .client),
                                             trustRoots: credentials.trustRoots, serverName: serverName,
                                             minimumVersion: version, maximumVersion: version)
        configuration.sessionTicketsEnabled = resume
        // A client context caches the newest ticket per server name: blocking threads get one each, so
        // that every thread offers the ticket its own previous connection received.
        let contexts: [any TLSContext]
        do {
            contexts = try (0..<(blocking ? threads : 1)).map { _ throws(TLSError) in
                try credentials.selectedBackend.makeContext(configuration)
            }
        } catch {
            printError("mtls bench: \(error.summary)")
            throw ExitCode(1)
        }
        let reply = ExpectedReply(request: request, body: expect)
        let deadline: DispatchTime? = count == nil ? .now() + duration : nil
        let serverBefore = ProcessCPU.seconds(pids: serverPIDs)
        let clientBefore = ProcessCPU.selfSeconds()
        let report: HandshakeReport
        if blocking {
            let address: BlockingSocket.Address
            do { address = try BlockingSocket.Address(endpoint) } catch {
                printError("mtls bench: \(error.name)")
                throw ExitCode(1)
            }
            let load = BlockingHandshakeLoad(address: address, contexts: contexts, reply: reply,
                                             tally: HandshakeTally(slots: threads, deadline: deadline, limit: count))
            report = load.execute(progress: isatty(1) == 1)
        } else {
            let group = LoopGroup(count: loops)
            defer { group.shutdown() }
            let load = HandshakeLoad(group: group, target: endpoint, tls: contexts[0], reply: reply,
                                     tally: HandshakeTally(slots: concurrency, deadline: deadline, limit: count))
            report = load.execute(progress: isatty(1) == 1)
        }
        let clientCPU = ProcessCPU.selfSeconds() - clientBefore
        let serverCPU = ProcessCPU.seconds(pids: serverPIDs).flatMap { after in serverBefore.map { after - $0 } }
        let shape: LoadShape = blocking ? .blocking(threads: threads) : .loops(concurrency: concurrency, loops: loops)
        var figures = BenchFigures(report: report, backend: credentials.backend, target: target, shape: shape,
                                   request: request.rawValue, resume: resume,
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

/// How the load was offered: connections on the event loops, or blocking threads.
enum LoadShape {
    case loops(concurrency: Int, loops: Int)
    case blocking(threads: Int)

    /// Connections in flight at once.
    var inFlight: Int {
        switch self {
        case .loops(let concurrency, _): return concurrency
        case .blocking(let threads): return threads
        }
    }
}

/// What one handshake run produced.
struct HandshakeReport: Sendable {
    var completed = 0
    var resumed = 0
    var errors: [String: Int] = [:]
    var seconds: Double = 0
    var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var negotiated: NegotiatedParameters?
}

/// One connection of a load: from connect to the checked reply (or to the handshake).
struct HandshakeOutcome {
    var microseconds: UInt64 = 0
    var negotiated: NegotiatedParameters?
    var error: String?
}

/// What the reply to each connection must be.
struct ExpectedReply: Sendable {
    let request: BenchRequest
    /// The body must start with this (empty: any 200 reply).
    let body: String
    let requestBytes = HTTPRequest.get("/hello", host: "localhost", keepAlive: false).serialized()

    init(request: BenchRequest, body: String) {
        self.request = request
        self.body = body
    }

    /// nil if the response is the one expected, else the error to count.
    func problem(with response: (head: HTTPResponseHead, body: [UInt8])) -> String? {
        response.head.status == 200 && String(decoding: response.body, as: UTF8.self).hasPrefix(body)
            ? nil : "bad reply (\(response.head.status))"
    }
}

/// The score of a run, shared by every connection slot: whether another connection may start
/// (before the deadline or the count), what came of each, and when the last slot has retired.
final class HandshakeTally: @unchecked Sendable {
    private let deadline: DispatchTime?
    private let limit: Int?
    private let lock = NSLock()
    /// Guarded by `lock`.
    private var report = HandshakeReport()
    private var started = 0
    private var activeSlots: Int
    private let allRetired = DispatchSemaphore(value: 0)
    /// Connections in flight at once: loop slots or blocking threads.
    let slotCount: Int

    init(slots: Int, deadline: DispatchTime?, limit: Int?) {
        self.slotCount = slots
        self.activeSlots = slots
        self.deadline = deadline
        self.limit = limit
    }

    /// True if the caller may start one more connection. False retires the caller's slot.
    func startNext() -> Bool {
        let (mayStart, lastSlot): (Bool, Bool) = lock.withLock {
            let over = (limit.map { started >= $0 } ?? false) || (deadline.map { DispatchTime.now() >= $0 } ?? false)
            if over {
                activeSlots -= 1
                return (false, activeSlots == 0)
            }
            started += 1
            return (true, false)
        }
        if lastSlot { allRetired.signal() }
        return mayStart
    }

    func record(_ outcome: HandshakeOutcome) {
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

    /// Waits until every slot has retired, printing progress once a second if asked.
    func awaitEnd(since start: DispatchTime, progress: Bool) -> HandshakeReport {
        var lastPrinted = DispatchTime.now()
        while allRetired.wait(timeout: .now() + 0.25) == .timedOut {
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
}

/// Keeps `tally`'s slots busy on the loops: each slot connects, handshakes, optionally asks for
/// /hello, closes and starts over, until the tally says stop.
final class HandshakeLoad: @unchecked Sendable {
    let group: LoopGroup
    let target: HostAndPort
    let tls: any TLSContext
    let reply: ExpectedReply
    let tally: HandshakeTally

    init(group: LoopGroup, target: HostAndPort, tls: any TLSContext, reply: ExpectedReply, tally: HandshakeTally) {
        self.group = group
        self.target = target
        self.tls = tls
        self.reply = reply
        self.tally = tally
    }

    func execute(progress: Bool) -> HandshakeReport {
        let start = DispatchTime.now()
        for slot in 0..<tally.slotCount {
            let loop = group.loops[slot % group.loops.count]
            loop.execute { [self] in startNext(on: loop) }
        }
        return tally.awaitEnd(since: start, progress: progress)
    }

    /// Runs on `loop`: starts the slot's next connection, or retires the slot.
    private func startNext(on loop: EventLoop) {
        guard tally.startNext() else { return }
        let reply = self.reply
        TCPClient.connect(on: loop, to: target, tls: tls) { [self] in
            HandshakeAttempt(reply: reply) { outcome in
                self.tally.record(outcome)
                self.startNext(on: loop)
            }
        }
    }
}

/// One connection of the loop load: measures from connect to the checked reply (or to the handshake).
final class HandshakeAttempt: ConnectionHandler {
    private let reply: ExpectedReply
    private let completion: (HandshakeOutcome) -> Void
    private let started = DispatchTime.now()
    private var outcome = HandshakeOutcome()
    private var parser = HTTPResponseParser()
    private var done = false

    init(reply: ExpectedReply, completion: @escaping (HandshakeOutcome) -> Void) {
        self.reply = reply
        self.completion = completion
    }

    func connectionDidEstablish(_ connection: Connection) {
        outcome.negotiated = connection.negotiated
        switch reply.request {
        case .none:
            finish(error: nil)
            connection.close()
        case .hello:
            do { try connection.write(reply.requestBytes) } catch {
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
        finish(error: reply.problem(with: response))
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

/// The blocking load: one thread per client context, each running one connection at a time on a
/// blocking socket, driven through the TLS contract (no event loop), until the tally says stop.
final class BlockingHandshakeLoad: @unchecked Sendable {
    let address: BlockingSocket.Address
    let contexts: [any TLSContext]
    let reply: ExpectedReply
    let tally: HandshakeTally

    init(address: BlockingSocket.Address, contexts: [any TLSContext], reply: ExpectedReply, tally: HandshakeTally) {
        self.address = address
        self.contexts = contexts
        self.reply = reply
        self.tally = tally
    }

    func execute(progress: Bool) -> HandshakeReport {
        let start = DispatchTime.now()
        for context in contexts {
            Thread.detachNewThread { [self] in
                while tally.startNext() {
                    tally.record(connectOnce(context))
                }
            }
        }
        return tally.awaitEnd(since: start, progress: progress)
    }

    /// Connect, handshake, GET /hello and check the reply, close_notify, close.
    private func connectOnce(_ context: any TLSContext) -> HandshakeOutcome {
        let started = DispatchTime.now()
        var outcome = HandshakeOutcome()
        do throws(BlockingTLSError) {
            let connection = try BlockingTLSConnection(address: address, context: context)
            defer { connection.close() }
            try connection.handshake()
            outcome.negotiated = connection.session.negotiated
            if reply.request == .hello {
                try connection.write(reply.requestBytes)
                outcome.error = reply.problem(with: try connection.readResponse())
            }
        } catch {
            outcome.error = error.name
        }
        outcome.microseconds = (DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1000
        return outcome
    }
}

/// Why a blocking connection failed, named as the loop load names its errors.
enum BlockingTLSError: Error {
    case nameResolution(host: String)
    case transport(errno: Int32)
    case tls(TLSError)
    case closedBeforeReply

    var name: String {
        switch self {
        case .nameResolution(let host): return "cannot resolve \(host)"
        // The socket's send and receive timeouts surface as EAGAIN.
        case .transport(let code) where code == EAGAIN: return "transport: timed out"
        case .transport(let code): return "transport: \(String(cString: strerror(code)))"
        case .tls(let error): return "tls: \(error.reason)"
        case .closedBeforeReply: return "closed before the reply"
        }
    }
}

/// A connected TCP socket in blocking mode, with send and receive timeouts so that a stalled server
/// fails the connection instead of hanging the thread.
struct BlockingSocket {
    /// A resolved address, kept as the bytes `connect` takes.
    struct Address: Sendable {
        fileprivate let family: Int32
        fileprivate let bytes: [UInt8]

        init(_ target: HostAndPort) throws(BlockingTLSError) {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(target.host, String(target.port), &hints, &result) == 0, let first = result,
                  let address = first.pointee.ai_addr
            else { throw .nameResolution(host: target.host) }
            defer { freeaddrinfo(result) }
            family = first.pointee.ai_family
            bytes = Array(UnsafeRawBufferPointer(start: address, count: Int(first.pointee.ai_addrlen)))
        }
    }

    static let timeoutSeconds = 10

    let descriptor: Int32

    init(connectingTo address: Address) throws(BlockingTLSError) {
        descriptor = socket(address.family, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw .transport(errno: errno) }
        var timeout = timeval(tv_sec: Self.timeoutSeconds, tv_usec: 0)
        var noDelay: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
        let connected = address.bytes.withUnsafeBytes { raw in
            Glibc.connect(descriptor, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
        }
        guard connected == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw .transport(errno: code)
        }
    }

    func sendAll(_ bytes: [UInt8]) throws(BlockingTLSError) {
        var offset = 0
        while offset < bytes.count {
            // MSG_NOSIGNAL: a server that has already closed is an error here, not SIGPIPE.
            let sent = bytes.withUnsafeBytes { send(descriptor, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                throw .transport(errno: errno)
            }
            offset += sent
        }
    }

    /// Receives into `buffer`; 0 means the peer closed.
    func receive(into buffer: inout [UInt8]) throws(BlockingTLSError) -> Int {
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if received >= 0 { return received }
            if errno != EINTR { throw .transport(errno: errno) }
        }
    }

    func close() { Glibc.close(descriptor) }
}

/// One TLS connection on a blocking socket, driven through the contract alone: what the session
/// asks to send is sent at once, and the socket is read only when the session needs input.
final class BlockingTLSConnection {
    let session: any TLSSession
    private let socket: BlockingSocket
    private var received = [UInt8](repeating: 0, count: 16 * 1024)
    private var outgoing: [UInt8] = []
    private var plaintext: [UInt8] = []

    init(address: BlockingSocket.Address, context: any TLSContext) throws(BlockingTLSError) {
        do { session = try context.makeSession() } catch { throw .tls(error) }
        socket = try BlockingSocket(connectingTo: address)
    }

    func handshake() throws(BlockingTLSError) {
        while !session.isHandshakeComplete {
            guard try advance() else { throw .closedBeforeReply }
        }
    }

    func write(_ bytes: [UInt8]) throws(BlockingTLSError) {
        do { try session.writePlaintext(bytes) } catch { throw .tls(error) }
        try flush()
    }

    /// Reads until one whole HTTP response has arrived (or the server closed after one).
    func readResponse() throws(BlockingTLSError) -> (head: HTTPResponseHead, body: [UInt8]) {
        var parser = HTTPResponseParser()
        while true {
            if !plaintext.isEmpty {
                parser.append(plaintext)
                plaintext.removeAll(keepingCapacity: true)
            }
            if let response = try? parser.nextResponse() { return response }
            guard try advance() else {
                parser.endOfInput()
                guard let response = try? parser.nextResponse() else { throw .closedBeforeReply }
                return response
            }
        }
    }

    /// Sends close_notify (best effort: the server may have closed already) and closes the socket.
    func close() {
        session.close()
        try? flush()
        socket.close()
    }

    /// One step: processes what the session holds, sends what it produced, and reads from the socket
    /// if it needs more. False once the peer has closed.
    private func advance() throws(BlockingTLSError) -> Bool {
        let progress = session.process()
        try flush()
        switch progress {
        case .handshakeComplete:
            return true
        case .plaintextReady:
            session.takePlaintext(into: &plaintext, maxBytes: .max)
            return true
        case .peerClosed:
            return false
        case .failed(let error):
            throw .tls(error)
        case .needsInput:
            let count = try socket.receive(into: &received)
            if count == 0 {
                session.receiveEndOfInput()
            } else {
                received.withUnsafeBytes { session.receiveCiphertext(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            }
            return true
        }
    }

    private func flush() throws(BlockingTLSError) {
        guard session.pendingCiphertextCount > 0 else { return }
        outgoing.removeAll(keepingCapacity: true)
        session.takeCiphertext(into: &outgoing)
        try socket.sendAll(outgoing)
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
    /// "loops" (connections on the event loops) or "blocking" (one connection per thread at a time).
    var mode: String
    /// Connections in flight at once.
    var concurrency: Int
    /// Event loops, in "loops" mode.
    var loops: Int?
    /// Client threads, in "blocking" mode.
    var threads: Int?
    var request: String
    var resume: Bool
    var seconds: Double
    var handshakes: Int
    var resumed: Int
    /// With --resume: resumed handshakes over reconnects (every slot's first connection is necessarily full).
    var resumedShareOfReconnects: Double?
    var handshakesPerSecond: Double
    var latencyMicroseconds: [String: UInt64]
    var errors: [String: Int]
    var tlsVersion: String?
    var cipherSuite: String?
    var group: String?
    var clientCPUMicrosecondsPerHandshake: Double
    var serverCPUMicrosecondsPerHandshake: Double?

    init(report: HandshakeReport, backend: String, target: String, shape: LoadShape, request: String,
         resume: Bool, clientCPUSeconds: Double, serverCPUSeconds: Double?) {
        self.backend = backend
        self.target = target
        switch shape {
        case .loops(_, let loops):
            mode = "loops"
            self.loops = loops
        case .blocking(let threads):
            mode = "blocking"
            self.threads = threads
        }
        concurrency = shape.inFlight
        self.request = request
        self.resume = resume
        seconds = report.seconds
        handshakes = report.completed
        resumed = report.resumed
        let reconnects = report.completed - shape.inFlight
        resumedShareOfReconnects = resume && reconnects > 0 ? Double(report.resumed) / Double(reconnects) : nil
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
        if let share = resumedShareOfReconnects {
            table.add(["reconnects resumed", String(format: "%.1f %%", share * 100)])
        }
        table.add(["handshakes/s", String(format: "%.0f", handshakesPerSecond)])
        for key in ["p50", "p90", "p99", "max"] {
            if let value = latencyMicroseconds[key] { table.add(["latency \(key)", String(format: "%.2f ms", Double(value) / 1000)]) }
        }
        table.add(["TLS", [tlsVersion, cipherSuite, group].compactMap { $0 }.joined(separator: ", ")])
        table.add(["client CPU/handshake", String(format: "%.0f µs", clientCPUMicrosecondsPerHandshake)])
        if let server = serverCPUMicrosecondsPerHandshake { table.add(["server CPU/handshake", String(format: "%.0f µs", server)]) }
        for (name, count) in errors.sorted(by: { $0.key < $1.key }) { table.add(["errors: \(name)", "\(count)"]) }
        let shape = threads.map { "blocking, \($0) threads with 1 connection each at a time" }
            ?? "\(concurrency) in flight, \(loops ?? 0) loops"
        table.add(["client", "\(backend), \(shape), request \(request)"])
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
