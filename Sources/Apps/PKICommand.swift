import ArgumentParser
import Foundation
import PKI
import TLSBackendOpenSSL
import TLSContract

/// `mtls pki`: certificates and keys for mTLS, written to files that both backends (and curl,
/// openssl, browsers) load.
struct PKICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pki",
        abstract: "Create a CA, server and client certificates, self-signed certificates and PKCS#12 bundles.",
        subcommands: [PKIInit.self, PKIIssue.self, PKISelfSigned.self, PKIExportPKCS12.self, PKIInspect.self,
                      PKIRenew.self, PKIRevoke.self, PKIRotate.self])
}

/// The options the generating subcommands share.
struct PKIKeyOptions: ParsableArguments {
    @Option(name: .customLong("key-type"),
            help: ArgumentHelp("The key algorithm: \(KeyType.allCases.map(\.rawValue).joined(separator: ", ")) (default: \(KeyType.ecdsaP256)).",
                               valueName: "type"),
            completion: .list(KeyType.allCases.map(\.rawValue)),
            transform: PKIArguments.keyType)
    var keyType: KeyType = .ecdsaP256

    @Option(help: "How many days the certificates are valid.")
    var days: Int = 365

    @Flag(help: "Overwrite existing files.")
    var force = false

    func validate() throws {
        guard days >= 1 else { throw ValidationError("--days must be at least 1 (got \(days))") }
        guard days <= 100 * 366 else { throw ValidationError("--days must be at most \(100 * 366) (got \(days))") }
    }
}

/// `mtls pki init`: a complete PKI directory.
struct PKIInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a CA (optionally with an intermediate), a server and a client certificate to a directory.",
        discussion: """
            Files: ca.pem, ca.key, [intermediate.pem, intermediate.key,] server.pem, server.key, client.pem, \
            client.key, crl.pem (an empty CRL of each CA, current for 7 days: servers can use \
            --crl DIR/crl.pem from the start; --pki does not load it by itself). Private keys get mode 0600. \
            Every file is written to a temporary file and renamed into place. Existing files are never \
            replaced without --force.
            """)

    @Option(help: ArgumentHelp("The directory to write to (created if needed).", valueName: "dir"))
    var out: String

    @OptionGroup var keyOptions: PKIKeyOptions

    @Flag(help: "Issue the leaves from an intermediate CA signed by the root; their chains include it.")
    var intermediate = false

    @Option(name: .customLong("server-names"), parsing: .upToNextOption,
            help: ArgumentHelp("The server certificate's names, comma-separated: DNS names, IP addresses, URIs (default: \(defaultServerNames.joined(separator: ","))).",
                               valueName: "names"))
    var serverNames: [String] = []

    @Option(name: .customLong("client-name"), help: "The client certificate's name (CN and SAN).")
    var clientName: String = "client"

    static let defaultServerNames = ["localhost", "127.0.0.1", "::1"]

    func validate() throws {
        guard !clientName.isEmpty else { throw ValidationError("--client-name must not be empty") }
        _ = try PKIArguments.names(serverNames, option: "--server-names")
    }

    func run() throws {
        try PKIArguments.reportingErrors("pki init") {
            let names = try PKIArguments.names(serverNames, option: "--server-names")
            let files = try PKIWriter.initialize(
                at: out, keyType: keyOptions.keyType, intermediate: intermediate,
                serverNames: names.isEmpty ? Self.defaultServerNames : names, clientName: clientName,
                days: keyOptions.days, force: keyOptions.force)
            for file in files { print("wrote \(file)") }
            let quoted = PKIArguments.shellQuoted(out)
            print("start a server with: mtls hello-server --pki \(quoted)   then a client: mtls hello-client --pki \(quoted)")
        }
    }
}

/// `mtls pki issue`: one more server or client certificate from an existing CA directory.
struct PKIIssue: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue",
        abstract: "Issue a server or client certificate from a CA directory made by `mtls pki init`.",
        discussion: """
            Signs with intermediate.pem/.key when the directory has them (the chain then includes the \
            intermediate), else with ca.pem/.key. Writes PREFIX.pem (the chain) and PREFIX.key (mode 0600).
            """)

    enum Role: String, EnumerableFlag {
        case server, client

        static func help(for value: Role) -> ArgumentHelp? {
            value == .server ? "A server certificate (EKU serverAuth)." : "A client certificate (EKU clientAuth)."
        }
    }

    @Option(name: .customLong("ca-dir"), help: ArgumentHelp("The CA directory.", valueName: "dir"))
    var caDirectory: String

    @Flag(exclusivity: .exclusive)
    var role: Role

    @OptionGroup var leaf: LeafFileOptions

    func run() throws {
        try PKIArguments.reportingErrors("pki issue") {
            let names = try leaf.resolvedNames()
            let (certificatePath, keyPath) = try leaf.outputPaths()
            let authority = try Self.loadAuthority(directory: caDirectory)
            let validity = leaf.validity
            var request: LeafRequest
            switch role {
            case .server:
                request = .server(names: names, keyType: leaf.keyOptions.keyType, validFor: validity)
            case .client:
                request = .client(name: names[0], keyType: leaf.keyOptions.keyType, validFor: validity)
                request.addSubjectAlternativeNames(Array(names.dropFirst()))
            }
            let issued = try authority.ca.issue(request)
            try PKIArguments.writeFile(issued.chainPEM, to: certificatePath, secret: false, force: leaf.keyOptions.force)
            try PKIArguments.writeFile(issued.privateKeyPEM, to: keyPath, secret: true, force: leaf.keyOptions.force)
            print("wrote \(certificatePath) (\(role.rawValue) certificate for \(names.joined(separator: ", ")), signed by \(authority.file))")
            print("wrote \(keyPath)")
        }
    }

    /// The intermediate of the directory if it has one, else its root.
    static func loadAuthority(directory: String) throws -> (ca: CertificateAuthority, file: String) {
        let layout = PKIDirectoryLayout(directory: directory)
        let fileManager = FileManager.default
        let useIntermediate = fileManager.fileExists(atPath: layout.intermediateCertificate)
            || fileManager.fileExists(atPath: layout.intermediateKey)
        let certificatePath = useIntermediate ? layout.intermediateCertificate : layout.caCertificate
        let keyPath = useIntermediate ? layout.intermediateKey : layout.caKey
        let certificates = PKIArguments.pemCertificates(try PKIArguments.readText(certificatePath))
        guard let first = certificates.first else {
            throw PKIArguments.Failure("\(certificatePath): no certificate found in the PEM file")
        }
        do {
            let ca = try CertificateAuthority(certificatePEM: first, privateKeyPEM: try PKIArguments.readText(keyPath),
                                              intermediatesAbovePEM: certificates.dropFirst().joined())
            return (ca, certificatePath)
        } catch let error as PKIError {
            throw PKIArguments.Failure("\(certificatePath) / \(keyPath): \(error)")
        }
    }
}

/// `mtls pki self-signed`: one certificate that is its own trust anchor, for both roles.
struct PKISelfSigned: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "self-signed",
        abstract: "Write a self-signed certificate valid for both server and client authentication.",
        discussion: """
            Put the same certificate in both peers' trust (--ca) to pin it. Writes PREFIX.pem and \
            PREFIX.key (mode 0600).
            """)

    @OptionGroup var leaf: LeafFileOptions

    func run() throws {
        try PKIArguments.reportingErrors("pki self-signed") {
            let names = try leaf.resolvedNames()
            let (certificatePath, keyPath) = try leaf.outputPaths()
            var request = LeafRequest(commonName: names[0], purposes: [.serverAuth, .clientAuth],
                                      keyType: leaf.keyOptions.keyType,
                                      notValidAfter: Date().addingTimeInterval(leaf.validity))
            request.addSubjectAlternativeNames(names)
            let issued = try IssuedCertificate.selfSigned(request)
            try PKIArguments.writeFile(issued.chainPEM, to: certificatePath, secret: false, force: leaf.keyOptions.force)
            try PKIArguments.writeFile(issued.privateKeyPEM, to: keyPath, secret: true, force: leaf.keyOptions.force)
            print("wrote \(certificatePath) (self-signed, serverAuth and clientAuth, for \(names.joined(separator: ", ")))")
            print("wrote \(keyPath)")
        }
    }
}

/// `mtls pki pkcs12`: a certificate chain and its key as one password-protected bundle.
struct PKIExportPKCS12: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pkcs12",
        abstract: "Bundle a certificate chain and its private key as PKCS#12 (AES-256-CBC, PBKDF2).",
        discussion: "The bundle is written with mode 0600. Load it with --p12 FILE --p12-password P.")

    @Option(help: ArgumentHelp("The certificate chain (PEM, leaf first).", valueName: "file"))
    var cert: String

    @Option(help: ArgumentHelp("The private key (PEM, unencrypted).", valueName: "file"))
    var key: String

    @Option(help: ArgumentHelp("The bundle to write.", valueName: "file.p12"))
    var out: String

    @Option(help: "The bundle's password (default: empty).")
    var password: String?

    @Option(help: "The friendly name of the key and certificate (default: the certificate file's name).")
    var name: String?

    @Flag(help: "Overwrite an existing bundle.")
    var force = false

    func run() throws {
        try PKIArguments.reportingErrors("pki pkcs12") {
            try PKIArguments.checkWritable(out, force: force)
            let chain = try TLSConfiguration.Source.file(cert).load()
            let privateKey = try TLSConfiguration.Source.file(key).load()
            let friendlyName = name ?? ((cert as NSString).lastPathComponent as NSString).deletingPathExtension
            if password == nil {
                printError("warning: the bundle's password is empty (set one with --password)")
            }
            let bundle = try PKCS12Export.export(chainPEM: chain, privateKeyPEM: privateKey, password: password ?? "",
                                                 friendlyName: friendlyName, chainName: cert, keyName: key)
            try PKIArguments.writeFile(bundle, to: out, secret: true, force: force)
            print("wrote \(out)")
        }
    }
}

/// Argument parsing and file handling shared by the `pki` subcommands.
enum PKIArguments {
    /// A failure already worded for the user.
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func keyType(_ text: String) throws -> KeyType {
        guard let keyType = KeyType(rawValue: text.lowercased()) else {
            throw ValidationError("unknown key type '\(text)': choose \(KeyType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return keyType
    }

    /// Repeated and comma-separated values, flattened; empty items are an error.
    static func names(_ values: [String], option: String) throws -> [String] {
        var names: [String] = []
        for value in values {
            for item in value.split(separator: ",", omittingEmptySubsequences: false) {
                let name = item.trimmingCharacters(in: .whitespaces)
                guard !name.isEmpty else { throw ValidationError("\(option) contains an empty name ('\(value)')") }
                names.append(name)
            }
        }
        return names
    }

    /// Runs `body`; any failure becomes one line on standard error and exit code 1.
    static func reportingErrors(_ command: String, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as ValidationError {
            throw error
        } catch let error as ExitCode {
            throw error
        } catch {
            printError("mtls \(command): error: \(describe(error))")
            throw ExitCode(1)
        }
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case PKIError.fileExists(let path):
            return "'\(path)' already exists; nothing was written (use --force to overwrite)"
        case let error as TLSError:
            return error.description
        case let error as CustomStringConvertible:
            return error.description
        default:
            return error.localizedDescription
        }
    }

    /// PREFIX.ext for each extension, after checking that none exists (unless `force`).
    static func outputPaths(prefix: String, extensions: [String], force: Bool) throws -> (String, String) {
        precondition(extensions.count == 2)
        guard !prefix.isEmpty, !prefix.hasSuffix("/") else {
            throw ValidationError("--out takes a file name prefix such as certs/service (got '\(prefix)')")
        }
        let paths = extensions.map { "\(prefix).\($0)" }
        for path in paths { try checkWritable(path, force: force) }
        return (paths[0], paths[1])
    }

    static func checkWritable(_ path: String, force: Bool) throws {
        var info = stat()
        if !force && lstat(path, &info) == 0 { throw PKIError.fileExists(path: path) }
    }

    static func readText(_ path: String) throws -> String {
        String(decoding: try TLSConfiguration.Source.file(path).load(), as: UTF8.self)
    }

    /// Each "-----BEGIN CERTIFICATE-----" block of `text`, with a trailing newline.
    static func pemCertificates(_ text: String) -> [String] {
        let begin = "-----BEGIN CERTIFICATE-----"
        let end = "-----END CERTIFICATE-----"
        var blocks: [String] = []
        var rest = Substring(text)
        while let start = rest.range(of: begin), let stop = rest.range(of: end, range: start.upperBound..<rest.endIndex) {
            blocks.append(String(rest[start.lowerBound..<stop.upperBound]) + "\n")
            rest = rest[stop.upperBound...]
        }
        return blocks
    }

    static func writeFile(_ text: String, to path: String, secret: Bool, force: Bool) throws {
        try writeFile(Array(text.utf8), to: path, secret: secret, force: force)
    }

    /// Creates the parent directory if needed, then writes `bytes` atomically (a temporary file in
    /// the same folder with its final mode, 0600 for secrets, else 0644; fsync; rename, or link when
    /// not forced, so an existing file is never replaced). Never follows a symlink.
    static func writeFile(_ bytes: [UInt8], to path: String, secret: Bool, force: Bool) throws {
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            } catch {
                throw Failure("cannot create the directory '\(parent)': \(error.localizedDescription)")
            }
        }
        try AtomicFile.write(bytes, to: path, mode: secret ? 0o600 : 0o644, replace: force)
    }

    /// `text` as one shell word.
    static func shellQuoted(_ text: String) -> String {
        let safe = text.unicodeScalars.allSatisfy {
            CharacterSet.alphanumerics.contains($0) || "/._-+:@%,=".unicodeScalars.contains($0)
        }
        return safe && !text.isEmpty ? text : "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

/// What `pki issue` and `pki self-signed` both take: the names, the output prefix and the key options.
struct LeafFileOptions: ParsableArguments {
    @Option(name: .customLong("name"), parsing: .upToNextOption,
            help: ArgumentHelp("The certificate's names (the first is also the CN): DNS names, IP addresses, URIs.",
                               valueName: "name"))
    var names: [String]

    @Option(help: ArgumentHelp("Write PREFIX.pem and PREFIX.key.", valueName: "prefix"))
    var out: String

    @OptionGroup var keyOptions: PKIKeyOptions

    @Option(help: ArgumentHelp("How long the certificate is valid, from now: 90s, 15m, 1h, 30d or 2y (instead of --days). "
                               + "Short-lived certificates are the best practice: renew them, and revocation is rarely needed.",
                               valueName: "duration"),
            transform: LeafValidity.parse)
    var valid: TimeInterval?

    func validate() throws {
        guard !(try PKIArguments.names(names, option: "--name")).isEmpty else {
            throw ValidationError("--name needs at least one name")
        }
    }

    /// Seconds from now to the certificate's notAfter: --valid, else --days.
    var validity: TimeInterval { valid ?? TimeInterval(keyOptions.days) * 86400 }

    func resolvedNames() throws -> [String] { try PKIArguments.names(names, option: "--name") }

    func outputPaths() throws -> (certificate: String, key: String) {
        try PKIArguments.outputPaths(prefix: out, extensions: ["pem", "key"], force: keyOptions.force)
    }
}

/// `--valid`: a number and one unit, s, m, h, d or y (365 days); from one second to 100 years.
enum LeafValidity {
    static func parse(_ text: String) throws -> TimeInterval {
        try duration(text, option: "--valid")
    }

    /// A duration option's value: a number and one unit (s, m, h, d or y), from 1 s to 100 years.
    static func duration(_ text: String, option: String) throws -> TimeInterval {
        let units: [Character: TimeInterval] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400]
        guard let unit = text.last, let seconds = units[unit], let count = Double(text.dropLast()), count > 0 else {
            throw ValidationError("\(option) takes a number and a unit (s, m, h, d or y), e.g. 1h or 30d (got '\(text)')")
        }
        let validity = count * seconds
        guard validity >= 1, validity <= 100 * 365 * 86400 else {
            throw ValidationError("\(option) must be between 1s and 100y (got '\(text)')")
        }
        return validity
    }
}
