import Foundation

/// The path of an executable product built next to the running test bundle (e.g. "mtls"), or the
/// one named by the environment variable `<NAME>_EXECUTABLE` (e.g. `MTLS_EXECUTABLE`).
public func builtExecutable(_ name: String) throws -> String {
    if let override = ProcessInfo.processInfo.environment["\(name.uppercased())_EXECUTABLE"] { return override }
    var starts = [Bundle.main.bundleURL, Bundle.main.executableURL, URL(fileURLWithPath: CommandLine.arguments[0])]
        .compactMap { $0?.resolvingSymlinksInPath() }
    starts += Bundle.allBundles.map(\.bundleURL).filter { $0.pathExtension == "xctest" }
    for start in starts {
        var directory = start
        for _ in 0..<5 {
            let candidate = directory.appendingPathComponent(name).path
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
               FileManager.default.isExecutableFile(atPath: candidate) {
                return candidate
            }
            directory.deleteLastPathComponent()
        }
    }
    throw BuiltExecutableNotFound(name: name, searched: starts.map(\.path))
}

public struct BuiltExecutableNotFound: Error, CustomStringConvertible {
    public let name: String
    public let searched: [String]
    public var description: String {
        "no `\(name)` executable next to the test bundle (searched from \(searched)); build it or set \(name.uppercased())_EXECUTABLE"
    }
}
