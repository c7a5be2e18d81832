import Foundation

/// Everything a backend needs to build a `TLSContext`. A plain value: build it, copy it, compare it.
/// The defaults are the safe policy: TLS 1.2...1.3, ECDHE with AEAD ciphers only, no renegotiation.
public struct TLSConfiguration: Sendable {
    public enum Role: String, Sendable { case client, server }

    public enum ClientAuthentication: String, Sendable, CaseIterable {
        case none, optional, require
    }

    /// Where PEM (or PKCS#12) data comes from. `label` names in-memory data in error messages.
    public enum Source: Sendable, Hashable {
        case file(String)
        case bytes([UInt8], label: String)

        /// The name used in error messages: the path, or the label of in-memory data.
        public var name: String {
            switch self {
            case .file(let path): return path
            case .bytes(_, let label): return label
            }
        }

        public static func pem(_ text: String, label: String) -> Source {
            .bytes(Array(text.utf8), label: label)
        }
    }

    /// Our own certificate chain and private key.
    public enum Identity: Sendable, Hashable {
        /// A PEM chain (leaf first, then intermediates) and a PEM private key.
        case pem(certificateChain: Source, privateKey: Source)
        /// A PKCS#12 bundle with its password.
        case pkcs12(Source, password: String)
    }

    public var role: Role
    public var identity: Identity?
    /// Every CA whose certificates we accept. Several at once make root rotation possible.
    public var trustRoots: [Source]
    /// Certificate revocation lists, each PEM (one or more X509 CRL blocks, e.g. one per issuer,
    /// concatenated) or DER. A peer whose certificate, or an intermediate of whose chain, is listed
    /// by its issuer is refused as `.revoked`; the full rule is `RevocationList`'s. Resumed
    /// handshakes are re-checked against them too.
    public var crls: [Source]
    /// Servers only: whether a client certificate is requested and required.
    public var clientAuthentication: ClientAuthentication
    /// Clients: the name sent as SNI and verified against the server's SANs (DNS name or IP address).
    /// A client needs it, or `pinnedServerPublicKey`.
    public var serverName: String?
    /// Clients: the SHA-256 of the server leaf's SubjectPublicKeyInfo. Checked in addition to the
    /// name when both are set; alone, it replaces the name check (a self-signed server whose names
    /// are not known in advance), never silently.
    public var pinnedServerPublicKey: [UInt8]?
    public var minimumVersion: TLSVersion
    public var maximumVersion: TLSVersion
    /// ALPN protocols, most preferred first. Empty means no ALPN.
    public var applicationProtocols: [String]
    /// Session resumption through tickets: TLS 1.3 PSK tickets and TLS 1.2 session tickets (RFC 5077).
    /// Both roles, default on.
    ///
    /// - Server: issues tickets that only the context that issued them accepts: sealed with keys
    ///   generated for (and held only by) this context, or, where that is cheaper (the OpenSSL backend
    ///   in TLS 1.3), a ticket naming an entry of a bounded store held by this context. No session-ID
    ///   cache serves clients that offer no ticket. Off: no tickets are issued and nothing is resumed.
    /// - Client: the context keeps the newest resumable session per server name (bounded, shared by
    ///   every session it makes, on any thread) and offers it on the next session to the same name.
    ///   A refused ticket just means a full handshake. Off: nothing is cached or offered.
    ///
    /// A resumed handshake reports `NegotiatedParameters.resumed` and the same `peerIdentity` on both
    /// sides as the full handshake that issued the ticket.
    public var sessionTicketsEnabled: Bool
    /// Off (nil) by default. When set, every session of a context built from this configuration
    /// appends its secrets to this NSS key log, so a capture of its traffic can be decrypted
    /// (Wireshark, tshark). A debugging aid that defeats the encryption for whoever reads the file.
    public var keyLog: TLSKeyLog?

    public init(
        role: Role,
        identity: Identity? = nil,
        trustRoots: [Source] = [],
        clientAuthentication: ClientAuthentication = .none,
        serverName: String? = nil,
        minimumVersion: TLSVersion = .tls12,
        maximumVersion: TLSVersion = .tls13,
        applicationProtocols: [String] = [],
        sessionTicketsEnabled: Bool = true,
        crls: [Source] = []
    ) {
        self.role = role
        self.identity = identity
        self.trustRoots = trustRoots
        self.clientAuthentication = clientAuthentication
        self.serverName = serverName
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
        self.applicationProtocols = applicationProtocols
        self.sessionTicketsEnabled = sessionTicketsEnabled
        self.crls = crls
    }

    /// A server that requires a client certificate signed by one of `trustRoots`.
    public static func mtlsServer(identity: Identity, trustRoots: [Source]) -> TLSConfiguration {
        TLSConfiguration(role: .server, identity: identity, trustRoots: trustRoots, clientAuthentication: .require)
    }

    /// A client that presents `identity` and verifies the server against `trustRoots` and `serverName`.
    public static func mtlsClient(identity: Identity, trustRoots: [Source], serverName: String) -> TLSConfiguration {
        TLSConfiguration(role: .client, identity: identity, trustRoots: trustRoots, serverName: serverName)
    }

    /// A server that authenticates itself only.
    public static func tlsServer(identity: Identity) -> TLSConfiguration {
        TLSConfiguration(role: .server, identity: identity, clientAuthentication: .none)
    }

    /// A client that verifies the server but presents no certificate.
    public static func tlsClient(trustRoots: [Source], serverName: String) -> TLSConfiguration {
        TLSConfiguration(role: .client, trustRoots: trustRoots, serverName: serverName)
    }

    /// Checks what can be checked without a TLS library, so both backends refuse the same settings
    /// with the same error.
    public func validate() throws(TLSError) {
        if minimumVersion > maximumVersion {
            throw TLSError(.configuration(file: nil, problem: .invalidVersionRange))
        }
        if role == .server && identity == nil {
            throw TLSError(.configuration(file: nil, problem: .missingIdentity))
        }
        if role == .client && serverName == nil && pinnedServerPublicKey == nil {
            throw TLSError(.configuration(file: nil, problem: .missingServerName))
        }
        if let pin = pinnedServerPublicKey, pin.count != 32 {
            throw TLSError(.configuration(file: nil, problem: .invalidSetting("pinned server key (a SHA-256 hash is 32 bytes)")))
        }
        let verifiesPeer = role == .client || clientAuthentication != .none
        if verifiesPeer && trustRoots.isEmpty {
            throw TLSError(.configuration(file: nil, problem: .noTrustRoots))
        }
        for proto in applicationProtocols where proto.utf8.isEmpty || proto.utf8.count > 255 {
            throw TLSError(.configuration(file: nil, problem: .invalidSetting("ALPN protocol '\(proto)'")))
        }
    }

    /// The server name, when it is an IP address literal (verified against IP SANs, never sent as SNI).
    public var serverNameIsIPAddress: Bool {
        guard let name = serverName else { return false }
        return IPAddressText.parse(name) != nil
    }
}

public enum TLSVersion: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case tls12 = 0x0303
    case tls13 = 0x0304

    public static func < (lhs: TLSVersion, rhs: TLSVersion) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .tls12: return "TLS 1.2"
        case .tls13: return "TLS 1.3"
        }
    }
}

/// Loaded PEM text with the name it came from, after the checks both backends share.
public struct LoadedPEM: Sendable {
    public let bytes: [UInt8]
    public let name: String
}

extension TLSConfiguration.Source {
    /// Reads the raw bytes, turning file-system failures into configuration errors naming the file.
    public func load() throws(TLSError) -> [UInt8] {
        switch self {
        case .bytes(let bytes, _):
            return bytes
        case .file(let path):
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw TLSError(.configuration(file: path, problem: .fileNotFound))
            }
            // Read through a file handle: FileManager.contents(atPath:) leaks its buffer for a directory
            // or an empty file (seen under AddressSanitizer).
            guard !isDirectory.boolValue, let handle = FileHandle(forReadingAtPath: path) else {
                throw TLSError(.configuration(file: path, problem: .fileUnreadable))
            }
            defer { try? handle.close() }
            do {
                return [UInt8](try handle.readToEnd() ?? Data())
            } catch {
                throw TLSError(.configuration(file: path, problem: .fileUnreadable), detail: "\(error)")
            }
        }
    }

    /// Reads PEM that must hold at least one certificate.
    public func loadCertificatesPEM() throws(TLSError) -> LoadedPEM {
        let bytes = try load()
        guard PEMScan.contains(bytes, marker: "-----BEGIN CERTIFICATE-----") else {
            throw TLSError(.configuration(file: name, problem: .noCertificateInPEM))
        }
        return LoadedPEM(bytes: bytes, name: name)
    }

    /// Reads PEM that must hold a private key (PKCS#8, or a traditional RSA/EC key).
    public func loadPrivateKeyPEM() throws(TLSError) -> LoadedPEM {
        let bytes = try load()
        guard PEMScan.contains(bytes, marker: "PRIVATE KEY-----") else {
            throw TLSError(.configuration(file: name, problem: .noPrivateKeyInPEM))
        }
        if PEMScan.contains(bytes, marker: "ENCRYPTED PRIVATE KEY") {
            throw TLSError(.configuration(file: name, problem: .invalidPrivateKey),
                           detail: "encrypted private keys are not supported")
        }
        return LoadedPEM(bytes: bytes, name: name)
    }
}

extension TLSError {
    init(_ reason: Reason, detail: String) {
        self.init(reason, detail: detail, peer: nil)
    }
}

enum PEMScan {
    static func contains(_ bytes: [UInt8], marker: String) -> Bool {
        let needle = Array(marker.utf8)
        guard needle.count <= bytes.count else { return false }
        var index = 0
        while index + needle.count <= bytes.count {
            if bytes[index] == needle[0] && bytes[index..<index + needle.count].elementsEqual(needle) {
                return true
            }
            index += 1
        }
        return false
    }
}
