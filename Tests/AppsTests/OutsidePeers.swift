import Foundation
import TestSupport

/// The peer programs in Tests/Peers (Java, Go, Node, C), each built at most once per test process with
/// the toolchain on the PATH, into a scratch directory removed when the process exits.
final class PeerProgram: @unchecked Sendable {
    let name: String
    /// The tools this peer needs that are not on the PATH (empty: it can run).
    let missingTools: [String]
    private let tools: [String: String]
    private let build: @Sendable (_ tools: [String: String], _ scratch: String) throws -> [String]
    private let lock = NSLock()
    private var built: Result<[String], ToolError>?

    /// `build` compiles the peer into `scratch` if it needs to and returns the command line that
    /// runs it, without the peer's own arguments.
    init(_ name: String, needs toolNames: [String],
         build: @escaping @Sendable (_ tools: [String: String], _ scratch: String) throws -> [String]) {
        self.name = name
        var tools: [String: String] = [:]
        for tool in toolNames { tools[tool] = executableOnPath(tool) }
        self.tools = tools
        self.missingTools = toolNames.filter { tools[$0] == nil }
        self.build = build
    }

    var isAvailable: Bool { missingTools.isEmpty }
    var unavailableReason: String {
        "\(name): \(missingTools.joined(separator: " and ")) not on the PATH (scripts/install-deps installs it)"
    }

    /// The command line that runs the peer, building it on first use.
    func command() throws -> [String] {
        lock.lock()
        defer { lock.unlock() }
        if built == nil {
            if !isAvailable {
                built = .failure(ToolError(unavailableReason))
            } else {
                do {
                    let scratch = try PeerScratch.directory(name)
                    built = .success(try build(tools, scratch))
                } catch let error as ToolError {
                    built = .failure(error)
                } catch {
                    built = .failure(ToolError("building the \(name) peer failed: \(error)"))
                }
            }
        }
        return try built!.get()
    }

    /// Runs the peer to completion (a client), killing it after `timeout` seconds.
    func run(_ arguments: [String], input: String? = nil, timeout: Double = 60) throws -> BoundedResult {
        let command = try command()
        return try runBounded(command[0], Array(command.dropFirst()) + arguments, input: input, timeout: timeout)
    }

    /// Starts the peer as a server that prints "listening on 127.0.0.1:PORT".
    func start(_ arguments: [String], directory: String? = nil) throws -> ServerProcess {
        let command = try command()
        return try ServerProcess(command[0], Array(command.dropFirst()) + arguments, directory: directory)
    }
}

/// The peers under Tests/Peers.
enum OutsidePeers {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Peers").path

    /// Tests/Peers/java/TLSPeer.java, compiled with javac, run with java.
    static let java = PeerProgram("java", needs: ["javac", "java"]) { tools, scratch in
        let source = sources + "/java/TLSPeer.java"
        let result = try runBounded(tools["javac"]!, ["-d", scratch, source], timeout: 300)
        guard result.status == 0 else { throw ToolError("javac \(source) failed: \(result.output)") }
        return [tools["java"]!, "-cp", scratch, "TLSPeer"]
    }

    /// Tests/Peers/go/tlspeer.go, built with `go build` from the standard library alone: the build
    /// cache and GOPATH live in the scratch directory and the module proxy is off.
    static let go = PeerProgram("go", needs: ["go"]) { tools, scratch in
        let source = sources + "/go/tlspeer.go"
        let binary = scratch + "/tlspeer"
        let build = try ChildProcess(tools["go"]!, ["build", "-o", binary, source], input: "", environment: [
            "GOCACHE": scratch + "/cache", "GOPATH": scratch + "/gopath", "GOFLAGS": "-mod=mod",
            "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
        ])
        guard build.wait(seconds: 300) == 0 else {
            build.terminate()
            throw ToolError("go build \(source) failed: \(build.output)")
        }
        return [binary]
    }

    /// Tests/Peers/node/tls_peer.js, run as it is.
    static let node = PeerProgram("node", needs: ["node"]) { tools, _ in
        [tools["node"]!, sources + "/node/tls_peer.js"]
    }

    /// Tests/Peers/c/key_update_client.c, compiled with the clang that comes with Swift against the
    /// system's OpenSSL: the one peer here that sends TLS 1.3 KeyUpdates when told to.
    static let keyUpdateClient = PeerProgram("key-update client", needs: ["clang"]) { tools, scratch in
        let source = sources + "/c/key_update_client.c"
        let binary = scratch + "/key_update_client"
        let result = try runBounded(tools["clang"]!, ["-O1", "-Wall", "-o", binary, source, "-lssl", "-lcrypto"], timeout: 120)
        guard result.status == 0 else { throw ToolError("clang \(source) failed: \(result.output)") }
        return [binary]
    }

    /// Tests/Peers/c/warning_alert_client.c, the same way against the system's GnuTLS: it sends TLS 1.2
    /// warning alerts of its choosing, which OpenSSL cannot.
    static let warningAlertClient = PeerProgram("warning-alert client", needs: ["clang"]) { tools, scratch in
        let source = sources + "/c/warning_alert_client.c"
        let binary = scratch + "/warning_alert_client"
        let result = try runBounded(tools["clang"]!, ["-O1", "-Wall", "-o", binary, source, "-lgnutls"], timeout: 120)
        guard result.status == 0 else { throw ToolError("clang \(source) failed: \(result.output)") }
        return [binary]
    }
}

/// Runs `executable` to completion like `runTool`, but kills it if it is still running after
/// `timeout` seconds, so that a peer that hangs fails its test instead of the whole run.
func runBounded(_ executable: String, _ arguments: [String], input: String? = nil, timeout: Double = 60) throws -> BoundedResult {
    let child = try ChildProcess(resolveExecutable(executable), arguments, input: input ?? "")
    guard let status = child.wait(seconds: timeout) else {
        child.terminate()
        return BoundedResult(status: -1, output: child.output + "\n[killed after \(Int(timeout)) s]")
    }
    return BoundedResult(status: status, output: child.output)
}

/// What `runBounded` saw: the exit status (-1: killed at the time limit) and everything printed.
struct BoundedResult: Sendable {
    let status: Int32
    let output: String
}

/// The first `name` on the PATH, or nil.
func executableOnPath(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").map { "\($0)/\(name)" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Directories that live as long as the test process (compiled peers, shared PKIs) and are removed
/// when it exits.
enum PeerScratch {
    private static let root: Result<String, ToolError> = {
        let path = FileManager.default.temporaryDirectory.path + "/mtls-peers-\(getpid())-\(UUID().uuidString)"
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            return .failure(ToolError("cannot create \(path): \(error)"))
        }
        rootPath.withLock { $0 = path }
        atexit { PeerScratch.removeAll() }
        return .success(path)
    }()
    private static let rootPath = Locked<String?>(nil)

    /// A new directory named after `name` under this process's scratch root.
    static func directory(_ name: String) throws -> String {
        let path = try root.get() + "/\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    private static func removeAll() {
        if let path = rootPath.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// A value behind a lock (Synchronization's Mutex needs macOS 15; this package targets macOS 14).
final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
