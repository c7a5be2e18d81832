import ArgumentParser

@main
struct MTLS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mtls",
        abstract: "Mutual TLS on OpenSSL or GnuTLS: PKI, servers, clients and benchmarks.",
        subcommands: [Demo.self, PKICommand.self, HelloServerCommand.self, HelloClientCommand.self, EchoServerCommand.self, EchoClientCommand.self, BenchCommand.self, ProxyCommand.self])
}
