import Foundation
import PKI
import TestSupport

/// The PKI tests write PEM text first and name the file second.
typealias ScratchDirectory = TemporaryDirectory

extension TemporaryDirectory {
    @discardableResult
    func write(_ text: String, to name: String) throws -> String { try write(name, text) }

    /// Removal happens when the directory is released; tests call this to say so where it matters.
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

typealias CommandResult = ToolResult

enum OpenSSL {
    static let path = "/usr/bin/openssl"

    static func run(_ arguments: [String]) throws -> CommandResult {
        try runTool(path, arguments)
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
