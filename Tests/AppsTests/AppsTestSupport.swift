import Foundation
import Testing
import TestSupport

/// The `mtls` binary built next to this test bundle (or `MTLS_EXECUTABLE`).
func mtlsExecutable() throws -> String {
    try builtExecutable("mtls")
}

/// Runs `mtls` with `arguments`.
func mtls(_ arguments: String...) throws -> ToolResult {
    try runTool(try mtlsExecutable(), arguments)
}

struct ToolError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A server started for one test and stopped (SIGTERM, then SIGKILL) when the test ends.
final class ServerProcess: @unchecked Sendable {
    let child: ChildProcess
    let port: Int

    /// Starts `executable` and waits until it accepts connections on `port`, or, when `port` is nil,
    /// until it prints "listening on HOST:PORT" (our own servers, started on port 0).
    init(_ executable: String, _ arguments: [String], port fixedPort: Int? = nil, directory: String? = nil,
         shell: Bool = false) throws {
        if shell {
            child = try ChildProcess("/bin/bash", ["-c", ([executable] + arguments).joined(separator: " ")],
                                     directory: directory)
        } else {
            child = try ChildProcess(resolveExecutable(executable), arguments, directory: directory)
        }
        if let fixedPort {
            port = fixedPort
            guard waitUntilAccepting(port: fixedPort) else {
                child.terminate()
                throw ToolError("\(executable) did not start listening on \(fixedPort): \(child.output)")
            }
        } else {
            var found: Int?
            for _ in 0..<600 {
                let text = child.output
                if let range = text.range(of: #"listening on [^ ]*:(\d+)"#, options: .regularExpression) {
                    found = Int(text[range].split(separator: ":").last ?? "")
                    break
                }
                if !child.isRunning { break }
                usleep(50_000)
            }
            port = found ?? 0
            guard found != nil else {
                child.terminate()
                throw ToolError("the server did not start: \(child.output)")
            }
        }
    }

    var log: String { child.output }
    var pid: pid_t { child.pid }
    var isRunning: Bool { child.isRunning }

    func stop() { child.terminate() }
}

/// A port that was free a moment ago, for external servers that cannot pick their own.
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A `pki init` directory for one test, removed with it.
final class PKIFixture: @unchecked Sendable {
    let directory: TemporaryDirectory
    var path: String { directory.path }

    init(keyType: String = "ecdsa-p256", intermediate: Bool = false) throws {
        directory = try TemporaryDirectory(prefix: "mtls-interop")
        var arguments = ["pki", "init", "--out", directory.path, "--key-type", keyType]
        if intermediate { arguments.append("--intermediate") }
        let result = try runTool(try mtlsExecutable(), arguments)
        guard result.status == 0 else { throw ToolError("pki init failed: \(result.output)") }
    }

    func file(_ name: String) -> String { directory.file(name) }
}

let helloRequest = "GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
