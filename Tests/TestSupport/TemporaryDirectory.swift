import Foundation

/// A directory that exists for one test and is removed with it.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(prefix: String = "swift-mtls-test") throws {
        let base = FileManager.default.temporaryDirectory.path
        path = base + "/\(prefix)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `text` to `name` inside the directory and returns the full path.
    @discardableResult
    public func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    public func file(_ name: String) -> String { path + "/" + name }
}

/// The result of running an external program to completion.
public struct ToolResult: Sendable {
    public let status: Int32
    public let output: String
    public var succeeded: Bool { status == 0 }
}

/// Runs an external tool (openssl, curl, ...) to completion and collects its combined output.
public func runTool(_ executable: String, _ arguments: [String], input: String? = nil) throws -> ToolResult {
    let child = try ChildProcess(resolveExecutable(executable), arguments, input: input ?? "")
    let status = child.wait()
    return ToolResult(status: status, output: child.output)
}

/// An absolute path for `name`: itself if it has a slash, else the first match on PATH.
public func resolveExecutable(_ name: String) -> String {
    guard !name.contains("/") else { return name }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return name
}
