import CGnuTLS
@_spi(Testing) import TLSContract

/// One connection's GnuTLS session, driven without I/O: GnuTLS reads from `inbound` and writes to
/// `outbound` through custom transport callbacks, and never blocks (GNUTLS_NONBLOCK).
public final class GnuTLSSession: TLSSession {
    public let role: TLSConfiguration.Role
    public private(set) var isHandshakeComplete = false
    public private(set) var peerIdentity: PeerIdentity?
    public private(set) var negotiated: NegotiatedParameters?

    /// `process()` stops decrypting while this much plaintext waits to be taken.
    public var plaintextLimit = 64 * 1024

    /// Retained so the credentials and priority cache the session points into outlive it.
    private let context: GnuTLSContext
    /// Owned by this object; gnutls_deinit in deinit. After that no callback can fire, which is
    /// what makes the unretained transport pointer below safe.
    fileprivate let session: gnutls_session_t
    /// Clients: the server name the contract's check expects (nil with a pinned key only), and the pin.
    fileprivate let expectedServerName: String?
    fileprivate let pinnedServerPublicKey: [UInt8]?

    fileprivate var inbound = IncomingCiphertext()
    fileprivate var outbound = OutgoingRecords()
    fileprivate var inboundEnded = false
    private var plaintext = ByteQueue()
    /// Plaintext accepted by `writePlaintext` that GnuTLS has not encrypted yet.
    private var unsent = ByteQueue()
    /// After E_AGAIN GnuTLS must be called again with the same length; remembered here.
    private var sendRetryLength: Int?
    /// The peer's record framing, to tell bytes that are not TLS from an old TLS version or a bad record.
    private var scanner = RecordScanner()
    /// How many inbound bytes GnuTLS has pulled, to know whether it has reached what `scanner` found.
    fileprivate var pulledCount = 0

    /// What `verifyPeer` found, for mapping a verification failure to one problem.
    fileprivate var verifyStatus: UInt32 = 0
    /// Set by `verifyPeer`: the identity of a peer that passed both GnuTLS's verification and the
    /// contract's rules, or the contract's refusal.
    fileprivate var verifiedIdentity: PeerIdentity?
    fileprivate var policyRefusal: TLSError?
    /// The context's verified chains (VerifiedChainCache), for `verifyPeer`.
    fileprivate var contextVerifiedChains: VerifiedChainCache? { context.verifiedChains }
    private var failure: TLSError?
    private var renegotiating = false
    private var closeRequested = false
    private var closeNotifySent = false
    /// The peer has ended its data: close_notify, or a TLS 1.3 user_canceled (see `peerCanceled`).
    private var peerClosed = false
    /// TLS 1.3: the peer sent user_canceled after the handshake, as JSSE does whenever it closes a
    /// socket. GnuTLS 3.7 takes every TLS 1.3 alert but close_notify as fatal and then refuses the
    /// session both ways, so the connection is over in both directions: writes throw `.sessionClosed`
    /// and no close_notify can be sent back (JSSE does not wait for one).
    private var peerCanceled = false
    /// TLS 1.2 warning alerts since the last data record (the contract's limit: PeerWarningAlerts).
    private var warningAlerts = PeerWarningAlerts()
    /// Clients that resume: the server name this connection's resumption data is saved under (the
    /// name verified in the full handshake).
    private let resumptionName: String?
    /// Whether saved resumption data was offered, so that a failed handshake drops it.
    private var offeredSavedSession = false
    /// Set by `ticketArrived` (inside gnutls_record_recv) when a TLS 1.3 NewSessionTicket has been
    /// stored in the session; the data is fetched once GnuTLS has returned.
    fileprivate var ticketPending = false

    private static let maxRecordPlaintext = 16 * 1024

    init(context: GnuTLSContext, serverName: String?) throws(TLSError) {
        let configuration = context.configuration
        self.context = context
        self.role = configuration.role

        let roleFlag: gnutls_init_flags_t = configuration.role == .server ? GNUTLS_SERVER : GNUTLS_CLIENT
        let nonBlocking: gnutls_init_flags_t = GNUTLS_NONBLOCK
        // With tickets on, a client asks for them (both versions) and a server issues them once its
        // context's key is set below; off, neither happens.
        let noTickets: gnutls_init_flags_t = configuration.sessionTicketsEnabled ? gnutls_init_flags_t(0) : GNUTLS_NO_TICKETS
        var created: gnutls_session_t?
        var rc = gnutls_init(&created, roleFlag.rawValue | nonBlocking.rawValue | noTickets.rawValue)
        guard rc == GNUTLS_E_SUCCESS, let session = created else {
            throw TLSError(.internalError, detail: GnuTLSLibrary.describe(rc))
        }

        func fail(_ code: Int32) -> TLSError {
            gnutls_deinit(session)
            return TLSError(.internalError, detail: GnuTLSLibrary.describe(code))
        }

        rc = gnutls_priority_set(session, context.priority)
        if rc != GNUTLS_E_SUCCESS { throw fail(rc) }
        rc = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(context.credentials))
        if rc != GNUTLS_E_SUCCESS { throw fail(rc) }
        // The event loop owns handshake timeouts; GnuTLS's own clock would fire across calls.
        gnutls_handshake_set_timeout(session, 0)

        switch configuration.role {
        case .server:
            let request: gnutls_certificate_request_t
            switch configuration.clientAuthentication {
            case .none: request = GNUTLS_CERT_IGNORE
            case .optional: request = GNUTLS_CERT_REQUEST
            case .require: request = GNUTLS_CERT_REQUIRE
            }
            gnutls_certificate_server_set_request(session, request)
            // No CA names in the CertificateRequest: GnuTLS clients (curl among them) then withhold a
            // certificate from another CA, and the refusal would read "missing" instead of "untrusted
            // issuer". OpenSSL servers send no names unless told to, so both backends behave the same.
            gnutls_certificate_send_x509_rdn_sequence(session, 1)
            // Tickets only: no gnutls_db_* functions are set, so there is no session-ID cache.
            rc = context.enableTickets(on: session)
            if rc != GNUTLS_E_SUCCESS { throw fail(rc) }
        case .client:
            // SNI for DNS names; IP literals are never sent as SNI (RFC 6066). The name and the key
            // purpose are checked by the contract (PeerVerification), not by GnuTLS.
            if let name = serverName, IPAddressText.parse(name) == nil {
                rc = gnutls_server_name_set(session, GNUTLS_NAME_DNS, name, name.utf8.count)
                if rc != GNUTLS_E_SUCCESS { throw fail(rc) }
            }
        }

        if !configuration.applicationProtocols.isEmpty {
            // gnutls_alpn_set_protocols copies the names, so these buffers only live for the call.
            let names = configuration.applicationProtocols.map { Array($0.utf8) }
            var datums: [gnutls_datum_t] = []
            var buffers: [UnsafeMutableBufferPointer<UInt8>] = []
            for name in names {
                let buffer = Self.ownedBytes(name)
                buffers.append(buffer)
                datums.append(gnutls_datum_t(data: buffer.baseAddress, size: UInt32(buffer.count)))
            }
            let flags: gnutls_alpn_flags_t = configuration.role == .server ? GNUTLS_ALPN_SERVER_PRECEDENCE : gnutls_alpn_flags_t(0)
            rc = gnutls_alpn_set_protocols(session, datums, UInt32(datums.count), flags.rawValue)
            for buffer in buffers { buffer.deallocate() }
            if rc != GNUTLS_E_SUCCESS { throw fail(rc) }
        }

        // Only data saved under this very name: a resumed handshake skips certificate verification,
        // so the name check of the original handshake is what vouches for it. GnuTLS copies it.
        var offered = false
        let resumptionName = configuration.role == .client && context.resumption != nil ? serverName : nil
        if let name = resumptionName, let saved = context.resumption?.entry(for: name) {
            offered = saved.withUnsafeBytes { gnutls_session_set_data(session, $0.baseAddress, $0.count) } == GNUTLS_E_SUCCESS
        }
        if resumptionName != nil {
            // TLS 1.3 tickets arrive after the handshake, inside gnutls_record_recv.
            gnutls_handshake_set_hook_function(
                session, UInt32(GNUTLS_HANDSHAKE_NEW_SESSION_TICKET.rawValue), GNUTLS_HOOK_POST, ticketArrived)
        }

        self.expectedServerName = configuration.role == .client ? serverName : nil
        self.pinnedServerPublicKey = configuration.role == .client ? configuration.pinnedServerPublicKey : nil
        self.session = session
        self.resumptionName = resumptionName
        self.offeredSavedSession = offered

        let verifies = configuration.role == .client || configuration.clientAuthentication != .none
        if verifies {
            gnutls_session_set_verify_function(session, verifyPeer)
        }
        if configuration.keyLog != nil { gnutls_session_set_keylog_function(session, keyLogSecret) }

        // Unretained: the session object owns the gnutls session, not the other way round, so there is
        // no cycle. GnuTLS calls back only from inside calls this object makes, and never after deinit.
        let unretainedSelf = Unmanaged.passUnretained(self).toOpaque()
        gnutls_transport_set_ptr(session, unretainedSelf)
        gnutls_session_set_ptr(session, unretainedSelf)
        gnutls_transport_set_push_function(session, gnutlsPush)
        gnutls_transport_set_pull_function(session, gnutlsPull)
        gnutls_transport_set_pull_timeout_function(session, gnutlsPullTimeout)
    }

    deinit {
        gnutls_deinit(session)
    }

    /// The client identity the certificate callback offers (see `clientCertificateCallback`).
    var contextIdentity: ClientIdentity? { context.clientIdentity }
    /// The context's CRLs, for `verifyPeer` and resumed handshakes.
    var contextRevocation: RevocationList { context.revocation }
    /// The context's key log (`--keylog`), for `keyLogSecret`.
    var contextKeyLog: TLSKeyLog? { context.configuration.keyLog }

    private static func ownedBytes(_ bytes: [UInt8]) -> UnsafeMutableBufferPointer<UInt8> {
        let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(1, bytes.count))
        _ = buffer.initialize(from: bytes)
        return UnsafeMutableBufferPointer(rebasing: buffer[0..<bytes.count])
    }

    // MARK: - Ciphertext in and out

    public func receiveCiphertext(_ bytes: UnsafeRawBufferPointer) {
        let waiting = inbound.count + bytes.count
        if waiting > TLSSessionLimits.maximumUnprocessedCiphertext {
            if failure == nil { _ = fail(TLSSessionLimits.unprocessedCiphertextExceeded(waiting), code: nil) }
            return
        }
        scanner.scan(bytes)
        guard isHandshakeComplete && !renegotiating && failure == nil && !peerClosed && plaintext.count < plaintextLimit else {
            inbound.append(bytes)
            return
        }
        // Established: decrypt now, with GnuTLS pulling straight from the caller's bytes instead of
        // from a copy of them (it copies each record into its own buffer anyway). process() reports
        // the outcome as usual; what GnuTLS did not pull (a record cut by the read) is kept.
        inbound.lend(bytes)
        decryptAvailable()
        inbound.endLoan()
    }

    public func receiveEndOfInput() {
        inboundEnded = true
    }

    public var pendingCiphertextCount: Int { outbound.count }

    public func takeCiphertext(into buffer: inout [UInt8]) {
        outbound.take(into: &buffer)
    }

    // MARK: - Plaintext in and out

    public var pendingPlaintextCount: Int { plaintext.count }

    public func takePlaintext(into buffer: inout [UInt8], maxBytes: Int) {
        plaintext.move(into: &buffer, maxBytes: maxBytes)
    }

    public func writePlaintext(_ bytes: UnsafeRawBufferPointer) throws(TLSError) {
        if let failure { throw failure }
        guard !closeRequested && !peerCanceled else { throw TLSError(.sessionClosed) }
        if !isHandshakeComplete && unsent.count + bytes.count > TLSSessionLimits.maximumPlaintextBeforeHandshake {
            throw TLSSessionLimits.plaintextBeforeHandshakeExceeded(unsent.count + bytes.count)
        }
        guard isHandshakeComplete && !renegotiating && unsent.isEmpty else {
            unsent.append(bytes)
            if isHandshakeComplete && !renegotiating, let error = flushUnsent() { throw error }
            return
        }
        // Encrypted straight from the caller's bytes; only what GnuTLS does not take now is copied
        // into `unsent`.
        let (sent, code) = sendRecords(from: bytes)
        if let code { throw failSending(code) }
        if sent < bytes.count { unsent.append(UnsafeRawBufferPointer(rebasing: bytes[sent...])) }
    }

    public func close() {
        guard !closeRequested else { return }
        closeRequested = true
        // Before the handshake completes, close_notify waits for it (with any buffered plaintext).
        // After the peer canceled, GnuTLS sends nothing more.
        if isHandshakeComplete && failure == nil && !renegotiating && !peerCanceled {
            _ = flushUnsent()
            sendCloseNotify()
        }
    }

    // MARK: - The state machine

    public func process() -> TLSProgress {
        if let failure { return plaintext.isEmpty ? .failed(failure) : .plaintextReady }
        if !isHandshakeComplete { return advanceHandshake() }
        if renegotiating, let progress = advanceRenegotiation() { return progress }
        decryptAvailable()
        saveTicketIfPending()
        if !plaintext.isEmpty { return .plaintextReady }
        if let failure { return .failed(failure) }
        if peerClosed { return .peerClosed }
        return .needsInput
    }

    private func advanceHandshake() -> TLSProgress {
        while true {
            let pulledBefore = pulledCount
            let rc = gnutls_handshake(session)
            switch rc {
            case GNUTLS_E_SUCCESS:
                do throws(TLSError) {
                    try recordHandshakeResult()
                } catch {
                    return fail(error, sending: .badCertificate)
                }
                isHandshakeComplete = true
                offeredSavedSession = false
                if negotiatedVersion == .tls12 { ticketPending = ticketReceived }
                saveTicketIfPending()
                if let error = flushUnsent() { return fail(error, code: nil) }
                if closeRequested { sendCloseNotify() }
                return .handshakeComplete
            case GNUTLS_E_AGAIN, GNUTLS_E_INTERRUPTED:
                if let garbage = nonTLSInputError() { return fail(garbage, code: nil) }
                if readRecordAndMoreWaits(since: pulledBefore) { continue }
                if inboundEnded && inbound.isEmpty {
                    return fail(TLSError(.handshakeFailed(.unexpectedEOF)), code: nil)
                }
                return .needsInput
            case GNUTLS_E_WARNING_ALERT_RECEIVED:
                // A warning (e.g. unrecognized_name) does not end the handshake.
                continue
            default:
                return fail(code: rc, duringHandshake: true)
            }
        }
    }

    /// Continues a renegotiation this client started. Nil means: go on decrypting.
    private func advanceRenegotiation() -> TLSProgress? {
        while true {
            let pulledBefore = pulledCount
            let rc = gnutls_handshake(session)
            switch rc {
            case GNUTLS_E_SUCCESS:
                renegotiating = false
                if let error = flushUnsent() { return fail(error, code: nil) }
                if closeRequested { sendCloseNotify() }
                return nil
            case GNUTLS_E_AGAIN, GNUTLS_E_INTERRUPTED:
                if let garbage = nonTLSInputError() { return fail(garbage, code: nil) }
                if readRecordAndMoreWaits(since: pulledBefore) { continue }
                if inboundEnded && inbound.isEmpty {
                    return fail(TLSError(.uncleanShutdown), code: nil)
                }
                return plaintext.isEmpty ? .needsInput : .plaintextReady
            case GNUTLS_E_GOT_APPLICATION_DATA:
                return nil
            case GNUTLS_E_WARNING_ALERT_RECEIVED:
                let alert = gnutls_alert_get(session)
                if alert == GNUTLS_A_NO_RENEGOTIATION {
                    // The peer refused; a connection whose renegotiation failed is not used further.
                    return fail(TLSError(.peerSentAlert(.noRenegotiation), detail: GnuTLSLibrary.describe(rc)), code: nil)
                }
                continue
            default:
                return fail(code: rc, duringHandshake: false)
            }
        }
    }

    private func decryptAvailable() {
        while failure == nil && !peerClosed && plaintext.count < plaintextLimit {
            // Decrypted straight into the plaintext queue, as many records as are in: what is
            // buffered as ciphertext bounds what it decrypts to, plus a record GnuTLS may hold.
            let room = min(plaintextLimit - plaintext.count, inbound.count + Self.maxRecordPlaintext)
            var pulledBefore = pulledCount
            var count = 0
            plaintext.append(upTo: room) { buffer in
                var filled = 0
                repeat {
                    pulledBefore = pulledCount
                    count = gnutls_record_recv(session, buffer.baseAddress! + filled, buffer.count - filled)
                    if count > 0 {
                        filled += count
                        warningAlerts.dataReceived()
                    }
                } while count > 0 && filled < buffer.count
                return filled
            }
            if count > 0 { continue }  // the room is full; there may be more
            if count == 0 {
                peerClosed = true
                return
            }
            let rc = Int32(truncatingIfNeeded: count)
            switch rc {
            case GNUTLS_E_AGAIN, GNUTLS_E_INTERRUPTED:
                if let garbage = nonTLSInputError() {
                    _ = fail(garbage, code: nil)
                } else if inboundEnded && inbound.isEmpty {
                    _ = fail(TLSError(.uncleanShutdown), code: nil)
                } else if readRecordAndMoreWaits(since: pulledBefore) {
                    // E.g. a TLS 1.3 session ticket, with application records behind it.
                    continue
                }
                return
            case GNUTLS_E_REHANDSHAKE:
                if negotiatedVersion == .tls13 {
                    continue  // a TLS 1.3 key update, handled inside GnuTLS
                }
                // Renegotiation is refused on both sides. RFC 5246 makes no_renegotiation a warning;
                // a server then ends the connection, a client ignores the HelloRequest (as OpenSSL does).
                _ = gnutls_alert_send(session, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION)
                if role == .server {
                    _ = fail(TLSError(.renegotiationRefused, detail: GnuTLSLibrary.describe(rc)), code: nil)
                    return
                }
                continue
            case GNUTLS_E_WARNING_ALERT_RECEIVED:
                // TLS 1.2 only (GnuTLS reports every TLS 1.3 alert as fatal): e.g. user_canceled. The
                // contract's rules, which OpenSSL applies itself (see PeerWarningAlerts).
                if gnutls_alert_get(session) == GNUTLS_A_NO_RENEGOTIATION {
                    _ = fail(TLSError(.malformedInput, detail: PeerWarningAlerts.noRenegotiationRefusal), sending: .handshakeFailure)
                    return
                }
                if !warningAlerts.admitWarning() {
                    _ = fail(TLSError(.malformedInput, detail: PeerWarningAlerts.floodRefusal), sending: .unexpectedMessage)
                    return
                }
                continue
            case GNUTLS_E_TOO_MANY_HANDSHAKE_PACKETS where negotiatedVersion == .tls13:
                // After the handshake only KeyUpdates are counted so (lib/tls13/key_update.c): the
                // contract's PeerKeyUpdateLimit, which GnuTLS applies itself. No alert, as from the
                // OpenSSL backend, which cannot send one of its choosing; GnuTLS's own pick would be
                // internal_error, which blames us.
                _ = fail(TLSError(.malformedInput, detail: PeerKeyUpdateLimit.refusal + " [" + GnuTLSLibrary.describe(rc) + "]"),
                         code: nil)
                return
            case GNUTLS_E_FATAL_ALERT_RECEIVED where negotiatedVersion == .tls13 && gnutls_alert_get(session) == GNUTLS_A_USER_CANCELED:
                // RFC 8446 §6.1: user_canceled is a closure alert, not an error, and data after a
                // closure alert MUST be ignored. All the plaintext before it has been delivered and the
                // alert is authenticated: the peer's clean end. GnuTLS has given the session up, so the
                // close_notify that follows cannot be read anyway. (OpenSSL ignores user_canceled at
                // either level and reads on to the close_notify: the same outcome, except that
                // user_canceled then EOF is an unclean shutdown there.)
                peerCanceled = true
                peerClosed = true
                return
            default:
                _ = fail(code: rc, duringHandshake: false)
                return
            }
        }
    }

    /// Encrypts buffered plaintext, one record (at most 16 KiB) per gnutls_record_send call.
    private func flushUnsent() -> TLSError? {
        guard !unsent.isEmpty else { return nil }
        let (sent, code) = unsent.withUnsafeReadableBytes { sendRecords(from: $0) }
        unsent.consume(sent)
        return code.map(failSending)
    }

    /// Encrypts `bytes`, one record (at most 16 KiB) per gnutls_record_send call, the first at
    /// `sendRetryLength` when GnuTLS asked for a retry. Returns how many bytes it took, and the code
    /// of the error that stopped it; E_AGAIN (which an in-memory push never returns) stops it with
    /// no error and `sendRetryLength` set, since GnuTLS wants the same length again. Fails nothing
    /// itself: `flushUnsent` calls it over `unsent`, which failing empties.
    private func sendRecords(from bytes: UnsafeRawBufferPointer) -> (sent: Int, error: Int32?) {
        var offset = 0
        while offset < bytes.count {
            let length = sendRetryLength ?? min(bytes.count - offset, Self.maxRecordPlaintext)
            let sent = gnutls_record_send(session, bytes.baseAddress! + offset, length)
            if sent > 0 {
                offset += sent
                sendRetryLength = nil
                continue
            }
            let rc = Int32(truncatingIfNeeded: sent)
            if rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED {
                sendRetryLength = length
                return (offset, nil)
            }
            return (offset, rc)
        }
        return (offset, nil)
    }

    /// Ends the session for a gnutls_record_send error; the error, for the caller to report.
    private func failSending(_ code: Int32) -> TLSError {
        let error = mapError(code, duringHandshake: false)
        _ = fail(error, code: code)
        return error
    }

    private func sendCloseNotify() {
        guard !closeNotifySent else { return }
        closeNotifySent = true
        // Non-blocking with an in-memory push: the alert is queued in `outbound` at once.
        _ = gnutls_bye(session, GNUTLS_SHUT_WR)
    }

    // MARK: - Resumption

    /// Whether the server sent a ticket in this connection (TLS 1.2: during the handshake).
    private var ticketReceived: Bool {
        gnutls_session_get_flags(session) & GNUTLS_SFLAGS_SESSION_TICKET.rawValue != 0
    }

    /// Saves the resumption data once a ticket is in: in TLS 1.3, gnutls_session_get_data2 gives
    /// resumable data only after a NewSessionTicket was received, so it is read then, not earlier.
    private func saveTicketIfPending() {
        guard ticketPending, isHandshakeComplete, failure == nil else { return }
        ticketPending = false
        guard let name = resumptionName, let cache = context.resumption else { return }
        var datum = gnutls_datum_t()
        guard gnutls_session_get_data2(session, &datum) == GNUTLS_E_SUCCESS, let data = datum.data else { return }
        // Allocated by GnuTLS for us; copied and freed at once.
        let bytes = Array(UnsafeBufferPointer(start: data, count: Int(datum.size)))
        mtls_gnutls_free(data)
        cache.store(bytes, for: name, usableUntil: (peerIdentity ?? verifiedIdentity)?.notValidAfter)
    }

    // MARK: - Failure

    private func fail(code: Int32, duringHandshake: Bool) -> TLSProgress {
        fail(mapError(code, duringHandshake: duringHandshake), code: code)
    }

    /// Records the failure and queues the alert the peer should see. `code` picks GnuTLS's own alert
    /// when no better one is known; nil sends nothing (EOF, or the peer already aborted).
    private func fail(_ error: TLSError, code: Int32?) -> TLSProgress {
        forgetOfferedSession()
        if failure == nil {
            failure = error
            unsent.removeAll()
            if let alert = alert(for: error.reason) {
                _ = gnutls_alert_send(session, GNUTLS_AL_FATAL, gnutls_alert_description_t(UInt32(alert.code)))
            } else if let code, sendsAlert(error.reason) {
                _ = gnutls_alert_send_appropriate(session, code)
            }
        }
        return plaintext.isEmpty ? .failed(failure!) : .plaintextReady
    }

    private func fail(_ error: TLSError, sending alert: TLSAlert) -> TLSProgress {
        forgetOfferedSession()
        if failure == nil {
            failure = error
            unsent.removeAll()
            _ = gnutls_alert_send(session, GNUTLS_AL_FATAL, gnutls_alert_description_t(UInt32(alert.code)))
        }
        return plaintext.isEmpty ? .failed(failure!) : .plaintextReady
    }

    /// A handshake that offered saved data and failed forgets it, so that a server which cannot cope
    /// with it costs one failure, not every later connection.
    private func forgetOfferedSession() {
        guard offeredSavedSession, let name = resumptionName else { return }
        offeredSavedSession = false
        context.resumption?.removeEntry(for: name)
    }

    private func sendsAlert(_ reason: TLSError.Reason) -> Bool {
        switch reason {
        case .peerSentAlert, .uncleanShutdown, .handshakeFailed(.unexpectedEOF), .renegotiationRefused:
            return false
        default:
            return true
        }
    }

    /// The alerts OpenSSL sends for the same refusals, so a peer sees the same alert from either backend
    /// (GnuTLS would send bad_certificate for every verification failure).
    private func alert(for reason: TLSError.Reason) -> TLSAlert? {
        guard case .certificateRejected(let problem) = reason else { return nil }
        switch problem {
        case .missing: return negotiatedVersion == .tls13 ? .certificateRequired : .handshakeFailure
        case .untrustedIssuer: return .unknownCA
        case .expired: return .certificateExpired
        case .notYetValid: return .badCertificate
        case .wrongUsage: return .unsupportedCertificate
        case .wrongName: return .handshakeFailure
        case .notAuthorized: return .accessDenied
        case .insecureAlgorithm: return .badCertificate
        case .revoked: return .certificateRevoked
        case .crlExpired: return .certificateExpired
        case .invalid: return .badCertificate
        }
    }

    private var negotiatedVersion: TLSVersion? {
        switch gnutls_protocol_get_version(session) {
        case GNUTLS_TLS1_3: return .tls13
        case GNUTLS_TLS1_2: return .tls12
        default: return nil
        }
    }

    /// Whether a GnuTLS call that just returned E_AGAIN should be made again at once.
    ///
    /// GnuTLS reads one record per attempt and pulls exactly its bytes. A record that completes no
    /// message (a handshake message cut across records, a ClientHello over 16 KiB, a session ticket)
    /// ends the call with E_AGAIN even when more whole records wait in `inbound`, and nobody would
    /// call again: the caller only hears `.needsInput`. So: again while the call consumed input and
    /// some is left. Each retry consumes at least one byte or stops, so this cannot spin.
    private func readRecordAndMoreWaits(since pulledBefore: Int) -> Bool {
        pulledCount > pulledBefore && !inbound.isEmpty
    }

    /// GnuTLS waits for the body of a "record" whose header is nonsense; there is no point.
    private func nonTLSInputError() -> TLSError? {
        guard let offset = scanner.firstBadHeaderOffset, pulledCount > offset else { return nil }
        return TLSError(.malformedInput, detail: "the peer sent bytes that do not frame as TLS records")
    }

    private func mapError(_ code: Int32, duringHandshake: Bool) -> TLSError {
        if code == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR, let policyRefusal { return policyRefusal }
        let detail = GnuTLSLibrary.describe(code)
        var plaintextAlert: UInt8?
        if let alert = scanner.lastPlaintextAlert, pulledCount >= alert.end {
            plaintextAlert = alert.description
        }
        let reason = GnuTLSErrors.reason(
            for: code,
            role: role,
            duringHandshake: duringHandshake,
            sentNonTLS: scanner.firstBadHeaderOffset.map { pulledCount > $0 } ?? false,
            transportEnded: inboundEnded && inbound.isEmpty,
            plaintextAlert: plaintextAlert,
            verifyStatus: { verifyStatus },
            peerSentCertificate: { peerCertificateCount > 0 },
            receivedAlert: { UInt8(truncatingIfNeeded: gnutls_alert_get(session).rawValue) })
        if case .peerSentAlert = reason, code != GNUTLS_E_FATAL_ALERT_RECEIVED {
            return TLSError(reason, detail: detail + " (GnuTLS's report of the peer's alert)")
        }
        return TLSError(reason, detail: detail)
    }

    private var peerCertificateCount: Int {
        var count: UInt32 = 0
        _ = gnutls_certificate_get_peers(session, &count)
        return Int(count)
    }

    // MARK: - What was negotiated

    private func recordHandshakeResult() throws(TLSError) {
        guard let version = negotiatedVersion else {
            throw TLSError(.noSharedVersion, detail: "GnuTLS negotiated a version outside TLS 1.2...1.3")
        }
        var group: String?
        let negotiatedGroup = gnutls_group_get(session)
        if negotiatedGroup != GNUTLS_GROUP_INVALID, let name = gnutls_group_get_name(negotiatedGroup) {
            group = NamedGroup.canonicalName(String(cString: name))
        }
        var protocolDatum = gnutls_datum_t()
        var applicationProtocol: String?
        if gnutls_alpn_get_selected_protocol(session, &protocolDatum) == GNUTLS_E_SUCCESS, let data = protocolDatum.data {
            // Points into session memory valid until the next handshake; copied at once.
            applicationProtocol = String(decoding: UnsafeBufferPointer(start: data, count: Int(protocolDatum.size)), as: UTF8.self)
        }
        let parameters = NegotiatedParameters(
            version: version,
            cipherSuite: CipherSuitePolicy.name(for: cipherSuiteCodePoint(version: version)),
            group: group,
            applicationProtocol: applicationProtocol,
            resumed: gnutls_session_is_resumed(session) != 0)

        if parameters.resumed {
            // No verification ran: the identity comes from the resumed session's data, accepted
            // only while the certificate is still valid.
            let chain = peerCertificateChain()
            peerIdentity = chain.isEmpty ? nil : try PeerVerification.checkResumed(chainDER: chain, revocation: context.revocation)
        } else {
            peerIdentity = verifiedIdentity
        }
        // Only now: a resumption refused above leaves nothing negotiated, as on OpenSSL.
        negotiated = parameters
    }

    /// The peer's certificates as it sent them (or as the resumed session recorded them), leaf
    /// first. The array and its data belong to the session and change on the next handshake: copied.
    fileprivate func peerCertificateChain() -> [[UInt8]] {
        var count: UInt32 = 0
        guard let list = gnutls_certificate_get_peers(session, &count), count > 0 else { return [] }
        return (0..<Int(count)).map { index in
            Array(UnsafeBufferPointer(start: list[index].data, count: Int(list[index].size)))
        }
    }

    private func cipherSuiteCodePoint(version: TLSVersion) -> UInt16 {
        let cipher = gnutls_cipher_get(session)
        if version == .tls13 {
            switch cipher {
            case GNUTLS_CIPHER_AES_128_GCM: return 0x1301
            case GNUTLS_CIPHER_AES_256_GCM: return 0x1302
            case GNUTLS_CIPHER_CHACHA20_POLY1305: return 0x1303
            default: return 0
            }
        }
        let kx = gnutls_kx_get(session)
        let mac = gnutls_mac_get(session)
        var index = 0
        var id: (UInt8, UInt8) = (0, 0)
        var suiteKX = GNUTLS_KX_UNKNOWN
        var suiteCipher = GNUTLS_CIPHER_UNKNOWN
        var suiteMAC = GNUTLS_MAC_UNKNOWN
        var minimum = GNUTLS_VERSION_UNKNOWN
        while true {
            let name = withUnsafeMutableBytes(of: &id) { raw in
                gnutls_cipher_suite_info(index, raw.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                         &suiteKX, &suiteCipher, &suiteMAC, &minimum)
            }
            guard name != nil else { return 0 }
            if suiteKX == kx && suiteCipher == cipher && suiteMAC == mac {
                return UInt16(id.0) << 8 | UInt16(id.1)
            }
            index += 1
        }
    }
}

@_spi(Testing)
extension GnuTLSSession: TLSSessionTestHooks {
    public func sendKeyUpdates(_ count: Int, requestingPeer: Bool) throws(TLSError) {
        guard failure == nil, !closeRequested, isHandshakeComplete, negotiatedVersion == .tls13 else {
            throw TLSError(.sessionClosed, detail: "key updates need an established TLS 1.3 session")
        }
        for _ in 0..<count {
            // The push function takes every byte, so the update goes out whole (into `outbound`).
            let rc = gnutls_session_key_update(session, requestingPeer ? UInt32(GNUTLS_KU_PEER) : 0)
            guard rc == GNUTLS_E_SUCCESS else { throw TLSError(.internalError, detail: GnuTLSLibrary.describe(rc)) }
        }
    }

    public func startRenegotiation() throws(TLSError) {
        guard failure == nil, !closeRequested else { throw TLSError(.sessionClosed) }
        guard role == .client, isHandshakeComplete, negotiatedVersion == .tls12 else {
            throw TLSError(.handshakeFailed(.other), detail: "renegotiation needs an established TLS 1.2 client session")
        }
        renegotiating = true
        let rc = gnutls_handshake(session)
        switch rc {
        case GNUTLS_E_SUCCESS:
            renegotiating = false
        case GNUTLS_E_AGAIN, GNUTLS_E_INTERRUPTED:
            break
        default:
            renegotiating = false
            let error = mapError(rc, duringHandshake: false)
            _ = fail(error, code: rc)
            throw error
        }
    }

    /// Sends a warning alert after the handshake, as peers that are not ours do: JSSE sends
    /// user_canceled right before close_notify whenever it closes a TLS 1.3 socket.
    public func sendWarningAlert(_ alert: TLSAlert) throws(TLSError) {
        guard isHandshakeComplete, failure == nil, !closeNotifySent else { throw TLSError(.sessionClosed) }
        let rc = gnutls_alert_send(session, GNUTLS_AL_WARNING, gnutls_alert_description_t(UInt32(alert.code)))
        guard rc == GNUTLS_E_SUCCESS else { throw TLSError(.internalError, detail: GnuTLSLibrary.describe(rc)) }
    }
}

// MARK: - Transport callbacks

// Capture-free C callbacks. The transport pointer is the unretained GnuTLSSession that owns the
// gnutls session (see `init`), valid for as long as GnuTLS can call these.

private func gnutlsPush(_ pointer: gnutls_transport_ptr_t?, _ data: UnsafeRawPointer?, _ size: Int) -> Int {
    guard let pointer else { return -1 }
    let owner = Unmanaged<GnuTLSSession>.fromOpaque(pointer).takeUnretainedValue()
    if size > 0, let data {
        owner.outbound.append(UnsafeRawBufferPointer(start: data, count: size))
    }
    return size
}

private func gnutlsPull(_ pointer: gnutls_transport_ptr_t?, _ data: UnsafeMutableRawPointer?, _ size: Int) -> Int {
    guard let pointer else { return -1 }
    let owner = Unmanaged<GnuTLSSession>.fromOpaque(pointer).takeUnretainedValue()
    if owner.inbound.isEmpty {
        if owner.inboundEnded { return 0 }
        gnutls_transport_set_errno(owner.session, mtls_eagain())
        return -1
    }
    let count = owner.inbound.read(into: UnsafeMutableRawBufferPointer(start: data, count: size))
    owner.pulledCount += count
    return count
}

/// Verifies the peer's chain against our trust roots (GnuTLS), then applies the contract's rules
/// (names, key purpose, chain length: PeerVerification). Runs inside gnutls_handshake; it records
/// its findings on the owner and never calls into the session's state machine.
private func verifyPeer(_ session: gnutls_session_t?) -> Int32 {
    guard let session, let pointer = gnutls_session_get_ptr(session) else { return GNUTLS_E_INTERNAL_ERROR }
    let owner = Unmanaged<GnuTLSSession>.fromOpaque(pointer).takeUnretainedValue()
    let chain = owner.peerCertificateChain()
    if chain.isEmpty {
        // A server asking with `.optional` accepts no certificate; `.require` is enforced by GnuTLS
        // before this runs, and a client always needs one.
        return owner.role == .server ? GNUTLS_E_SUCCESS : GNUTLS_E_NO_CERTIFICATE_FOUND
    }
    // A chain this context verified in full before (VerifiedChainCache) skips GnuTLS's verification;
    // the peer's CertificateVerify is still checked by GnuTLS.
    let cache = owner.contextVerifiedChains
    let probe = cache?.probe(presentedChainDER: chain, peerRole: owner.role == .server ? .client : .server,
                             expectedName: owner.expectedServerName, pinnedPublicKey: owner.pinnedServerPublicKey)
    if let hit = probe?.hit {
        owner.verifiedIdentity = hit.identity
        return GNUTLS_E_SUCCESS
    }
    var status: UInt32 = 0
    let rc = gnutls_certificate_verify_peers(session, nil, 0, &status)
    if rc < 0 {
        owner.verifyStatus = GNUTLS_CERT_INVALID.rawValue
        return rc
    }
    owner.verifyStatus = status
    if status & GNUTLS_CERT_REVOKED.rawValue != 0 {
        // GnuTLS matched the issuer name and serial only: the contract's rule decides how to word it
        // (and whether the CRL was authentic and current). Refused either way.
        do throws(TLSError) {
            try owner.contextRevocation.check(path: try PeerIdentity.parsingCached(certificateChainDER: chain).certificateChainDER)
            owner.policyRefusal = RevocationList.revokedByLibrary(chain.first, library: "GnuTLS")
        } catch {
            owner.policyRefusal = error
        }
        return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR
    }
    guard status == 0 else { return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR }
    do throws(TLSError) {
        let identity = try PeerVerification.check(
            chainDER: chain, peerRole: owner.role == .server ? .client : .server,
            expectedName: owner.expectedServerName, pinnedPublicKey: owner.pinnedServerPublicKey,
            revocation: owner.contextRevocation)
        owner.verifiedIdentity = identity
        if let cache, let probe { cache.insert(probe, identity: identity, verifiedChainDER: identity.certificateChainDER) }
        return GNUTLS_E_SUCCESS
    } catch {
        owner.policyRefusal = error
        return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR
    }
}

/// Client: a TLS 1.3 NewSessionTicket has been processed and stored in the session. Only marks the
/// owner; the data is read after GnuTLS returns (see `saveTicketIfPending`).
private func ticketArrived(
    _ session: gnutls_session_t?, _ type: UInt32, _ when: UInt32, _ incoming: UInt32, _ message: UnsafePointer<gnutls_datum_t>?
) -> Int32 {
    guard let session, incoming != 0, let pointer = gnutls_session_get_ptr(session) else { return 0 }
    Unmanaged<GnuTLSSession>.fromOpaque(pointer).takeUnretainedValue().ticketPending = true
    return 0
}

private func gnutlsPullTimeout(_ pointer: gnutls_transport_ptr_t?, _ milliseconds: UInt32) -> Int32 {
    guard let pointer else { return -1 }
    let owner = Unmanaged<GnuTLSSession>.fromOpaque(pointer).takeUnretainedValue()
    // Never waits: "timed out" (0) when empty makes GnuTLS return E_AGAIN to us.
    return owner.inbound.isEmpty && !owner.inboundEnded ? 0 : 1
}

/// `--keylog`: GnuTLS hands over each secret with its NSS label as it derives it (CLIENT_RANDOM with
/// the master secret in TLS 1.2; the handshake, traffic and exporter secrets in TLS 1.3). A key log
/// line names the connection by the client random, which GnuTLS knows by then. The secret goes to the
/// key log only.
private func keyLogSecret(_ session: gnutls_session_t?, _ label: UnsafePointer<CChar>?,
                          _ secret: UnsafePointer<gnutls_datum_t>?) -> Int32 {
    guard let session, let label, let secret, let pointer = gnutls_session_get_ptr(session),
          let keyLog = Unmanaged<GnuTLSSession>.fromOpaque(pointer).takeUnretainedValue().contextKeyLog
    else { return 0 }
    var clientRandom = gnutls_datum_t()
    var serverRandom = gnutls_datum_t()
    gnutls_session_get_random(session, &clientRandom, &serverRandom)
    keyLog.append(label: String(cString: label),
                  clientRandom: UnsafeRawBufferPointer(start: clientRandom.data, count: Int(clientRandom.size)),
                  secret: UnsafeRawBufferPointer(start: secret.pointee.data, count: Int(secret.pointee.size)))
    return 0
}
