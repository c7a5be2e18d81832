import ArgumentParser
import Foundation
import Logging
import Loop
import TLSContract

/// Which clients a server admits, among those whose certificate verified: `--allow-*` rules, ORed.
/// Any server adopts it with `@OptionGroup(title: ...) var peerPolicy: PeerPolicyOptions` and
/// `peerPolicy.install(into: &options.connection, logger: logger)`.
struct PeerPolicyOptions: ParsableArguments {
    @Option(name: .customLong("allow-cn"),
            help: ArgumentHelp("Admit a client whose subject CN is exactly NAME (case-sensitive; SANs are not consulted).",
                               valueName: "name"))
    var allowCN: [String] = []

    @Option(name: .customLong("allow-dns"),
            help: ArgumentHelp("Admit a client with this DNS SAN (case-insensitive; *.example.com admits exactly one label in front of example.com).",
                               valueName: "name"))
    var allowDNS: [String] = []

    @Option(name: .customLong("allow-uri"),
            help: ArgumentHelp("Admit a client with this URI SAN exactly, or any URI under a prefix ending in /* (spiffe://prod.example/ns/billing/* admits .../billing/sa/x).",
                               valueName: "uri"))
    var allowURI: [String] = []

    @Option(name: .customLong("allow-ip"), help: ArgumentHelp("Admit a client with this IP SAN.", valueName: "address"))
    var allowIP: [String] = []

    @Option(name: .customLong("allow-spki"),
            help: ArgumentHelp("Admit a client whose public key has this SHA-256 (of its SubjectPublicKeyInfo, 64 hex digits).",
                               valueName: "sha256"))
    var allowSPKI: [String] = []

    @Option(name: .customLong("allow-issuer"),
            help: ArgumentHelp("Admit a client whose certificate was signed by the CA with this subject DN (RFC 4514, e.g. \"CN=Billing CA,O=Example\"; CN=... alone matches that one CN).",
                               valueName: "dn"))
    var allowIssuer: [String] = []

    func validate() throws { _ = try policy() }

    /// Every rule, validated; empty when no flag was given (any verified client is admitted).
    func policy() throws -> PeerPolicy {
        try PolicyFlags.policy([(.cn, allowCN), (.dns, allowDNS), (.uri, allowURI), (.ip, allowIP),
                                (.spki, allowSPKI), (.issuer, allowIssuer)], prefix: "allow")
    }

    /// Installs the policy as the connections' authorization check, if any rule was given. A
    /// refused client is logged once, with its identity and the rules it failed.
    @discardableResult
    func install(into options: inout ConnectionOptions, logger: Logger) throws -> PeerAuthorizer? {
        let policy = try policy()
        guard !policy.isEmpty else { return nil }
        let authorizer = PeerAuthorizer(policy: policy, peer: "client", flagPrefix: "allow", logger: logger)
        options.authorize = { authorizer.authorize($0) }
        return authorizer
    }
}

extension PeerPolicyOptions {
    /// Rules admit clients by their certificate: on a server that asks for none they would refuse
    /// everyone, which is a mistake to report at start-up rather than at the first connection.
    func checkClientCertificatesRequested(_ clientAuthentication: TLSConfiguration.ClientAuthentication,
                                          plain: Bool) throws {
        guard try !policy().isEmpty, plain || clientAuthentication == .none else { return }
        throw ValidationError("--allow-* rules admit clients by their certificate, and this server asks for none "
                              + "(--mode plain or tls, or --client-auth none): every client would be refused")
    }
}

/// hello-server's old `--allow NAME...`, which matched the CN, DNS, IP and URI SANs in one
/// case-sensitive list. Not kept as an alias: a CN could pass for a DNS name and vice versa, and
/// keeping that meaning under an old name would keep the hole. It fails naming the typed flags.
enum RemovedAllowFlag {
    static func message(for values: [String]) -> String {
        let suggestions = values.map { value -> String in
            if value.contains("://") { return "--allow-uri \(value)" }
            if IPAddressText.parse(value) != nil { return "--allow-ip \(value)" }
            return "--allow-cn \(value) (subject CN) or --allow-dns \(value) (DNS SAN)"
        }
        return "--allow was replaced by typed rules (it matched the CN and every SAN in one case-sensitive list); use "
            + suggestions.joined(separator: "; ")
    }
}

/// The client's mirror: which servers it talks to, checked after the handshake (full or resumed)
/// and before any request byte is sent, on top of the chain and server-name verification.
struct PeerVerifyOptions: ParsableArguments {
    @Option(name: .customLong("verify-cn"),
            help: ArgumentHelp("Talk only to a server whose subject CN is exactly NAME (case-sensitive).", valueName: "name"))
    var verifyCN: [String] = []

    @Option(name: .customLong("verify-uri"),
            help: ArgumentHelp("Talk only to a server with this URI SAN, or one under a prefix ending in /*.", valueName: "uri"))
    var verifyURI: [String] = []

    @Option(name: .customLong("verify-spki"),
            help: ArgumentHelp("Talk only to a server whose public key has this SHA-256 (of its SubjectPublicKeyInfo, 64 hex digits).",
                               valueName: "sha256"))
    var verifySPKI: [String] = []

    func validate() throws { _ = try policy() }

    func policy() throws -> PeerPolicy {
        try PolicyFlags.policy([(.cn, verifyCN), (.uri, verifyURI), (.spki, verifySPKI)], prefix: "verify")
    }

    /// Installs the check if any rule was given. The refusal is kept for the command's message.
    @discardableResult
    func install(into options: inout ConnectionOptions) throws -> PeerAuthorizer? {
        let policy = try policy()
        guard !policy.isEmpty else { return nil }
        let authorizer = PeerAuthorizer(policy: policy, peer: "server", flagPrefix: "verify", logger: nil)
        options.authorize = { authorizer.authorize($0) }
        return authorizer
    }
}

enum PolicyFlags {
    static func policy(_ flags: [(PeerPolicy.Rule.Kind, [String])], prefix: String) throws -> PeerPolicy {
        var rules: [PeerPolicy.Rule] = []
        for (kind, values) in flags {
            for value in values {
                do { rules.append(try PeerPolicy.Rule.parse(kind, value)) } catch {
                    throw ValidationError("--\(prefix)-\(kind) '\(value)': \(error.problem)")
                }
            }
        }
        return PeerPolicy(rules)
    }

    /// A rule as the flag that made it: "--allow-dns *.example.com".
    static func flag(_ rule: PeerPolicy.Rule, prefix: String) -> String { "--\(prefix)-\(rule.kind) \(rule.value)" }
}

/// Runs a `PeerPolicy` on the loop at each handshake's completion and remembers the last refusal.
/// Unchecked: the policy is immutable and `lastRefusal` is guarded by the lock.
final class PeerAuthorizer: @unchecked Sendable {
    let policy: PeerPolicy
    private let peer: String
    private let flagPrefix: String
    private let logger: Logger?
    private let lock = NSLock()
    private var refusal: String?

    init(policy: PeerPolicy, peer: String, flagPrefix: String, logger: Logger?) {
        self.policy = policy
        self.peer = peer
        self.flagPrefix = flagPrefix
        self.logger = logger
    }

    /// The text of the last refusal: who the peer was and which rules it failed.
    var lastRefusal: String? { lock.withLock { refusal } }

    func authorize(_ identity: PeerIdentity?) -> Bool {
        let decision = policy.authorizes(identity)
        guard case .refused(let why) = decision else { return true }
        let rules = policy.rules.map { PolicyFlags.flag($0, prefix: flagPrefix) }.joined(separator: ", ")
        let text: String
        switch why {
        case .noCertificate:
            text = "refused the \(peer): it presented no certificate, and \(rules) need one"
        case .noRuleMatched:
            text = "refused the \(peer) \(identity?.authorizationSummary ?? "-"): it matches none of \(rules)"
        }
        logger?.notice("\(text)")
        lock.withLock { refusal = text }
        return false
    }
}

extension ConnectionError {
    /// Refused by the authorization policy (already logged by `PeerAuthorizer`).
    var isPolicyRefusal: Bool {
        if case .tls(let error) = self, case .certificateRejected(.notAuthorized) = error.reason { return true }
        return false
    }
}
