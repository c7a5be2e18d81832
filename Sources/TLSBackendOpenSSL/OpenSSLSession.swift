internal import COpenSSL
@_spi(Testing) import TLSContract

/// One connection: an `SSL` over a BIO of our own (OpenSSLSessionBIO). Ciphertext from the peer
/// waits in `ciphertext.inbound` (or is lent for one call); whatever OpenSSL wants to send
/// accumulates in `ciphertext.outbound` until taken.
public final class OpenSSLSession: TLSSession {
    public let role: TLSConfiguration.Role
    public private(set) var isHandshakeComplete = false
    public private(set) var peerIdentity: PeerIdentity?
    public private(set) var negotiated: NegotiatedParameters?
    /// `process()` stops decrypting while this much plaintext waits to be taken.
    public var plaintextLimit = 64 * 1024
    /// The most plaintext one TLS record carries (RFC 8446 §5.1).
    private static let maxRecordPlaintext = 16_384

    /// Keeps the SSL_CTX (and the ALPN buffer the server callback points into) alive. The context's
    /// callbacks reach its caches through here (the SSL's app data is this session).
    let context: OpenSSLContext
    /// Owned: freed in deinit, which also frees the BIO (SSL_set_bio hands it to the SSL).
    fileprivate let ssl: OpaquePointer
    /// What the BIO reads from and writes to; it points here unretained, and outlives the SSL
    /// (released after deinit's SSL_free).
    private let ciphertext = SessionCiphertext()

    private var plaintext = ByteQueue()
    /// Plaintext written before the handshake completed, sent right after.
    private var heldPlaintext = ByteQueue()
    private var inputEnded = false
    private var closeRequested = false
    private var peerClosed = false
    private var failure: TLSError?
    /// Set by the context's message callback, synchronously inside SSL_read.
    var peerAttemptedRenegotiation = false
    /// Set by the test hook that starts a renegotiation (clients, TLS 1.2): its failure is a refused
    /// renegotiation, whatever OpenSSL says.
    private var startedRenegotiation = false
    /// The KeyUpdates received so far, counted by the context's message callback inside SSL_read;
    /// `keyUpdateRefusal` is set when one is over the contract's limit.
    private var keyUpdates = PeerKeyUpdateLimit()
    private var keyUpdateRefusal: TLSError?
    /// Clients that resume: the server name the sessions this connection receives are saved under
    /// (the name verified in the full handshake), read by the context's new-session callback.
    let resumptionName: String?
    /// Whether a saved session was offered, so that a failed handshake drops it.
    private var offeredSavedSession = false
    /// Set when a caller fed more ciphertext than the contract buffers; the next `process()` fails.
    private var bufferOverflow: TLSError?
    /// Clients: what the contract's check expects of the server (see PeerVerification).
    let expectedServerName: String?
    let pinnedServerPublicKey: [UInt8]?
    /// Set by the verify callback: the identity of a peer that passed OpenSSL's verification and the
    /// contract's rules, or the contract's refusal.
    var verifiedIdentity: PeerIdentity?
    var policyRefusal: TLSError?

    init(context: OpenSSLContext, serverName: String?) throws(TLSError) {
        self.context = context
        self.role = context.configuration.role
        self.resumptionName = context.resumption != nil ? serverName : nil
        self.expectedServerName = context.configuration.role == .client ? serverName : nil
        self.pinnedServerPublicKey = context.configuration.role == .client ? context.configuration.pinnedServerPublicKey : nil
        ERR_clear_error()
        guard let ssl = SSL_new(context.ctx) else { throw OpenSSLErrors.collect(.internalError) }
        guard let bio = OpenSSLSessionBIO.make(over: ciphertext) else {
            SSL_free(ssl)
            throw OpenSSLErrors.collect(.internalError)
        }
        // One BIO both ways: SSL_set_bio takes the one reference for both.
        SSL_set_bio(ssl, bio, bio)
        self.ssl = ssl
        _ = mtls_SSL_set_app_data(ssl, Unmanaged.passUnretained(self).toOpaque())

        switch role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            if let serverName {
                try expectServerName(serverName)
            }
            if context.alpnWire.count > 0 {
                _ = SSL_set_alpn_protos(ssl, context.alpnWire.baseAddress, UInt32(context.alpnWire.count))
            }
            // Only a session saved under this very name: the resumed handshake skips certificate
            // verification, so the name check of the original handshake is what vouches for it.
            // The connection gets its own copy (SSL_set_session takes a reference to it; ours is
            // dropped at once): OpenSSL marks the session an SSL uses unresumable after a TLS 1.3
            // resumption, when a TLS 1.2 ticket is renewed or after a fatal alert, and the saved
            // session must stay usable for every other connection, on any thread.
            if let name = resumptionName, let saved = context.resumption?.entry(for: name),
               let copy = SSL_SESSION_dup(saved.session) {
                offeredSavedSession = SSL_set_session(ssl, copy) == 1
                SSL_SESSION_free(copy)
            }
            ERR_clear_error()
        }
    }

    /// The context's CRLs, for the verify callback.
    var contextRevocation: RevocationList { context.revocation }

    deinit {
        SSL_free(ssl)
    }

    /// SNI for DNS names (never for IP literals, RFC 6066). The name itself is checked by the
    /// contract (PeerVerification, from the verify callback), not by OpenSSL.
    private func expectServerName(_ name: String) throws(TLSError) {
        guard IPAddressText.parse(name) == nil else { return }
        guard mtls_SSL_set_tlsext_host_name(ssl, name) == 1 else {
            throw OpenSSLErrors.collect(.configuration(file: nil, problem: .invalidSetting("server name '\(name)'")))
        }
    }

    // MARK: Ciphertext

    public func receiveCiphertext(_ bytes: UnsafeRawBufferPointer) {
        let waiting = ciphertext.inbound.count + bytes.count
        if waiting > TLSSessionLimits.maximumUnprocessedCiphertext {
            bufferOverflow = bufferOverflow ?? TLSSessionLimits.unprocessedCiphertextExceeded(waiting)
            return
        }
        guard isHandshakeComplete && failure == nil && bufferOverflow == nil && !peerClosed && plaintext.count < plaintextLimit else {
            ciphertext.inbound.append(bytes)
            return
        }
        // Established: decrypt now, OpenSSL reading straight from the caller's bytes instead of from
        // a copy of them (it copies each record into its own buffer anyway). Everything decrypt()
        // finds is kept in the session's state, which process() reports as usual; what OpenSSL did
        // not read (a record cut by the read) is kept.
        ciphertext.inbound.lend(bytes)
        _ = decrypt()
        ciphertext.inbound.endLoan()
    }

    public func receiveEndOfInput() {
        inputEnded = true
    }

    public var pendingCiphertextCount: Int { ciphertext.outbound.count }

    /// Into an empty buffer (the loop's case) the queue's storage is handed over, without a copy.
    public func takeCiphertext(into buffer: inout [UInt8]) {
        ciphertext.outbound.take(into: &buffer)
    }

    // MARK: Progress

    public func process() -> TLSProgress {
        // Plaintext decrypted before a failure (possibly during receiveCiphertext) is delivered first.
        if let failure { return plaintext.isEmpty ? .failed(failure) : .plaintextReady }
        if let bufferOverflow {
            failure = bufferOverflow
            return .failed(bufferOverflow)
        }
        if !isHandshakeComplete {
            return continueHandshake()
        }
        return decrypt()
    }

    private func continueHandshake() -> TLSProgress {
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            return completeHandshake()
        }
        let code = SSL_get_error(ssl, result)
        if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE {
            if inputEnded {
                return failHandshake(TLSError(.handshakeFailed(.unexpectedEOF)))
            }
            return .needsInput
        }
        return failHandshake(OpenSSLErrors.classify(ssl: ssl, handshakeComplete: false, renegotiationSeen: false,
                                                    policyRefusal: policyRefusal))
    }

    /// A handshake that offered a saved session and failed forgets that session, so that a server
    /// which cannot cope with it costs one failure, not every later connection.
    private func failHandshake(_ error: TLSError) -> TLSProgress {
        if offeredSavedSession, let name = resumptionName {
            context.resumption?.removeEntry(for: name)
            offeredSavedSession = false
        }
        return fail(error)
    }

    private func completeHandshake() -> TLSProgress {
        isHandshakeComplete = true
        do throws(TLSError) {
            peerIdentity = try readPeerIdentity()
        } catch {
            return fail(error)
        }
        negotiated = readNegotiatedParameters()
        if !heldPlaintext.isEmpty {
            var held: [UInt8] = []
            heldPlaintext.move(into: &held)
            do throws(TLSError) { try writePlaintext(held) } catch { return fail(error) }
        }
        if closeRequested { sendCloseNotify() }
        return .handshakeComplete
    }

    private func decrypt() -> TLSProgress {
        if peerClosed { return plaintext.isEmpty ? .peerClosed : .plaintextReady }
        while plaintext.count < plaintextLimit {
            ERR_clear_error()
            // Decrypted straight into the plaintext queue, as many records as are in: what is pending
            // as ciphertext bounds what it decrypts to, plus a record OpenSSL may hold already.
            let room = min(plaintextLimit - plaintext.count, ciphertext.inbound.count + Self.maxRecordPlaintext)
            var received: Int32 = 0
            plaintext.append(upTo: room) { buffer in
                var filled = 0
                repeat {
                    received = SSL_read(ssl, buffer.baseAddress! + filled, Int32(min(buffer.count - filled, Int(Int32.max))))
                    // A call that met a refused KeyUpdate returns what came after it: not delivered.
                    if keyUpdateRefusal != nil { return filled }
                    if received > 0 { filled += Int(received) }
                } while received > 0 && filled < buffer.count
                return filled
            }
            if let keyUpdateRefusal {
                // Deliver what was decrypted before the refused KeyUpdate; the failure comes next.
                failure = keyUpdateRefusal
                return plaintext.isEmpty ? .failed(keyUpdateRefusal) : .plaintextReady
            }
            if received > 0 { continue }  // the room is full; there may be more
            if peerAttemptedRenegotiation {
                return fail(TLSError(.renegotiationRefused, detail: "the peer sent a ClientHello after the handshake"))
            }
            let code = SSL_get_error(ssl, received)
            switch code {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                if !plaintext.isEmpty { return .plaintextReady }
                if inputEnded { return fail(TLSError(.uncleanShutdown)) }
                return .needsInput
            case SSL_ERROR_ZERO_RETURN:
                peerClosed = true
                return plaintext.isEmpty ? .peerClosed : .plaintextReady
            default:
                let error = OpenSSLErrors.classify(ssl: ssl, handshakeComplete: true,
                                                   renegotiationSeen: startedRenegotiation)
                // Deliver what was decrypted before the failure; the failure comes on the next call.
                failure = error
                return plaintext.isEmpty ? .failed(error) : .plaintextReady
            }
        }
        return .plaintextReady
    }

    /// Called by the context's message callback for each KeyUpdate the peer sends (OpenSSL has
    /// already checked its form; it processes it after this returns).
    func peerSentKeyUpdate() {
        guard keyUpdateRefusal == nil, !keyUpdates.admit(at: .now) else { return }
        keyUpdateRefusal = TLSError(.malformedInput, detail: PeerKeyUpdateLimit.refusal)
    }

    private func fail(_ error: TLSError) -> TLSProgress {
        failure = error
        return .failed(error)
    }

    // MARK: Plaintext

    public var pendingPlaintextCount: Int { plaintext.count }

    public func takePlaintext(into buffer: inout [UInt8], maxBytes: Int) {
        plaintext.move(into: &buffer, maxBytes: maxBytes)
    }

    public func writePlaintext(_ bytes: UnsafeRawBufferPointer) throws(TLSError) {
        if let failure { throw failure }
        if closeRequested { throw TLSError(.sessionClosed) }
        guard isHandshakeComplete else {
            let held = heldPlaintext.count + bytes.count
            if held > TLSSessionLimits.maximumPlaintextBeforeHandshake {
                throw TLSSessionLimits.plaintextBeforeHandshakeExceeded(held)
            }
            heldPlaintext.append(bytes)
            return
        }
        var offset = 0
        while offset < bytes.count {
            ERR_clear_error()
            let written = SSL_write(ssl, bytes.baseAddress! + offset, Int32(clamping: bytes.count - offset))
            guard written > 0 else {
                let error = OpenSSLErrors.classify(ssl: ssl, handshakeComplete: true, renegotiationSeen: false)
                failure = error
                throw error
            }
            offset += Int(written)
        }
    }

    public func close() {
        guard !closeRequested else { return }
        closeRequested = true
        if isHandshakeComplete && failure == nil { sendCloseNotify() }
    }

    private func sendCloseNotify() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    // MARK: Handshake results

    private func readPeerIdentity() throws(TLSError) -> PeerIdentity? {
        guard SSL_session_reused(ssl) == 1 else { return verifiedIdentity }
        // Resumed: no verification ran. The identity comes from the session (a server's from the
        // chain its ticket carries, see ticketChainCallback), accepted only while the certificate is
        // still valid and not revoked by the current CRLs.
        let chain = role == .server ? (SSL_get_session(ssl).map(TicketChain.read) ?? []) : peerCertificateChainDER(ssl)
        guard !chain.isEmpty else { return nil }
        return try PeerVerification.checkResumed(chainDER: chain, revocation: context.revocation)
    }

    private func readNegotiatedParameters() -> NegotiatedParameters {
        let version: TLSVersion = SSL_version(ssl) == TLS1_3_VERSION ? .tls13 : .tls12
        let cipher = SSL_get_current_cipher(ssl).map { CipherSuitePolicy.name(for: SSL_CIPHER_get_protocol_id($0)) } ?? "unknown"
        let groupID = mtls_SSL_get_negotiated_group(ssl)
        let group = groupID > 0 ? OBJ_nid2sn(groupID).map { NamedGroup.canonicalName(String(cString: $0)) } : nil
        var alpnData: UnsafePointer<UInt8>?
        var alpnLength: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &alpnData, &alpnLength)
        let alpn = alpnData.map { String(decoding: UnsafeBufferPointer(start: $0, count: Int(alpnLength)), as: UTF8.self) }
        return NegotiatedParameters(
            version: version, cipherSuite: cipher, group: group,
            applicationProtocol: alpnLength > 0 ? alpn : nil, resumed: SSL_session_reused(ssl) == 1)
    }
}

@_spi(Testing)
extension OpenSSLSession: TLSSessionTestHooks {
    public func sendKeyUpdates(_ count: Int, requestingPeer: Bool) throws(TLSError) {
        guard failure == nil, !closeRequested, isHandshakeComplete, SSL_version(ssl) == TLS1_3_VERSION else {
            throw TLSError(.sessionClosed, detail: "key updates need an established TLS 1.3 session")
        }
        for _ in 0..<count {
            ERR_clear_error()
            // SSL_key_update only schedules the message; SSL_do_handshake writes it (into our BIO).
            guard SSL_key_update(ssl, requestingPeer ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED) == 1,
                  SSL_do_handshake(ssl) == 1
            else { throw OpenSSLErrors.collect(.internalError) }
        }
    }

    public func startRenegotiation() throws(TLSError) {
        guard role == .client, isHandshakeComplete, SSL_version(ssl) == TLS1_2_VERSION else {
            throw TLSError(.configuration(file: nil, problem: .invalidSetting("renegotiation needs an established TLS 1.2 client")))
        }
        SSL_clear_options(ssl, mtls_SSL_OP_NO_RENEGOTIATION())
        startedRenegotiation = true
        ERR_clear_error()
        guard SSL_renegotiate(ssl) == 1 else {
            throw OpenSSLErrors.collect(.internalError)
        }
        // Writes the new ClientHello into the outbound BIO; the answer arrives through process().
        _ = SSL_do_handshake(ssl)
        ERR_clear_error()
    }
}
