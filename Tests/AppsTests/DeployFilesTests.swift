import Foundation
import Testing
import TestSupport

/// The deployment examples in deploy/ must keep working as the CLI changes: every `mtls` command line in
/// them is run with the built binary and `--check-config` (parse every flag, load the credentials, exit 0
/// without listening), the certificate paths pointed at a freshly generated PKI.
@Suite("deploy/ examples")
struct DeployFilesTests {
    static let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy").path
    static let kubernetes = deploy + "/kubernetes/sidecar.yaml"
    static let systemd = deploy + "/systemd/mtls-proxy.service"

    @Test("Every mtls command in the Kubernetes manifest and the systemd unit parses and loads its credentials")
    func everyCommandChecks() throws {
        let commands = try Self.kubernetesCommands() + Self.systemdCommands()
        try #require(commands.count >= 3, "expected the proxy server and client sidecars and the systemd proxy: \(commands)")
        #expect(Set(commands.map { $0.arguments.prefix(2).joined(separator: " ") }) == ["proxy server", "proxy client"])
        let pki = try PKIFixture()
        for command in commands {
            let arguments = command.substitutingCredentials(pki) + ["--check-config"]
            let result = try runBounded(try mtlsExecutable(), arguments, timeout: 60)
            #expect(result.status == 0 && result.output.contains("configuration ok") && !result.output.contains("listening on"),
                    "\(command.file): mtls \(arguments.joined(separator: " ")) → \(result.status): \(result.output)")
        }
    }

    @Test("The check fails for a renamed flag and for a credential file that is not there")
    func checkCanFail() throws {
        let pki = try PKIFixture()
        let command = try #require(try Self.systemdCommands().first)
        let renamed = command.substitutingCredentials(pki).map { $0 == "--target" ? "--target-address" : $0 } + ["--check-config"]
        let unknownFlag = try runBounded(try mtlsExecutable(), renamed, timeout: 60)
        #expect(unknownFlag.status != 0 && !unknownFlag.output.contains("configuration ok"), "\(unknownFlag.output)")

        let missingKey = command.substitutingCredentials(pki).map { $0 == pki.file("server.key") ? pki.file("gone.key") : $0 }
        let missing = try runBounded(try mtlsExecutable(), missingKey + ["--check-config"], timeout: 60)
        #expect(missing.status == 1 && missing.output.contains("gone.key"), "\(missing.output)")
    }

    // MARK: - Extracting the commands

    struct Command: CustomStringConvertible {
        let file: String
        /// The arguments after `mtls`.
        let arguments: [String]
        var description: String { "mtls " + arguments.joined(separator: " ") }

        /// Credential paths under /etc/mtls/ replaced by the fixture's files: a Secret's tls.crt/tls.key are the
        /// server's or the client's, by the proxy's direction.
        func substitutingCredentials(_ pki: PKIFixture) -> [String] {
            let role = arguments.count > 1 && arguments[1] == "client" ? "client" : "server"
            let names = ["tls.crt": "\(role).pem", "tls.key": "\(role).key", "ca.crt": "ca.pem"]
            return arguments.map { argument in
                guard argument.hasPrefix("/etc/mtls/") else { return argument }
                let name = String(argument.dropFirst("/etc/mtls/".count))
                return pki.file(names[name] ?? name)
            }
        }
    }

    /// Each container whose `command:` block list starts with `mtls`: the items that follow it, comments skipped.
    static func kubernetesCommands() throws -> [Command] {
        let lines = try String(contentsOfFile: kubernetes, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        var commands: [Command] = []
        var index = 0
        while index < lines.count {
            defer { index += 1 }
            guard lines[index].trimmingCharacters(in: .whitespaces) == "command:" else { continue }
            var items: [String] = []
            var next = index + 1
            while next < lines.count {
                let line = lines[next].trimmingCharacters(in: .whitespaces)
                if line.hasPrefix("#") { next += 1; continue }
                guard line.hasPrefix("- ") else { break }
                items.append(unquoted(String(line.dropFirst(2)).trimmingCharacters(in: .whitespaces)))
                next += 1
            }
            if items.first == "mtls" { commands.append(Command(file: kubernetes, arguments: Array(items.dropFirst()))) }
        }
        let mentioned = lines.filter { $0.trimmingCharacters(in: .whitespaces) == "- mtls" }.count
        #expect(commands.count == mentioned, "a `- mtls` item outside a command: block list was not checked")
        return commands
    }

    /// Every Exec*= line (continuations joined) that runs `mtls`.
    static func systemdCommands() throws -> [Command] {
        let text = try String(contentsOfFile: systemd, encoding: .utf8).replacingOccurrences(of: "\\\n", with: " ")
        return text.split(separator: "\n").compactMap { line -> Command? in
            guard line.hasPrefix("Exec"), let equals = line.firstIndex(of: "=") else { return nil }
            var words = line[line.index(after: equals)...].split(whereSeparator: \.isWhitespace).map(String.init)
            guard let program = words.first?.trimmingCharacters(in: CharacterSet(charactersIn: "-@:+!")),
                  program == "mtls" || program.hasSuffix("/mtls") else { return nil }
            words.removeFirst()
            return Command(file: systemd, arguments: words.map(unquoted))
        }
    }

    static func unquoted(_ text: String) -> String {
        guard text.count >= 2, let first = text.first, first == text.last, first == "\"" || first == "'" else { return text }
        return String(text.dropFirst().dropLast())
    }
}
