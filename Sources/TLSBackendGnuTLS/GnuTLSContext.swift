import CGnuTLS
import TLSContract

/// Parsed credentials, trust store and priority cache, built once and shared by every session.
/// `@unchecked Sendable`: nothing mutates after init, and GnuTLS documents credentials and priority
/// caches as safe to share between sessions on different threads once they are set up.
public final class GnuTLSContext: TLSContext, @unchecked Sendable {
    public let configuration: TLSConfiguration
    public var backendName: String { "gnutls" }

    /// Owned by this context and freed in deinit. Each session retains the context, so the
    /// credentials outlive every session that references them.
    let credentials: gnutls_certificate_credentials_t
    /// Owned by this context and freed in deinit; outlives its sessions for the same reason.
    let priority: gnutls_priority_t
    /// The priority string the cache was built from, for diagnostics and tests.
    let priorityString: String
    /// A client's certificate and key, handed out by `clientCertificateCallback`; owned by this context.
    let clientIdentity: ClientIdentity?
    /// Servers with `sessionTicketsEnabled` only: the master key every session's tickets derive
    /// from, generated here (so only this context accepts its tickets), wiped and freed in deinit.
    /// Each session copies it (gnutls_session_ticket_enable_server), so sessions never point into it.
    ///
    /// Rotation: GnuTLS 3.7 treats it as a master key and derives the key that actually encrypts
    /// tickets from it and the clock (TOTP over SHA3-512), changing every 3 × the ticket lifetime
    /// (6 h by default, so every 18 h) and still accepting the previous period's key. A new context
    /// gets a new master key, unless it replaces one whose trust roots it shares (a renewal of our
    /// own certificate, a new CRL: `TLSBackend.makeContext(_:succeeding:)`), whose key it takes over.
    let ticketKey: GnuTLSTicketKey?
    /// Clients with `sessionTicketsEnabled` only: the newest resumption data (gnutls_session_get_data2
    /// bytes) per server name, filled and offered by `GnuTLSSession`.
    let resumption: ResumptionCache<[UInt8]>?
    /// The configuration's CRLs as the contract parsed them; also loaded into the credentials.
    public let revocation: RevocationList
    /// Our chain as loaded into the credentials (leaf first).
    public let certificateChainDER: [[UInt8]]
    /// Chains this context verified in full (see `verifyPeer`); nil when it verifies no peer or the
    /// cache is off.
    public let verifiedChains: VerifiedChainCache?

    public convenience init(configuration: TLSConfiguration) throws(TLSError) {
        try self.init(configuration: configuration, priorityOverride: nil)
    }

    /// `priorityOverride` lets tests build a deliberately weak peer (TLS 1.1 only, CBC only)
    /// to check that the real policy refuses it.
    init(configuration: TLSConfiguration, priorityOverride: String?,
         inheritedTicketKey: GnuTLSTicketKey? = nil) throws(TLSError) {
        try configuration.validate()
        try Self.checkApplicationProtocols(configuration.applicationProtocols)
        let revocation = try RevocationList.load(configuration)
        GnuTLSLibrary.ensureInitialized()

        var allocated: gnutls_certificate_credentials_t?
        let rc = gnutls_certificate_allocate_credentials(&allocated)
        guard rc == GNUTLS_E_SUCCESS, let credentials = allocated else {
            throw TLSError(.internalError, detail: GnuTLSLibrary.describe(rc))
        }
        var keepCredentials = false
        defer { if !keepCredentials { gnutls_certificate_free_credentials(credentials) } }

        let isClient = configuration.role == .client
        var clientIdentity: ClientIdentity?
        switch configuration.identity {
        case .pem(let chain, let key)?:
            clientIdentity = try Self.loadPEMIdentity(chain: chain, key: key, into: credentials, forClient: isClient)
        case .pkcs12(let source, let password)?:
            clientIdentity = try Self.loadPKCS12Identity(source, password: password, into: credentials, forClient: isClient)
        case nil:
            break
        }
        if clientIdentity != nil {
            // GnuTLS's own choice sends no certificate when the server's CA list does not name our issuer;
            // OpenSSL always sends it, and the server should be the one to say why it is refused.
            gnutls_certificate_set_retrieve_function2(credentials, clientCertificateCallback)
        }
        var trustRootsDER: [[UInt8]] = []
        for root in configuration.trustRoots {
            trustRootsDER += try Self.loadTrustRoot(root, into: credentials)
        }
        try Self.loadRevocationLists(revocation, into: credentials)

        let text = priorityOverride ?? GnuTLSPolicy.priorityString(for: configuration)
        var cache: gnutls_priority_t?
        var errorPosition: UnsafePointer<CChar>?
        let prc = gnutls_priority_init2(&cache, text, &errorPosition, 0)
        guard prc == GNUTLS_E_SUCCESS, let priority = cache else {
            let at = errorPosition.map { String(cString: $0) } ?? ""
            throw TLSError(.internalError, detail: GnuTLSLibrary.describe(prc) + " in priority string at '\(at)'")
        }

        var ticketKey: GnuTLSTicketKey?
        if configuration.role == .server && configuration.sessionTicketsEnabled {
            do throws(TLSError) {
                if let inheritedTicketKey { ticketKey = inheritedTicketKey } else { ticketKey = try GnuTLSTicketKey() }
            } catch {
                gnutls_priority_deinit(priority)
                throw error
            }
        }

        keepCredentials = true
        self.configuration = configuration
        self.credentials = credentials
        self.priority = priority
        self.priorityString = text
        self.clientIdentity = clientIdentity
        self.ticketKey = ticketKey
        self.resumption = configuration.role == .client && configuration.sessionTicketsEnabled ? ResumptionCache() : nil
        self.revocation = revocation
        self.certificateChainDER = configuration.identity == nil ? [] : Self.loadedChain(credentials)
        self.verifiedChains = VerifiedChainCache.make(for: configuration, trustRootsDER: trustRootsDER,
                                                      revocation: revocation, library: "gnutls")
    }

    deinit {
        gnutls_priority_deinit(priority)
        gnutls_certificate_free_credentials(credentials)
    }

    /// GnuTLS keeps ALPN names in fixed arrays (MAX_ALPN_PROTOCOLS, MAX_ALPN_PROTOCOL_NAME in
    /// lib/ext/alpn.h), so gnutls_alpn_set_protocols refuses more than 8 names or a name over 31
    /// bytes. Refused here, once and by name, rather than by every makeSession as "invalid request".
    static let maximumApplicationProtocols = 8
    static let maximumApplicationProtocolLength = 31

    private static func checkApplicationProtocols(_ protocols: [String]) throws(TLSError) {
        if protocols.count > maximumApplicationProtocols {
            throw TLSError(.configuration(file: nil, problem: .invalidSetting(
                "\(protocols.count) ALPN protocols (GnuTLS offers at most \(maximumApplicationProtocols))")))
        }
        for name in protocols where name.utf8.count > maximumApplicationProtocolLength {
            throw TLSError(.configuration(file: nil, problem: .invalidSetting(
                "ALPN protocol '\(name)' (GnuTLS takes at most \(maximumApplicationProtocolLength) bytes)")))
        }
    }

    /// Turns on ticket issuing for one server session (GnuTLS copies the key).
    func enableTickets(on session: gnutls_session_t) -> Int32 {
        guard let ticketKey else { return GNUTLS_E_SUCCESS }
        return gnutls_session_ticket_enable_server(session, ticketKey.datum)
    }

    public func makeSession(serverName: String?) throws(TLSError) -> any TLSSession {
        try GnuTLSSession(context: self, serverName: serverName ?? configuration.serverName)
    }

    // MARK: - Loading credentials

    private static func loadPEMIdentity(
        chain: TLSConfiguration.Source, key: TLSConfiguration.Source,
        into credentials: gnutls_certificate_credentials_t, forClient: Bool
    ) throws(TLSError) -> ClientIdentity? {
        let chainPEM = try chain.loadCertificatesPEM()
        let keyPEM = try key.loadPrivateKeyPEM()

        // Parsed separately (rather than gnutls_certificate_set_x509_key_mem2) so that each parse
        // error names the file it came from.
        let certificates = try CertificateList(pem: chainPEM.bytes, name: chainPEM.name)
        let privateKey = try PrivateKey(pem: keyPEM.bytes, name: keyPEM.name)

        let rc = gnutls_certificate_set_x509_key(
            credentials, certificates.pointer, Int32(certificates.count), privateKey.key)
        if rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH {
            throw TLSError(.configuration(file: keyPEM.name, problem: .keyDoesNotMatchCertificate),
                           detail: GnuTLSLibrary.describe(rc))
        }
        if rc < 0 {
            throw TLSError(.configuration(file: keyPEM.name, problem: .invalidPrivateKey),
                           detail: GnuTLSLibrary.describe(rc))
        }
        guard forClient else { return nil }
        return try ClientIdentity(chain: certificates.pointer, count: certificates.count, key: privateKey.key)
    }

    private static func loadPKCS12Identity(
        _ source: TLSConfiguration.Source, password: String,
        into credentials: gnutls_certificate_credentials_t, forClient: Bool
    ) throws(TLSError) -> ClientIdentity? {
        let bytes = try source.load()
        let name = source.name
        func problem(_ problem: TLSError.ConfigurationProblem, _ rc: Int32) -> TLSError {
            TLSError(.configuration(file: name, problem: problem), detail: GnuTLSLibrary.describe(rc))
        }

        var allocated: gnutls_pkcs12_t?
        var rc = gnutls_pkcs12_init(&allocated)
        guard rc == GNUTLS_E_SUCCESS, let p12 = allocated else { throw TLSError(.internalError) }
        defer { gnutls_pkcs12_deinit(p12) }

        rc = withDatum(bytes) { gnutls_pkcs12_import(p12, $0, GNUTLS_X509_FMT_DER, 0) }
        if rc < 0 {
            let pemRC = withDatum(bytes) { gnutls_pkcs12_import(p12, $0, GNUTLS_X509_FMT_PEM, 0) }
            if pemRC < 0 { throw problem(.invalidPKCS12, rc) }
        }

        // A bundle without a MAC cannot be verified here; its decryption below still catches a wrong password.
        rc = gnutls_pkcs12_verify_mac(p12, password)
        if rc == GNUTLS_E_MAC_VERIFY_FAILED { throw problem(.wrongPKCS12Password, rc) }

        // All four outputs are allocated by GnuTLS and released by the defer below.
        var key: gnutls_x509_privkey_t?
        var chain: UnsafeMutablePointer<gnutls_x509_crt_t?>?
        var chainCount: UInt32 = 0
        var extras: UnsafeMutablePointer<gnutls_x509_crt_t?>?
        var extraCount: UInt32 = 0
        defer {
            if let key { gnutls_x509_privkey_deinit(key) }
            CertificateList.release(chain, count: chainCount)
            CertificateList.release(extras, count: extraCount)
        }
        rc = gnutls_pkcs12_simple_parse(p12, password, &key, &chain, &chainCount, &extras, &extraCount, nil, 0)
        switch rc {
        case GNUTLS_E_SUCCESS: break
        case GNUTLS_E_MAC_VERIFY_FAILED, GNUTLS_E_DECRYPTION_FAILED: throw problem(.wrongPKCS12Password, rc)
        default: throw problem(.invalidPKCS12, rc)
        }
        guard let key, let chain, chainCount > 0 else { throw problem(.invalidPKCS12, GNUTLS_E_SUCCESS) }

        // Extra certificates in the bundle are deliberately neither trusted nor sent: trust comes only
        // from `trustRoots`, and the chain GnuTLS built from the bundle already holds the issuers.
        rc = gnutls_certificate_set_x509_key(credentials, chain, Int32(chainCount), key)
        if rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH { throw problem(.keyDoesNotMatchCertificate, rc) }
        if rc < 0 { throw problem(.invalidPKCS12, rc) }
        guard forClient else { return nil }
        return try ClientIdentity(chain: chain, count: chainCount, key: key)
    }

    /// Each CRL into the credentials' trust list, which then refuses a listed certificate as
    /// GNUTLS_CERT_REVOKED. GnuTLS matches only the issuer name and the serial when it verifies: it
    /// checks neither the CRL's signature nor its nextUpdate then (GNUTLS_CERTIFICATE_VERIFY_CRLS
    /// would verify them once, here, and only against trust roots, dropping CRLs that
    /// intermediates sign). The contract's check (RevocationList, from `verifyPeer`) does both, on
    /// every handshake, so GnuTLS refuses what OpenSSL refuses.
    private static func loadRevocationLists(
        _ revocation: RevocationList, into credentials: gnutls_certificate_credentials_t
    ) throws(TLSError) {
        for crl in revocation.crls {
            let rc = withDatum(crl.der) { gnutls_certificate_set_x509_crl_mem(credentials, $0, GNUTLS_X509_FMT_DER) }
            if rc < 0 {
                throw TLSError(.configuration(file: crl.source, problem: .invalidCRL), detail: GnuTLSLibrary.describe(rc))
            }
        }
    }

    /// The certificates of our one key in the credentials, leaf first (GnuTLS owns the data: copied).
    private static func loadedChain(_ credentials: gnutls_certificate_credentials_t) -> [[UInt8]] {
        var chain: [[UInt8]] = []
        var datum = gnutls_datum_t()
        while gnutls_certificate_get_crt_raw(credentials, 0, UInt32(chain.count), &datum) == GNUTLS_E_SUCCESS,
              let data = datum.data, datum.size > 0 {
            chain.append(Array(UnsafeBufferPointer(start: data, count: Int(datum.size))))
        }
        return chain
    }

    /// Returns the certificates of the PEM text loaded, DER.
    private static func loadTrustRoot(
        _ source: TLSConfiguration.Source, into credentials: gnutls_certificate_credentials_t
    ) throws(TLSError) -> [[UInt8]] {
        let pem = try source.loadCertificatesPEM()
        let rc = withDatum(pem.bytes) { gnutls_certificate_set_x509_trust_mem(credentials, $0, GNUTLS_X509_FMT_PEM) }
        if rc <= 0 {
            throw TLSError(.configuration(file: pem.name, problem: .invalidCertificate),
                           detail: rc < 0 ? GnuTLSLibrary.describe(rc) : "no certificate could be parsed")
        }
        return (PEMBlocks.decode(pem.bytes) ?? []).filter { $0.label == "CERTIFICATE" }.map(\.der)
    }
}

/// A client's chain and key in the form the certificate callback hands to GnuTLS.
final class ClientIdentity {
    /// Allocated and imported here, deinitialized and freed in deinit. GnuTLS borrows them during
    /// handshakes (retrieve_function2 never frees), and the context that owns this outlives its sessions.
    let certificates: UnsafeMutableBufferPointer<gnutls_pcert_st>
    /// Allocated here, freed in deinit; borrowed by GnuTLS like `certificates`.
    let key: gnutls_privkey_t

    init(chain: UnsafeMutablePointer<gnutls_x509_crt_t?>, count: UInt32, key x509Key: gnutls_x509_privkey_t) throws(TLSError) {
        let certificates = UnsafeMutableBufferPointer<gnutls_pcert_st>.allocate(capacity: Int(count))
        var imported = 0
        var allocatedKey: gnutls_privkey_t?
        var rc = gnutls_privkey_init(&allocatedKey)
        if rc == GNUTLS_E_SUCCESS, let allocatedKey {
            let copy: gnutls_privkey_flags_t = GNUTLS_PRIVKEY_IMPORT_COPY
            rc = gnutls_privkey_import_x509(allocatedKey, x509Key, copy.rawValue)
            while rc == GNUTLS_E_SUCCESS && imported < Int(count) {
                rc = gnutls_pcert_import_x509(certificates.baseAddress! + imported, chain[imported], 0)
                if rc == GNUTLS_E_SUCCESS { imported += 1 }
            }
        }
        guard rc == GNUTLS_E_SUCCESS, let allocatedKey else {
            for index in 0..<imported { gnutls_pcert_deinit(certificates.baseAddress! + index) }
            certificates.deallocate()
            if let allocatedKey { gnutls_privkey_deinit(allocatedKey) }
            throw TLSError(.internalError, detail: GnuTLSLibrary.describe(rc))
        }
        self.certificates = certificates
        self.key = allocatedKey
    }

    deinit {
        for index in certificates.indices { gnutls_pcert_deinit(certificates.baseAddress! + index) }
        certificates.deallocate()
        gnutls_privkey_deinit(key)
    }
}

/// Always offers our one certificate, whatever CA names the server listed. The session pointer is
/// the unretained GnuTLSSession (see its init), which retains the context that owns the identity.
private func clientCertificateCallback(
    _ session: gnutls_session_t?, _ requestedCAs: UnsafePointer<gnutls_datum_t>?, _ requestedCount: Int32,
    _ algorithms: UnsafePointer<gnutls_pk_algorithm_t>?, _ algorithmCount: Int32,
    _ certificates: UnsafeMutablePointer<UnsafeMutablePointer<gnutls_pcert_st>?>?,
    _ certificateCount: UnsafeMutablePointer<UInt32>?,
    _ key: UnsafeMutablePointer<gnutls_privkey_t?>?
) -> Int32 {
    guard let session, let pointer = gnutls_session_get_ptr(session) else { return GNUTLS_E_INTERNAL_ERROR }
    let owner = Unmanaged<GnuTLSSession>.fromOpaque(pointer).takeUnretainedValue()
    guard let identity = owner.contextIdentity else {
        certificateCount?.pointee = 0
        return 0
    }
    certificates?.pointee = identity.certificates.baseAddress
    certificateCount?.pointee = UInt32(identity.certificates.count)
    key?.pointee = identity.key
    return 0
}

/// Calls `body` with a datum that points into `bytes`; GnuTLS only reads through it.
func withDatum<R>(_ bytes: [UInt8], _ body: (UnsafePointer<gnutls_datum_t>) -> R) -> R {
    bytes.withUnsafeBufferPointer { buffer in
        // The datum borrows `bytes` for the duration of `body` only; const in C, so never written.
        var datum = gnutls_datum_t(data: UnsafeMutablePointer(mutating: buffer.baseAddress), size: UInt32(buffer.count))
        return body(&datum)
    }
}

/// A chain parsed from PEM, owned until this value's scope ends.
private struct CertificateList: ~Copyable {
    /// Allocated by gnutls_x509_crt_list_import2; each element and the array freed in deinit.
    let pointer: UnsafeMutablePointer<gnutls_x509_crt_t?>
    let count: UInt32

    init(pem: [UInt8], name: String) throws(TLSError) {
        var list: UnsafeMutablePointer<gnutls_x509_crt_t?>?
        var count: UInt32 = 0
        let rc = withDatum(pem) { gnutls_x509_crt_list_import2(&list, &count, $0, GNUTLS_X509_FMT_PEM, 0) }
        guard rc >= 0, let list, count > 0 else {
            CertificateList.release(list, count: count)
            throw TLSError(.configuration(file: name, problem: .invalidCertificate), detail: GnuTLSLibrary.describe(rc))
        }
        self.pointer = list
        self.count = count
    }

    deinit { CertificateList.release(pointer, count: count) }

    static func release(_ list: UnsafeMutablePointer<gnutls_x509_crt_t?>?, count: UInt32) {
        guard let list else { return }
        for index in 0..<Int(count) {
            if let certificate = list[index] { gnutls_x509_crt_deinit(certificate) }
        }
        mtls_gnutls_free(list)
    }
}

/// A private key parsed from PEM (PKCS#8 or traditional RSA/EC), owned until this value's scope ends.
private struct PrivateKey: ~Copyable {
    /// Allocated by gnutls_x509_privkey_init, freed in deinit.
    let key: gnutls_x509_privkey_t

    init(pem: [UInt8], name: String) throws(TLSError) {
        var allocated: gnutls_x509_privkey_t?
        let irc = gnutls_x509_privkey_init(&allocated)
        guard irc == GNUTLS_E_SUCCESS, let key = allocated else { throw TLSError(.internalError) }
        let rc = withDatum(pem) { gnutls_x509_privkey_import2(key, $0, GNUTLS_X509_FMT_PEM, nil, 0) }
        guard rc == GNUTLS_E_SUCCESS else {
            gnutls_x509_privkey_deinit(key)
            throw TLSError(.configuration(file: name, problem: .invalidPrivateKey), detail: GnuTLSLibrary.describe(rc))
        }
        self.key = key
    }

    deinit { gnutls_x509_privkey_deinit(key) }
}

/// The shared policy (see TLSConfiguration) as a GnuTLS priority string.
enum GnuTLSPolicy {
    static func priorityString(for configuration: TLSConfiguration) -> String {
        var parts = ["NONE"]
        // Newest first: GnuTLS offers and prefers versions in the listed order.
        for version in TLSVersion.allCases.reversed()
        where version >= configuration.minimumVersion && version <= configuration.maximumVersion {
            parts.append(version == .tls13 ? "+VERS-TLS1.3" : "+VERS-TLS1.2")
        }
        parts += [
            // TLS 1.2: forward secrecy only (no static RSA), AEAD only (no CBC), so no LUCKY13 surface.
            "+ECDHE-ECDSA", "+ECDHE-RSA",
            "+AES-128-GCM", "+AES-256-GCM", "+CHACHA20-POLY1305", "+AEAD",
            "+GROUP-X25519", "+GROUP-SECP256R1", "+GROUP-SECP384R1",
            "+SIGN-ECDSA-SECP256R1-SHA256", "+SIGN-ECDSA-SECP384R1-SHA384", "+SIGN-ECDSA-SECP521R1-SHA512",
            "+SIGN-ECDSA-SHA256", "+SIGN-ECDSA-SHA384", "+SIGN-ECDSA-SHA512",
            "+SIGN-RSA-PSS-RSAE-SHA256", "+SIGN-RSA-PSS-RSAE-SHA384", "+SIGN-RSA-PSS-RSAE-SHA512",
            "+SIGN-RSA-PSS-SHA256", "+SIGN-RSA-PSS-SHA384", "+SIGN-RSA-PSS-SHA512",
            "+SIGN-RSA-SHA256", "+SIGN-RSA-SHA384", "+SIGN-RSA-SHA512",
            "+SIGN-EdDSA-Ed25519",
            "+CTYPE-X509", "+COMP-NULL",
            safeRenegotiation(for: configuration.role),
            // The contract's key-size floor (PeerVerification): the medium verification profile
            // refuses RSA keys under 2048 bits; GnuTLS refuses SHA-1 certificate signatures by default.
            "%PROFILE_MEDIUM",
            // A server picks by its own order (as the OpenSSL backend does), not the client's.
            "%SERVER_PRECEDENCE",
        ]
        return parts.joined(separator: ":")
    }

    /// RFC 5746 (renegotiation_info) matters only in TLS 1.2, and only for renegotiation, which our
    /// sessions refuse whatever this says (see GnuTLSSession.decryptAvailable).
    ///
    /// A client insists on it (%SAFE_RENEGOTIATION): only a server that supports it lets the client
    /// tell its first handshake from one an attacker spliced onto a renegotiation. OpenSSL 3 clients
    /// refuse such servers too.
    ///
    /// A server must not: GnuTLS 3.7 then also demands it from ClientHellos that offer only TLS 1.3,
    /// which need not carry it (Java and SwiftNIO limited to TLS 1.3 send neither the extension nor
    /// its SCSV) and were refused with SAFE_RENEGOTIATION_FAILED. %PARTIAL_RENEGOTIATION (GnuTLS's
    /// default, gnutls-serv's too) still answers renegotiation_info, still refuses renegotiation with
    /// a client that lacks it, and accepts a first TLS 1.2 handshake without it, as OpenSSL servers do.
    static func safeRenegotiation(for role: TLSConfiguration.Role) -> String {
        role == .client ? "%SAFE_RENEGOTIATION" : "%PARTIAL_RENEGOTIATION"
    }
}

/// A server's ticket master key (gnutls_session_ticket_key_generate), shared by the contexts of one
/// reloading server; wiped and freed when the last of them is gone. Sessions copy it.
final class GnuTLSTicketKey: @unchecked Sendable {
    let datum: UnsafeMutablePointer<gnutls_datum_t>

    init() throws(TLSError) {
        let key = UnsafeMutablePointer<gnutls_datum_t>.allocate(capacity: 1)
        key.initialize(to: gnutls_datum_t())
        let rc = gnutls_session_ticket_key_generate(key)
        guard rc == GNUTLS_E_SUCCESS else {
            key.deallocate()
            throw TLSError(.internalError, detail: GnuTLSLibrary.describe(rc))
        }
        datum = key
    }

    deinit {
        if let data = datum.pointee.data {
            gnutls_memset(data, 0, Int(datum.pointee.size))
            mtls_gnutls_free(data)
        }
        datum.deallocate()
    }
}
