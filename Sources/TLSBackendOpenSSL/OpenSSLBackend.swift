internal import COpenSSL
import TLSContract

/// TLS through OpenSSL 3, over a BIO of our own (OpenSSLSessionBIO) so that the library never touches a socket.
public struct OpenSSLBackend: TLSBackend {
    public init() {}

    public var name: String { "openssl" }

    public var libraryVersion: String {
        guard let text = OpenSSL_version(OPENSSL_VERSION) else { return "OpenSSL" }
        return String(cString: text)
    }

    public var capabilities: TLSCapabilities {
        [.pkcs12, .alpn, .ed25519, .ipAddressVerification, .tls13Resumption, .tls12Resumption]
    }

    public func makeContext(_ configuration: TLSConfiguration) throws(TLSError) -> any TLSContext {
        _ = Self.registeredThreadCleanup
        return try OpenSSLContext(configuration: configuration)
    }

    /// Loop threads free OpenSSL's per-thread state (random generators, error queue) before they
    /// end, rather than leaving it to a destructor that may not run before the process exits.
    private static let registeredThreadCleanup: Void = TLSThreadCleanup.register("openssl") { OPENSSL_thread_stop() }
}

/// One `SSL_CTX` holding the parsed credentials, the trust store and the policy, built once and
/// shared by every session. OpenSSL makes `SSL_new` on a shared, unmodified `SSL_CTX` thread-safe.
public final class OpenSSLContext: TLSContext, @unchecked Sendable {
    public let configuration: TLSConfiguration
    public var backendName: String { "openssl" }

    /// Owned: created in init, freed in deinit; sessions hold their own reference through `SSL_new`.
    let ctx: OpaquePointer
    /// ALPN protocols in wire format (length-prefixed). Owned by this context and freed in deinit:
    /// the server's selection callback hands OpenSSL a pointer into it, valid as long as `ctx`.
    let alpnWire: UnsafeMutableBufferPointer<UInt8>
    /// Clients with `sessionTicketsEnabled` only: the newest resumable session per server name,
    /// filled by `newSessionCallback` and offered by `OpenSSLSession.init`.
    let resumption: ResumptionCache<OpenSSLSavedSession>?
    /// The configuration's CRLs as the contract parsed them; also loaded into the trust store.
    public let revocation: RevocationList
    /// Our chain as installed (leaf first), set once while the context is configured.
    public private(set) var certificateChainDER: [[UInt8]] = []
    /// Servers with `sessionTicketsEnabled` only: the sessions behind TLS 1.3 tickets.
    let sessionStore: OpenSSLServerSessionStore?
    /// Chains this context verified in full (see verifyChainCallback); nil when it verifies no peer
    /// or the cache is off. Set once while the context is configured.
    public private(set) var verifiedChains: VerifiedChainCache?

    /// TLS 1.2 suites: ECDHE only, AEAD only. TLS 1.3 suites are all AEAD already.
    static let tls12CipherList =
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        + "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        + "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
    /// AES-128 first, as GnuTLS orders them: both servers then pick the same suite, and the faster one.
    static let tls13CipherSuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
    static let groups = "X25519:P-256:P-384"
    /// Servers: the session ID context of every session they issue (see configureResumption).
    static let sessionIDContext = Array("swift-mtls".utf8)

    init(configuration: TLSConfiguration,
         sessionStoreCapacity: Int = OpenSSLServerSessionStore.defaultCapacity,
         inheritedTickets: OpenSSLServerTickets? = nil) throws(TLSError) {
        try configuration.validate()
        self.revocation = try RevocationList.load(configuration)
        self.configuration = configuration
        self.resumption = configuration.role == .client && configuration.sessionTicketsEnabled ? ResumptionCache() : nil
        if configuration.role == .server && configuration.sessionTicketsEnabled {
            guard let tickets = inheritedTickets ?? OpenSSLServerTickets(
                storeCapacity: sessionStoreCapacity, sessionIDContext: Self.sessionIDContext,
                keyLifetimeSeconds: Self.ticketKeyLifetimeSeconds)
            else { throw OpenSSLErrors.collect(.internalError) }
            self.tickets = tickets
        } else {
            self.tickets = nil
        }
        self.sessionStore = tickets?.store
        let wire = configuration.applicationProtocols.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
        self.alpnWire = .allocate(capacity: wire.count)
        _ = alpnWire.initialize(from: wire)
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_method()) else {
            alpnWire.deallocate()
            throw OpenSSLErrors.collect(.internalError)
        }
        self.ctx = ctx
        // From here on, deinit frees ctx if a later step throws.
        try applyPolicy()
        if let identity = configuration.identity {
            try loadIdentity(identity)
        }
        let trustRootsDER = try loadTrustRoots()
        verifiedChains = VerifiedChainCache.make(for: configuration, trustRootsDER: trustRootsDER,
                                                 revocation: revocation, library: "openssl")
        configureVerification()
        try loadRevocationLists()
        try configureResumption()
        if configuration.keyLog != nil { SSL_CTX_set_keylog_callback(ctx, keyLogLine) }
        SSL_CTX_set_msg_callback(ctx, protocolMessageWatch)
        if configuration.role == .server {
            if alpnWire.count > 0 {
                SSL_CTX_set_alpn_select_cb(ctx, alpnSelect, Unmanaged.passUnretained(self).toOpaque())
            }
        }
    }

    deinit {
        SSL_CTX_free(ctx)
        alpnWire.deallocate()
    }

    /// Servers with `sessionTicketsEnabled` only: the session store and the TLS 1.2 ticket keys, new
    /// or taken over from the context this one replaces.
    let tickets: OpenSSLServerTickets?
    /// Servers with tickets: the rotating ticket keys (see shim.h), owned by `tickets`.
    var ticketKeys: UnsafeMutablePointer<mtls_ticket_keys>? { tickets?.keys }

    /// How long a ticket key seals new tickets before a fresh one takes over; tickets sealed under
    /// the previous key are still accepted (and renewed) for one more period.
    static let ticketKeyLifetimeSeconds = 12 * 3600

    /// Retires the current ticket key at the next ticket, as a scheduled rotation would.
    func rotateTicketKeys() {
        if let ticketKeys { mtls_ticket_keys_expire(ticketKeys) }
    }

    public func makeSession(serverName: String?) throws(TLSError) -> any TLSSession {
        try OpenSSLSession(context: self, serverName: serverName ?? configuration.serverName)
    }

    private func applyPolicy() throws(TLSError) {
        var options = mtls_SSL_OP_NO_RENEGOTIATION() | mtls_SSL_OP_NO_COMPRESSION()
            | mtls_SSL_OP_CIPHER_SERVER_PREFERENCE()
        if !configuration.sessionTicketsEnabled {
            options |= mtls_SSL_OP_NO_TICKET()
            SSL_CTX_set_num_tickets(ctx, 0)
        } else {
            // One TLS 1.3 ticket per handshake, as GnuTLS sends, not OpenSSL's default two: a client
            // offers only its newest, and each ticket issued takes a place in the session store.
            SSL_CTX_set_num_tickets(ctx, 1)
        }
        SSL_CTX_set_options(ctx, options)
        // Idle connections give their 34 KiB of record buffers back. We send exactly the configured
        // chain: building one from the trust store on every handshake costs time and leaks the root.
        _ = mtls_SSL_CTX_set_mode(ctx, mtls_SSL_MODE_RELEASE_BUFFERS() | mtls_SSL_MODE_NO_AUTO_CHAIN())
        guard mtls_SSL_CTX_set_min_proto_version(ctx, Self.protocolVersion(configuration.minimumVersion)) == 1,
              mtls_SSL_CTX_set_max_proto_version(ctx, Self.protocolVersion(configuration.maximumVersion)) == 1,
              SSL_CTX_set_cipher_list(ctx, Self.tls12CipherList) == 1,
              SSL_CTX_set_ciphersuites(ctx, Self.tls13CipherSuites) == 1,
              mtls_SSL_CTX_set1_groups_list(ctx, Self.groups) == 1
        else {
            throw OpenSSLErrors.collect(.configuration(file: nil, problem: .invalidSetting("TLS policy")))
        }
    }

    /// Resumption through tickets only: a session ID alone never resumes.
    ///
    /// Server, TLS 1.3: stateful tickets. The ticket is a random session ID, and the session stays
    /// in this context's `sessionStore` (see there for why, and its bounds), so only this context
    /// accepts it. Every resumption issues a fresh ticket (clients use each TLS 1.3 ticket once).
    /// `chooseTicketKind` turns them on per connection, since OpenSSL's switch (SSL_OP_NO_TICKET)
    /// would also take RFC 5077 tickets away from TLS 1.2.
    /// Server, TLS 1.2: tickets sealed with keys drawn at random for this context (AES-256 and HMAC).
    /// OpenSSL 3.0 would keep one key for the context's lifetime; our ticket callback replaces it
    /// every `ticketKeyLifetimeSeconds` and accepts the previous one for one more period.
    /// A new context starts with an empty store and new keys, and tickets from the old one fall back
    /// to a full handshake, unless it replaces a context whose trust roots it shares (a renewal of our
    /// own certificate, a new CRL): then it takes over that context's `tickets`, and clients keep
    /// resuming. OpenSSL's own session cache is off.
    /// Client: the context's `resumption` cache, filled from the new-session callback. OpenSSL's
    /// internal client store is off (it never reuses client sessions by itself anyway).
    private func configureResumption() throws(TLSError) {
        switch configuration.role {
        case .server:
            if sessionStore != nil {
                // Server-side caching through our callbacks only, which keep TLS 1.3 sessions alone.
                _ = mtls_SSL_CTX_sess_set_cache_mode(ctx, mtls_SSL_SESS_CACHE_SERVER_EXTERNAL())
                SSL_CTX_sess_set_new_cb(ctx, storeServerSession)
                SSL_CTX_sess_set_get_cb(ctx, findServerSession)
                SSL_CTX_set_client_hello_cb(ctx, chooseTicketKind, nil)
            } else {
                _ = mtls_SSL_CTX_sess_set_cache_mode(ctx, mtls_SSL_SESS_CACHE_OFF())
            }
            // Required before OpenSSL resumes anything on a server that verifies clients; it must
            // match between the ticket's session and the resuming connection, and it always does,
            // since tickets never leave the context that issued them.
            guard SSL_CTX_set_session_id_context(ctx, Self.sessionIDContext, UInt32(Self.sessionIDContext.count)) == 1
            else {
                throw OpenSSLErrors.collect(.configuration(file: nil, problem: .invalidSetting("session ID context")))
            }
            if configuration.sessionTicketsEnabled {
                guard let ticketKeys, mtls_SSL_CTX_use_ticket_keys(ctx, ticketKeys) == 1 else {
                    throw OpenSSLErrors.collect(.internalError)
                }
            }
            if configuration.sessionTicketsEnabled && configuration.clientAuthentication != .none {
                // The client's whole chain travels with each ticket's session (TicketChain), so that
                // a resumed connection reports the same chain as the full handshake.
                guard SSL_CTX_set_session_ticket_cb(ctx, ticketChainCallback, nil, nil) == 1 else {
                    throw OpenSSLErrors.collect(.internalError)
                }
            }
        case .client:
            if resumption != nil {
                _ = mtls_SSL_CTX_sess_set_cache_mode(ctx, mtls_SSL_SESS_CACHE_CLIENT_ONLY_EXTERNAL())
                SSL_CTX_sess_set_new_cb(ctx, newSessionCallback)
            } else {
                _ = mtls_SSL_CTX_sess_set_cache_mode(ctx, mtls_SSL_SESS_CACHE_OFF())
            }
        }
    }

    static func protocolVersion(_ version: TLSVersion) -> Int32 {
        switch version {
        case .tls12: return TLS1_2_VERSION
        case .tls13: return TLS1_3_VERSION
        }
    }

    private func loadIdentity(_ identity: TLSConfiguration.Identity) throws(TLSError) {
        switch identity {
        case .pem(let chainSource, let keySource):
            let chainPEM = try chainSource.loadCertificatesPEM()
            let keyPEM = try keySource.loadPrivateKeyPEM()
            let certificates = try OpenSSLPEM.certificates(chainPEM.bytes, name: chainPEM.name)
            defer { certificates.forEach { X509_free($0) } }
            guard let key = OpenSSLPEM.privateKey(keyPEM.bytes) else {
                throw OpenSSLErrors.collect(.configuration(file: keyPEM.name, problem: .invalidPrivateKey))
            }
            defer { EVP_PKEY_free(key) }
            try install(leaf: certificates[0], chain: certificates.dropFirst(), key: key, keyName: keyPEM.name)
        case .pkcs12(let source, let password):
            let bytes = try source.load()
            let bundle = try OpenSSLPEM.pkcs12(bytes, password: password, name: source.name)
            defer {
                X509_free(bundle.leaf)
                EVP_PKEY_free(bundle.key)
                bundle.chain.forEach { X509_free($0) }
            }
            try install(leaf: bundle.leaf, chain: bundle.chain[...], key: bundle.key, keyName: source.name)
        }
    }

    private func install(leaf: OpaquePointer, chain: ArraySlice<OpaquePointer>, key: OpaquePointer, keyName: String) throws(TLSError) {
        ERR_clear_error()
        guard SSL_CTX_use_certificate(ctx, leaf) == 1 else {
            throw OpenSSLErrors.collect(.configuration(file: keyName, problem: .invalidCertificate))
        }
        for certificate in chain where mtls_SSL_CTX_add1_chain_cert(ctx, certificate) != 1 {
            throw OpenSSLErrors.collect(.configuration(file: keyName, problem: .invalidCertificate))
        }
        guard SSL_CTX_use_PrivateKey(ctx, key) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
            throw OpenSSLErrors.collect(.configuration(file: keyName, problem: .keyDoesNotMatchCertificate))
        }
        certificateChainDER = ([leaf] + chain).compactMap(OpenSSLPEM.der)
    }

    /// Returns the roots loaded, DER.
    private func loadTrustRoots() throws(TLSError) -> [[UInt8]] {
        guard let store = SSL_CTX_get_cert_store(ctx) else { return [] }
        var loaded: [[UInt8]] = []
        for source in configuration.trustRoots {
            let pem = try source.loadCertificatesPEM()
            let roots = try OpenSSLPEM.certificates(pem.bytes, name: pem.name)
            defer { roots.forEach { X509_free($0) } }
            loaded += roots.compactMap(OpenSSLPEM.der)
            for root in roots {
                // A root listed twice is harmless; anything else is a real failure.
                if X509_STORE_add_cert(store, root) != 1 {
                    ERR_clear_error()
                }
            }
        }
        return loaded
    }

    /// The CRLs go into the trust store, which then checks every certificate of the chain against
    /// them (X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL): leaf and intermediates, each
    /// against a CRL of its issuer, whose signature and nextUpdate OpenSSL verifies. OpenSSL would
    /// also refuse any certificate whose issuer has no CRL ("unable to get certificate CRL"); the
    /// verify callback accepts that, so a CA without a CRL is not checked, as the contract's rule
    /// (RevocationList) says and GnuTLS does. Without CRLs the flags stay off.
    private func loadRevocationLists() throws(TLSError) {
        guard !revocation.isEmpty, let store = SSL_CTX_get_cert_store(ctx) else { return }
        for crl in revocation.crls {
            ERR_clear_error()
            let parsed = crl.der.withUnsafeBufferPointer { buffer -> OpaquePointer? in
                var cursor = buffer.baseAddress
                return d2i_X509_CRL(nil, &cursor, buffer.count)
            }
            guard let parsed else {
                throw OpenSSLErrors.collect(.configuration(file: crl.source, problem: .invalidCRL))
            }
            defer { X509_CRL_free(parsed) }
            // The same CRL listed twice is harmless.
            if X509_STORE_add_crl(store, parsed) != 1 { ERR_clear_error() }
        }
        _ = X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), UInt(X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL))
    }

    private func configureVerification() {
        var mode: Int32 = SSL_VERIFY_NONE
        switch configuration.role {
        case .client:
            mode = SSL_VERIFY_PEER
        case .server:
            switch configuration.clientAuthentication {
            case .none: mode = SSL_VERIFY_NONE
            case .optional: mode = SSL_VERIFY_PEER
            case .require: mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
            }
        }
        SSL_CTX_set_verify(ctx, mode, verifyCallback)
        if verifiedChains != nil { SSL_CTX_set_cert_verify_callback(ctx, verifyChainCallback, nil) }
        // Any certificate given as a trust root is an anchor, self-signed or not (PeerVerification).
        _ = X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), UInt(X509_V_FLAG_PARTIAL_CHAIN))
    }
}

/// OpenSSL has verified the chain up to depth 0 (`preverified`): apply the contract's rules to the
/// chain it built (PeerVerification) and record the outcome on the session, which this callback
/// never drives. A refusal becomes X509_V_ERR_APPLICATION_VERIFICATION; the session then reports
/// the contract's error (see OpenSSLSession.handshakeFailure).
private let verifyCallback: @convention(c) (Int32, OpaquePointer?) -> Int32 = { preverified, store in
    guard let store else { return preverified }
    guard preverified == 1 else { return revocationVerdict(store) }
    guard X509_STORE_CTX_get_error_depth(store) == 0 else { return 1 }
    guard let (owner, chain) = sessionAndBuiltChain(store) else { return 0 }
    do throws(TLSError) {
        owner.verifiedIdentity = try PeerVerification.check(
            chainDER: chain, peerRole: owner.role == .server ? .client : .server,
            expectedName: owner.expectedServerName, pinnedPublicKey: owner.pinnedServerPublicKey,
            revocation: owner.contextRevocation)
        return 1
    } catch {
        owner.policyRefusal = error
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
        return 0
    }
}

/// A certificate OpenSSL failed, at any depth. A missing CRL is not a failure (see
/// `OpenSSLContext.loadRevocationLists`). A revocation failure is worded by the contract's rule
/// (RevocationList), which names the serial and the CRL, so both backends refuse alike; the verify
/// result, and so the alert OpenSSL sends, stays OpenSSL's.
private func revocationVerdict(_ store: OpaquePointer) -> Int32 {
    let error = X509_STORE_CTX_get_error(store)
    if error == X509_V_ERR_UNABLE_TO_GET_CRL || error == X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER { return 1 }
    guard OpenSSLErrors.isRevocationResult(Int(error)), let (owner, chain) = sessionAndBuiltChain(store) else { return 0 }
    do throws(TLSError) {
        let path = try PeerIdentity.parsingCached(certificateChainDER: chain).certificateChainDER
        try owner.contextRevocation.check(path: path)
        // The contract's rule found nothing wrong, OpenSSL did: still refused, in OpenSSL's words.
        if error == X509_V_ERR_CERT_REVOKED {
            owner.policyRefusal = RevocationList.revokedByLibrary(
                X509_STORE_CTX_get_current_cert(store).flatMap(OpenSSLPEM.der), library: "OpenSSL")
        }
    } catch {
        owner.policyRefusal = error
    }
    return 0
}

/// Inside a verify callback: the session being verified (the SSL's app data, unretained: it owns the
/// SSL) and the chain OpenSSL built so far, as DER, leaf first. Nil if either cannot be had.
private func sessionAndBuiltChain(_ store: OpaquePointer) -> (OpenSSLSession, [[UInt8]])? {
    guard let ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()),
          let pointer = mtls_SSL_get_app_data(OpaquePointer(ssl)),
          let built = X509_STORE_CTX_get0_chain(store)
    else { return nil }
    var chain: [[UInt8]] = []
    for index in 0..<mtls_sk_X509_num(built) {
        guard let certificate = mtls_sk_X509_value(built, index), let der = OpenSSLPEM.der(certificate) else { return nil }
        chain.append(der)
    }
    return (Unmanaged<OpenSSLSession>.fromOpaque(pointer).takeUnretainedValue(), chain)
}

/// Server-side ALPN: the first of our protocols that the client also offers.
/// `arg` is the unretained OpenSSLContext, which outlives its SSL_CTX's callbacks.
private let alpnSelect: @convention(c) (
    OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?,
    UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?
) -> Int32 = { _, out, outLength, offered, offeredLength, arg in
    guard let arg, let out, let outLength else { return SSL_TLSEXT_ERR_NOACK }
    let context = Unmanaged<OpenSSLContext>.fromOpaque(arg).takeUnretainedValue()
    var selected: UnsafeMutablePointer<UInt8>?
    var selectedLength: UInt8 = 0
    let result = SSL_select_next_proto(&selected, &selectedLength, context.alpnWire.baseAddress,
                                       UInt32(context.alpnWire.count), offered, offeredLength)
    guard result == OPENSSL_NPN_NEGOTIATED, let selected else { return SSL_TLSEXT_ERR_ALERT_FATAL }
    out.pointee = UnsafePointer(selected)
    outLength.pointee = selectedLength
    return SSL_TLSEXT_ERR_OK
}

/// Watches the protocol messages of every session, synchronously inside OpenSSL's calls (for every
/// record too, so the common case returns after two comparisons):
/// - a server's no_renegotiation alert: OpenSSL answers a renegotiating ClientHello with that warning
///   and carries on; we tear the connection down instead, as the GnuTLS backend does, so that a peer
///   probing for renegotiation learns nothing more. (A client ignores a HelloRequest, on both.)
/// - each KeyUpdate received, counted against the contract's `PeerKeyUpdateLimit`, which GnuTLS
///   applies inside the library and OpenSSL does not apply at all.
private let protocolMessageWatch: @convention(c) (
    Int32, Int32, Int32, UnsafeRawPointer?, Int, OpaquePointer?, UnsafeMutableRawPointer?
) -> Void = { writing, _, contentType, buffer, length, ssl, _ in
    guard contentType == SSL3_RT_ALERT || contentType == SSL3_RT_HANDSHAKE, length >= 2, let buffer, let ssl,
          let pointer = mtls_SSL_get_app_data(ssl)
    else { return }
    let session = Unmanaged<OpenSSLSession>.fromOpaque(pointer).takeUnretainedValue()
    if writing == 1 {
        if contentType == SSL3_RT_ALERT, session.role == .server,
           buffer.load(fromByteOffset: 1, as: UInt8.self) == UInt8(SSL_AD_NO_RENEGOTIATION) {
            session.peerAttemptedRenegotiation = true
        }
    } else if contentType == SSL3_RT_HANDSHAKE, buffer.load(as: UInt8.self) == UInt8(SSL3_MT_KEY_UPDATE) {
        session.peerSentKeyUpdate()
    }
}

/// `--keylog`: OpenSSL formats each NSS key log line itself (CLIENT_RANDOM in TLS 1.2, the traffic
/// and exporter secrets in TLS 1.3); the context's key log appends it. The line holds a secret, so it
/// goes nowhere else.
private let keyLogLine: @convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Void = { ssl, line in
    guard let ssl, let line, let pointer = mtls_SSL_get_app_data(ssl) else { return }
    Unmanaged<OpenSSLSession>.fromOpaque(pointer).takeUnretainedValue().context.configuration.keyLog?.append(line: line)
}

/// One client session that can be resumed, as cached by a client context. Owns the only reference
/// to a private copy of the `SSL_SESSION` and frees it in deinit. The copy is never installed in an
/// `SSL` (each connection offers a copy of it in turn), so nothing mutates it after it is saved and
/// any thread may read it.
final class OpenSSLSavedSession: @unchecked Sendable {
    let session: OpaquePointer

    init(taking session: OpaquePointer) {
        self.session = session
    }

    deinit {
        SSL_SESSION_free(session)
    }
}

/// Client: a session the server can resume has arrived (TLS 1.2: at the end of the handshake;
/// TLS 1.3: with each NewSessionTicket, inside SSL_read). The session passed in stays the
/// connection's own (OpenSSL may still mark it unresumable, e.g. when the connection is freed
/// without close_notify), so a copy is saved and 0 returned: OpenSSL keeps its reference.
private let newSessionCallback: @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32 = { ssl, session in
    guard let ssl, let session, let pointer = mtls_SSL_get_app_data(ssl) else { return 0 }
    let owner = Unmanaged<OpenSSLSession>.fromOpaque(pointer).takeUnretainedValue()
    // Tickets only: our servers resume nothing from a bare session ID.
    guard let name = owner.resumptionName, let cache = owner.context.resumption,
          SSL_SESSION_is_resumable(session) == 1, SSL_SESSION_has_ticket(session) == 1,
          let copy = SSL_SESSION_dup(session)
    else { return 0 }
    // TLS 1.2 tickets arrive before the handshake completes (verifiedIdentity is set by then),
    // TLS 1.3 ones after it (peerIdentity, also for a resumed connection).
    let server = owner.peerIdentity ?? owner.verifiedIdentity
    cache.store(OpenSSLSavedSession(taking: copy), for: name, usableUntil: server?.notValidAfter)
    return 0
}

/// Server: runs as each ticket is made. After a full handshake it puts the client's certification
/// path as verified (PeerVerification; not whatever else the client sent) into the ticket's session
/// (TicketChain), where resumed connections find the client's identity. Tickets issued on a resumed
/// connection come from a copy of the resumed session, which already carries it (ssl_session_dup
/// copies the app data): left as is.
private let ticketChainCallback: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { ssl, _ in
    guard let ssl, SSL_session_reused(ssl) != 1, let session = SSL_get_session(ssl),
          let owner = mtls_SSL_get_app_data(ssl),
          let chain = Unmanaged<OpenSSLSession>.fromOpaque(owner).takeUnretainedValue().verifiedIdentity?.certificateChainDER,
          !chain.isEmpty
    else { return 1 }
    let data = TicketChain.encode(chain)
    return SSL_SESSION_set1_ticket_appdata(session, data, data.count) == 1 ? 1 : 0
}

/// Server: runs on each ClientHello, before the version is chosen. A connection that will be
/// TLS 1.3 gets stateful tickets (SSL_OP_NO_TICKET: OpenSSL then issues and looks up TLS 1.3
/// tickets through `storeServerSession` / `findServerSession`); a TLS 1.2 one keeps sealed
/// tickets, which TLS 1.2 clients expect. Our servers negotiate TLS 1.3 whenever the client offers
/// it and the context allows it.
private let chooseTicketKind: @convention(c) (
    OpaquePointer?, UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?
) -> Int32 = { ssl, _, _ in
    guard let ssl, let pointer = mtls_SSL_get_app_data(ssl) else { return SSL_CLIENT_HELLO_SUCCESS }
    let owner = Unmanaged<OpenSSLSession>.fromOpaque(pointer).takeUnretainedValue()
    if owner.context.configuration.maximumVersion == .tls13 && clientOffersTLS13(ssl) {
        _ = SSL_set_options(ssl, mtls_SSL_OP_NO_TICKET())
    }
    return SSL_CLIENT_HELLO_SUCCESS
}

/// Whether the ClientHello's supported_versions (a 1-byte length, then 2-byte versions) lists TLS 1.3.
private func clientOffersTLS13(_ ssl: OpaquePointer) -> Bool {
    var data: UnsafePointer<UInt8>?
    var length = 0
    guard SSL_client_hello_get0_ext(ssl, UInt32(TLSEXT_TYPE_supported_versions), &data, &length) == 1,
          let data, length >= 1
    else { return false }
    let versions = UnsafeBufferPointer(start: data + 1, count: min(Int(data[0]), length - 1))
    return stride(from: 0, to: versions.count - 1, by: 2).contains { versions[$0] == 0x03 && versions[$0 + 1] == 0x04 }
}

/// Server: OpenSSL made a session for a ticket. The store keeps what resuming a stateful TLS 1.3
/// one needs; others (TLS 1.2, whose tickets carry the session) are not kept. OpenSSL keeps its
/// reference (0).
private let storeServerSession: @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32 = { ssl, session in
    guard let ssl, let session, SSL_version(ssl) == TLS1_3_VERSION,
          SSL_get_options(ssl) & mtls_SSL_OP_NO_TICKET() != 0,
          let pointer = mtls_SSL_get_app_data(ssl),
          let store = Unmanaged<OpenSSLSession>.fromOpaque(pointer).takeUnretainedValue().context.sessionStore
    else { return 0 }
    store.store(session)
    return 0
}

/// Server: a client offered a TLS 1.3 ticket (a session ID). Hands OpenSSL a session rebuilt from
/// the store, which OpenSSL then owns (`copy` 0), or nil for a full handshake.
private let findServerSession: @convention(c) (
    OpaquePointer?, UnsafePointer<UInt8>?, Int32, UnsafeMutablePointer<Int32>?
) -> OpaquePointer? = { ssl, id, length, copy in
    guard let ssl, let id, length > 0, let pointer = mtls_SSL_get_app_data(ssl),
          let store = Unmanaged<OpenSSLSession>.fromOpaque(pointer).takeUnretainedValue().context.sessionStore
    else { return nil }
    copy?.pointee = 0
    return store.session(id: UnsafeRawBufferPointer(start: id, count: Int(length)))
}
