import ArgumentParser
import Foundation
import Logging
import Loop
import TLSBackends
import TLSContract

/// `mtls demo`: with no arguments (or `pairs`), every client×server backend pair speaking mTLS;
/// `mtls demo rotation`, renewal, root rotation and revocation under traffic.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run hello over mTLS across every backend pair, with an ephemeral PKI (or: demo rotation).",
        subcommands: [DemoPairs.self, DemoRotation.self],
        defaultSubcommand: DemoPairs.self)
}

/// `mtls demo [pairs]`: shows every client×server backend pair speaking mTLS over loopback, and the
/// usual mistakes refused with the same words on both backends.
struct DemoPairs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pairs",
        abstract: "Run hello over mTLS across every backend pair, with an ephemeral PKI (the default).")

    func run() throws {
        let pki = try DemoPKI()
        defer { pki.remove() }
        print("Ephemeral PKI in \(pki.directory): ECDSA P-256 root, server (localhost), client (\(DemoPKI.clientName))")
        print("Backends: " + TLSBackendRegistry.all.map { "\($0.name) (\($0.libraryVersion))" }.joined(separator: ", "))

        let logger: Logger = {
            var logger = Logger(label: "mtls.demo")
            logger.logLevel = .critical
            return logger
        }()
        let group = LoopGroup(count: 2)
        defer { group.shutdown() }
        var servers: [(backend: any TLSBackend, server: TCPServer)] = []
        for backend in TLSBackendRegistry.all {
            let context = try backend.makeContext(pki.serverConfiguration())
            let server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: context) {
                HelloConnection(logger: logger, requestTimeout: .seconds(10))
            }
            servers.append((backend, server))
            print("hello server on \(backend.name) listening on \(server.address)")
        }
        defer { servers.forEach { $0.server.shutdown() } }
        print("")

        var failures = 0
        var table = TextTable(columns: ["client → server", "version", "cipher", "server saw client", "answer", "result"])
        for (serverBackend, server) in servers {
            for clientBackend in TLSBackendRegistry.all {
                let label = "\(clientBackend.name) → \(serverBackend.name)"
                let outcome = HelloFetch.run(
                    loop: group.next(), target: HostAndPort(host: "127.0.0.1", port: server.port), path: "/hello",
                    host: "localhost", tls: try clientBackend.makeContext(pki.clientConfiguration()), count: 1)
                let answer = outcome.bodies.first.map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .newlines) } ?? "-"
                let ok = outcome.error == nil && outcome.statuses == [200] && answer.contains(DemoPKI.clientName)
                if !ok { failures += 1 }
                table.add([label, outcome.negotiated.map { "\($0.version)" } ?? "-", outcome.negotiated?.cipherSuite ?? "-",
                           answer.components(separatedBy: ", ").last ?? "-", answer,
                           ok ? "ok" : "FAILED: \(outcome.error.map { "\($0)" } ?? "unexpected answer")"])
            }
        }
        print(table.render())

        print("\nRefusals (each must fail, on both backends):")
        let refusals: [(String, TLSConfiguration)] = [
            ("client without a certificate", pki.clientConfiguration(identity: nil)),
            ("client from an untrusted CA", pki.clientConfiguration(identity: "stranger")),
            ("server name does not match", pki.clientConfiguration(serverName: "wrong.example")),
        ]
        var refusalTable = TextTable(columns: ["case", "backends", "what the client is told"])
        for (name, configuration) in refusals {
            for (serverBackend, server) in servers {
                let clientBackend = serverBackend
                let outcome = HelloFetch.run(
                    loop: group.next(), target: HostAndPort(host: "127.0.0.1", port: server.port), path: "/hello",
                    host: "localhost", tls: try clientBackend.makeContext(configuration), count: 1)
                let refused = outcome.error != nil && outcome.bodies.isEmpty
                if !refused { failures += 1 }
                let message = outcome.error.map {
                    UserFacingError.describe($0, role: .client, options: nil, hasIdentity: configuration.identity != nil)
                } ?? "NOT REFUSED"
                refusalTable.add([name, "\(clientBackend.name) → \(serverBackend.name)", message])
            }
        }
        print(refusalTable.render())
        if failures > 0 {
            print("\n\(failures) unexpected result(s)")
            throw ExitCode(1)
        }
        print("\nAll four pairs completed mTLS over loopback, and every bad peer was refused.")
    }
}
