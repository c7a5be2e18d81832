import ArgumentParser
import Dispatch
import Foundation
import HTTPHello
import Loop
import TLSContract

/// `mtls bench idle`: what an idle established mTLS connection costs the server, in memory.
struct IdleBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "Hold N mTLS connections idle after one GET /hello each; report the server's RSS growth per connection.")

    @OptionGroup var credentials: CredentialOptions
    @Option(help: "The hello server, HOST:PORT.") var target: String = "127.0.0.1:8443"
    @Option(name: .customLong("server-name"), help: "Name to verify the server against.") var serverName: String = "localhost"
    @Option(help: "Connections to open and hold.") var connections: Int = 1000
    @Option(help: "Handshakes in flight while opening them.") var concurrency: Int = 64
    @Option(name: .customLong("server-pid"), help: "The server's PID, to read its memory from /proc.") var serverPID: Int32
    @Option(help: "Event loops (threads).") var loops: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Also write the figures as JSON to this file.") var json: String?

    func run() throws {
        guard let endpoint = HostAndPort(target) else { throw ValidationError("--target takes HOST:PORT") }
        var configuration = TLSConfiguration(role: .client, identity: credentials.identity(role: .client),
                                             trustRoots: credentials.trustRoots, serverName: serverName,
                                             minimumVersion: credentials.minimumVersion,
                                             maximumVersion: credentials.maximumVersion)
        configuration.sessionTicketsEnabled = false
        let context: any TLSContext
        do { context = try credentials.selectedBackend.makeContext(configuration) } catch {
            printError("mtls bench idle: \(error.summary)")
            throw ExitCode(1)
        }
        guard let before = ResidentMemory.kibibytes(pid: serverPID) else {
            printError("mtls bench idle: cannot read /proc/\(serverPID)/status")
            throw ExitCode(1)
        }
        let group = LoopGroup(count: loops)
        defer { group.shutdown() }
        let holders = SharedList<IdleHolder>([])
        let slots = DispatchSemaphore(value: concurrency)
        let answered = DispatchGroup()
        for index in 0..<connections {
            slots.wait()
            answered.enter()
            let holder = IdleHolder { slots.signal(); answered.leave() }
            holders.append(holder)
            TCPClient.connect(on: group.loops[index % group.loops.count], to: endpoint, tls: context) { holder }
        }
        answered.wait()
        let all = holders.values
        let held = all.filter { $0.state.value == .answered }.count
        Thread.sleep(forTimeInterval: 1)
        let during = ResidentMemory.kibibytes(pid: serverPID) ?? before

        // A newcomer must still be served while the others are held.
        let newcomer = HelloFetch.run(loop: group.next(), target: endpoint, path: "/hello", host: serverName,
                                      tls: context, count: 1)
        let newcomerServed = newcomer.error == nil && newcomer.statuses == [200]

        for (index, holder) in all.enumerated() {
            group.loops[index % group.loops.count].execute { holder.close() }
        }
        for _ in 0..<100 where all.contains(where: { $0.state.value != .closed }) { Thread.sleep(forTimeInterval: 0.1) }
        Thread.sleep(forTimeInterval: 2)
        let after = ResidentMemory.kibibytes(pid: serverPID) ?? during

        let perConnection = held > 0 ? Double(during - before) / Double(held) : 0
        var table = TextTable(columns: ["figure", "value"])
        table.add(["connections held", "\(held) of \(connections)"])
        table.add(["server RSS before / held / after close", "\(before) / \(during) / \(after) KiB"])
        table.add(["KiB per idle connection", String(format: "%.1f", perConnection)])
        table.add(["memory returned after close", String(format: "%.0f%%", during > before ? 100 * Double(during - after) / Double(during - before) : 0)])
        table.add(["newcomer served while held", newcomerServed ? "yes" : "NO: \(newcomer.error.map { "\($0)" } ?? "bad reply")"])
        print(table.render())
        if let json {
            let figures: [String: Double] = [
                "connections": Double(connections), "held": Double(held), "rssBeforeKiB": Double(before),
                "rssHeldKiB": Double(during), "rssAfterKiB": Double(after), "kibPerConnection": perConnection,
                "newcomerServed": newcomerServed ? 1 : 0,
            ]
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(figures).write(to: URL(fileURLWithPath: json))
        }
        if held < connections || !newcomerServed { throw ExitCode(1) }
    }
}

/// One held connection: handshake, one keep-alive GET /hello, then silence until told to close.
final class IdleHolder: ConnectionHandler, @unchecked Sendable {
    enum State: Sendable { case connecting, answered, closed }
    let state = LockedValue(State.connecting)
    private let onAnswered: @Sendable () -> Void
    private var parser = HTTPResponseParser()
    private var connection: Connection?
    private var reported = false

    init(onAnswered: @escaping @Sendable () -> Void) { self.onAnswered = onAnswered }

    func connectionDidEstablish(_ connection: Connection) {
        self.connection = connection
        try? connection.write(HTTPRequest.get("/hello", host: "localhost", keepAlive: true).serialized())
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        parser.append(bytes)
        if (try? parser.nextResponse()) != nil {
            state.value = .answered
            report()
        }
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        state.value = .closed
        self.connection = nil
        report()
    }

    /// Runs on the connection's loop.
    func close() { connection?.close() }

    private func report() {
        guard !reported else { return }
        reported = true
        onAnswered()
    }
}

/// A value behind a lock, for state one loop writes and the main thread reads.
final class LockedValue<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}

enum ResidentMemory {
    /// VmRSS of a process, in KiB.
    static func kibibytes(pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }
}
