import Foundation
import PKI

/// A fresh temporary directory for one test, removed explicitly by `remove()`.
/// (Named apart from TestSupport.TemporaryDirectory so neither shadows the other.)
struct ScratchDirectory {
    let path: String

    init() throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("pki-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    @discardableResult
    func write(_ text: String, to name: String) throws -> String {
        let file = (path as NSString).appendingPathComponent(name)
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func file(_ name: String) -> String {
        (path as NSString).appendingPathComponent(name)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

struct CommandResult {
    let status: Int32
    let output: String
    var succeeded: Bool { status == 0 }
}

enum OpenSSL {
    static let path = "/usr/bin/openssl"

    static func run(_ arguments: [String]) throws -> CommandResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CommandResult(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    /// `openssl verify -CAfile <root> [-untrusted <intermediates>] [extra] <leaf>`, files written to `directory`.
    static func verify(
        leaf: String, root: String, untrusted: String? = nil, extra: [String] = [], in directory: ScratchDirectory
    ) throws -> CommandResult {
        let id = UUID().uuidString
        let rootFile = try directory.write(root, to: "root-\(id).pem")
        let leafFile = try directory.write(leaf, to: "leaf-\(id).pem")
        var arguments = ["verify", "-CAfile", rootFile]
        if let untrusted, !untrusted.isEmpty {
            arguments += ["-untrusted", try directory.write(untrusted, to: "untrusted-\(id).pem")]
        }
        return try run(arguments + extra + [leafFile])
    }

    /// The text of `openssl x509 -noout -ext …` for a certificate.
    static func extensions(_ certificatePEM: String, in directory: ScratchDirectory) throws -> String {
        let file = try directory.write(certificatePEM, to: "cert-\(UUID().uuidString).pem")
        let result = try run(["x509", "-in", file, "-noout", "-ext",
                              "subjectAltName,extendedKeyUsage,basicConstraints,keyUsage,subjectKeyIdentifier,authorityKeyIdentifier"])
        return result.output
    }

    static func subject(_ certificatePEM: String, in directory: ScratchDirectory) throws -> String {
        let file = try directory.write(certificatePEM, to: "cert-\(UUID().uuidString).pem")
        return try run(["x509", "-in", file, "-noout", "-subject", "-nameopt", "RFC2253"]).output
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
