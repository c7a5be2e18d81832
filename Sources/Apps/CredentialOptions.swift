import ArgumentParser
import Foundation
import Logging
import Loop
import TLSBackends
import TLSContract

/// The options every server and client shares: which backend, which credentials, which versions.
struct CredentialOptions: ParsableArguments {
    @Option(help: "TLS backend: \(TLSBackendRegistry.names.joined(separator: " or ")).")
    var backend: String = "openssl"

    @Option(help: "A directory made by `mtls pki init` (ca.pem, server.pem/.key, client.pem/.key). Its crl.pem is loaded only when named with --crl: a CRL past its nextUpdate refuses every certificate it covers, so checking it is a choice (keep it fresh with `mtls pki revoke --pki DIR`).")
    var pki: String?

    @Option(help: "Our certificate chain (PEM).")
    var cert: String?

    @Option(help: "Our private key (PEM).")
    var key: String?

    @Option(help: "A trusted CA (PEM). Repeat for several roots.")
    var ca: [String] = []

    @Option(help: "Our certificate and key as a PKCS#12 bundle, instead of --cert/--key.")
    var p12: String?

    @Option(help: ArgumentHelp(
        "A certificate revocation list (PEM, possibly several concatenated, or DER). Repeat for several. A peer whose certificate or intermediate is listed by its issuer is refused; a CRL past its nextUpdate refuses the certificates it covers.",
        valueName: "file"))
    var crl: [String] = []

    @Option(name: .customLong("p12-password"), help: "The PKCS#12 bundle's password.")
    var p12Password: String = ""

    @Option(name: .customLong("tls-min"), help: "The lowest TLS version to accept: 1.2 or 1.3.")
    var tlsMin: String = "1.2"

    @Option(name: .customLong("tls-max"), help: "The highest TLS version to offer or accept: 1.2 or 1.3.")
    var tlsMax: String = "1.3"

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard TLSBackendRegistry.backend(named: backend) != nil else {
            throw ValidationError("unknown backend '\(backend)': choose \(TLSBackendRegistry.names.joined(separator: " or "))")
        }
        guard ["1.2", "1.3"].contains(tlsMin) else { throw ValidationError("--tls-min takes 1.2 or 1.3") }
        guard ["1.2", "1.3"].contains(tlsMax) else { throw ValidationError("--tls-max takes 1.2 or 1.3") }
        guard minimumVersion <= maximumVersion else {
            throw ValidationError("--tls-min \(tlsMin) is above --tls-max \(tlsMax): no TLS version is left to negotiate")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
        if p12 != nil && (cert != nil || key != nil) {
            throw ValidationError("use either --p12 or --cert/--key, not both")
        }
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
    }

    var selectedBackend: any TLSBackend { TLSBackendRegistry.backend(named: backend)! }

    var minimumVersion: TLSVersion { tlsMin == "1.3" ? .tls13 : .tls12 }

    var maximumVersion: TLSVersion { tlsMax == "1.2" ? .tls12 : .tls13 }

    /// Our identity: --p12, else --cert/--key, else the role's files in --pki. Nil if none was given.
    func identity(role: TLSConfiguration.Role) -> TLSConfiguration.Identity? {
        if let p12 { return .pkcs12(.file(p12), password: p12Password) }
        if let cert, let key { return .pem(certificateChain: .file(cert), privateKey: .file(key)) }
        if let pki {
            let name = role == .server ? "server" : "client"
            return .pem(certificateChain: .file("\(pki)/\(name).pem"), privateKey: .file("\(pki)/\(name).key"))
        }
        return nil
    }

    var trustRoots: [TLSConfiguration.Source] {
        if !ca.isEmpty { return ca.map { .file($0) } }
        if let pki { return [.file("\(pki)/ca.pem")] }
        return []
    }

    var crls: [TLSConfiguration.Source] { crl.map { .file($0) } }

    /// The files named in messages about trust, e.g. "--ca ca.pem".
    var trustDescription: String {
        trustRoots.isEmpty ? "no --ca given" : "not in --ca " + trustRoots.map(\.name).joined(separator: ", ")
    }

    func makeLogger(_ label: String) -> Logger {
        LoggingSetup.bootstrapOnce()
        var logger = Logger(label: label)
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return logger
    }
}

enum LoggingSetup {
    private static let once: Void = {
        LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
    }()
    static func bootstrapOnce() { _ = once }
}

/// Prints one line to standard output at once, unbuffered: scripts wait for it (e.g. the port).
func printNow(_ message: String) {
    FileHandle.standardOutput.write(Data((message + "\n").utf8))
}

/// Prints one line to standard error (Swift 6 refuses Glibc's `stderr` global).
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Failures as a person needs them: what went wrong and which option fixes it. The same failure
/// reads the same on both backends, because it is worded from the contract's reason.
enum UserFacingError {
    static func describe(_ error: Error, role: TLSConfiguration.Role, options: CredentialOptions?,
                         hasIdentity: Bool) -> String {
        guard let connectionError = error as? ConnectionError else {
            if let tlsError = error as? TLSError { return describe(tlsError, role: role, options: options, hasIdentity: hasIdentity) }
            return "\(error)"
        }
        guard let tlsError = connectionError.tlsError else { return connectionError.description }
        return describe(tlsError, role: role, options: options, hasIdentity: hasIdentity)
    }

    static func describe(_ error: TLSError, role: TLSConfiguration.Role, options: CredentialOptions?, hasIdentity: Bool) -> String {
        let peer = role == .client ? "server" : "client"
        let trust = options?.trustDescription ?? "not a trusted CA"
        switch error.reason {
        case .peerSentAlert where role == .client && !hasIdentity:
            return "the server requires a client certificate and none was configured (use --cert/--key or --pki)"
        case .certificateRejected(.untrustedIssuer):
            return "the \(peer)'s certificate is signed by an unknown authority (\(trust))"
        case .certificateRejected(.wrongName):
            return "the \(peer)'s certificate is not issued for the name we asked for (see its SANs, or set --server-name)"
        case .certificateRejected(.missing):
            return "the \(peer) presented no certificate, but one is required"
        case .certificateRejected(.expired):
            return "the \(peer)'s certificate has expired"
        case .certificateRejected(.notYetValid):
            return "the \(peer)'s certificate is not valid yet (check the clocks)"
        case .certificateRejected(.wrongUsage):
            return "the \(peer)'s certificate is not allowed for TLS \(peer) authentication (extended key usage)"
        case .certificateRejected(.notAuthorized):
            return "the \(peer)'s identity is not on the allow list"
        case .certificateRejected(.revoked):
            return "the \(peer)'s certificate has been revoked (\(error.detail))"
        case .certificateRejected(.crlExpired):
            return "the CRL that covers the \(peer)'s certificate has expired, so its revocation status is unknown (\(error.detail))"
        default:
            return error.summary
        }
    }
}
