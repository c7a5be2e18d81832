import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The files of a PKI directory written by `PKIWriter` (and read by `mtls pki`).
public struct PKIDirectoryLayout: Sendable, Hashable {
    public static let caCertificateFile = "ca.pem"
    public static let caKeyFile = "ca.key"
    /// The server's leaf followed by the intermediate, if any.
    public static let serverCertificateFile = "server.pem"
    public static let serverKeyFile = "server.key"
    /// The client's leaf followed by the intermediate, if any.
    public static let clientCertificateFile = "client.pem"
    public static let clientKeyFile = "client.key"
    public static let intermediateCertificateFile = "intermediate.pem"
    public static let intermediateKeyFile = "intermediate.key"
    /// The CRLs of the CAs of the directory, one per CA (empty at first; see `PKIDirectory.revoke`).
    public static let crlFile = "crl.pem"

    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    public var caCertificate: String { path(Self.caCertificateFile) }
    public var caKey: String { path(Self.caKeyFile) }
    public var serverCertificate: String { path(Self.serverCertificateFile) }
    public var serverKey: String { path(Self.serverKeyFile) }
    public var clientCertificate: String { path(Self.clientCertificateFile) }
    public var clientKey: String { path(Self.clientKeyFile) }
    public var intermediateCertificate: String { path(Self.intermediateCertificateFile) }
    public var intermediateKey: String { path(Self.intermediateKeyFile) }
    public var crl: String { path(Self.crlFile) }

    /// Every file of the layout, in the order `PKIWriter` writes them.
    public func files(intermediate: Bool) -> [String] {
        var files = [caCertificate, caKey]
        if intermediate { files += [intermediateCertificate, intermediateKey] }
        files += [serverCertificate, serverKey, clientCertificate, clientKey, crl]
        return files
    }

    public func path(_ file: String) -> String {
        (directory as NSString).appendingPathComponent(file)
    }
}

/// Writes a complete mTLS PKI to a directory (for `mtls pki init`).
public enum PKIWriter {
    /// Creates `directory` if needed and writes a root CA, optionally an intermediate, a server
    /// leaf for `serverNames` and a client leaf for `clientName`, all with keys of `keyType`.
    /// Leaves are valid for `days` days, the CRLs (crl.pem, empty) for a week; the root for at least 10 years and the intermediate for at
    /// least 5 (longer when `days` asks for it). Private keys get mode 0600, certificates 0644.
    /// Without `force`, nothing is written if any of the files exists already.
    ///
    /// - Returns: the paths written, in the order of `PKIDirectoryLayout.files(intermediate:)`.
    @discardableResult
    public static func initialize(
        at directory: String,
        keyType: KeyType,
        intermediate: Bool,
        serverNames: [String],
        clientName: String,
        days: Int,
        force: Bool
    ) throws -> [String] {
        guard days > 0 else { throw PKIError.invalidArgument("days must be at least 1 (got \(days))") }
        guard days <= 100 * 366 else { throw PKIError.invalidArgument("days must be at most \(100 * 366) (got \(days))") }
        guard !serverNames.isEmpty, !serverNames.contains(where: \.isEmpty) else {
            throw PKIError.invalidArgument("at least one server name is needed, and none may be empty")
        }
        guard !clientName.isEmpty else { throw PKIError.invalidArgument("the client name must not be empty") }

        let layout = PKIDirectoryLayout(directory: directory)
        let files = layout.files(intermediate: intermediate)
        if !force {
            for file in files where FileManager.default.fileExists(atPath: file) || isSymbolicLink(file) {
                throw PKIError.fileExists(path: file)
            }
        }

        // Generate everything before touching the disk, so a failure leaves no partial PKI.
        let leafValidity = TimeInterval(days) * 86400
        let root = try CertificateAuthority.makeRoot(
            commonName: "swift-mtls Root CA", keyType: keyType,
            validFor: max(PKIDefaults.rootValidity, leafValidity + 2 * 86400))
        let issuer = intermediate
            ? try root.makeIntermediate(commonName: "swift-mtls Intermediate CA", keyType: keyType,
                                        validFor: max(PKIDefaults.intermediateValidity, leafValidity + 86400))
            : root
        let server = try issuer.issue(.server(names: serverNames, keyType: keyType, validFor: leafValidity))
        let client = try issuer.issue(.client(name: clientName, keyType: keyType, validFor: leafValidity))

        var contents: [(path: String, text: String, secret: Bool)] = [
            (layout.caCertificate, root.certificatePEM, false),
            (layout.caKey, root.privateKeyPEM, true),
        ]
        if intermediate {
            contents += [
                (layout.intermediateCertificate, issuer.certificatePEM, false),
                (layout.intermediateKey, issuer.privateKeyPEM, true),
            ]
        }
        contents += [
            (layout.serverCertificate, server.chainPEM, false),
            (layout.serverKey, server.privateKeyPEM, true),
            (layout.clientCertificate, client.chainPEM, false),
            (layout.clientKey, client.privateKeyPEM, true),
        ]
        assert(contents.map(\.path) + [layout.crl] == files)

        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw PKIError.fileSystem(path: directory, reason: "cannot create the directory: \(error.localizedDescription)")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw PKIError.fileSystem(path: directory, reason: "not a directory")
        }
        for file in contents {
            try writeFile(file.text, to: file.path, mode: file.secret ? 0o600 : 0o644, overwrite: force)
        }
        // Empty CRLs, so that servers can run with --crl DIR/crl.pem from the start.
        try PKIDirectory(directory).writeInitialCRLs(for: intermediate ? [root, issuer] : [root], replace: force)
        return files
    }

    private static func isSymbolicLink(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK
    }

    /// Writes `text` atomically (`AtomicFile`): with `mode` from the first byte, never following a symlink.
    static func writeFile(_ text: String, to path: String, mode: mode_t, overwrite: Bool) throws(PKIError) {
        try AtomicFile.write(text, to: path, mode: mode, replace: overwrite)
    }
}
