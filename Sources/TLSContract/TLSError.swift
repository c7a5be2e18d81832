/// One error vocabulary for every backend: the same failure yields the same `Reason`,
/// whichever library detected it. The library's own words are kept in `detail`, for logs only.
public struct TLSError: Error, Sendable, CustomStringConvertible {
    public enum Reason: Hashable, Sendable {
        /// A credential or setting could not be used. `file` names the file (or in-memory label).
        case configuration(file: String?, problem: ConfigurationProblem)
        /// We rejected the peer's certificate.
        case certificateRejected(CertificateProblem)
        /// The peer aborted the handshake or connection with a fatal alert.
        case peerSentAlert(TLSAlert)
        /// The peers share no protocol version within the configured range.
        case noSharedVersion
        /// The peers share no cipher suite within the policy.
        case noSharedCipher
        /// The handshake failed for a reason other than the ones above.
        case handshakeFailed(HandshakeProblem)
        /// The peer sent bytes that are not valid TLS (garbage, an oversized record, a bad MAC), or
        /// broke the protocol after the handshake (an unexpected message, more key updates than
        /// `PeerKeyUpdateLimit` allows): the same case from both backends.
        case malformedInput
        /// The peer tried to renegotiate, which we never allow.
        case renegotiationRefused
        /// The transport ended after the handshake without a close_notify: data may be truncated.
        case uncleanShutdown
        /// The handshake did not finish in time.
        case handshakeTimeout
        /// The connection was idle for longer than allowed.
        case idleTimeout
        /// The session was used after it closed or failed.
        case sessionClosed
        /// A caller fed or wrote more than a session buffers (see `TLSSessionLimits`).
        case bufferLimitExceeded
        /// The library failed internally (out of memory, an unexpected state).
        case internalError
    }

    public enum ConfigurationProblem: Hashable, Sendable {
        case fileNotFound
        case fileUnreadable
        case noCertificateInPEM
        case noPrivateKeyInPEM
        case invalidCertificate
        case invalidPrivateKey
        case keyDoesNotMatchCertificate
        case wrongPKCS12Password
        case invalidPKCS12
        case noTrustRoots
        case missingIdentity
        case invalidVersionRange
        /// A client configured with neither a server name nor a pinned server key.
        case missingServerName
        case invalidSetting(String)
        /// A CRL file that holds no CRL, or one that does not parse.
        case invalidCRL
        /// Our own certificate is not valid yet (refused on reload: the previous one keeps serving).
        case certificateNotYetValid
        /// Our own certificate has expired (refused on reload).
        case certificateExpired
    }

    public enum CertificateProblem: Hashable, Sendable {
        /// Required but not presented.
        case missing
        /// Not signed by a trusted root: unknown issuer, self-signed, forged signature.
        case untrustedIssuer
        case expired
        case notYetValid
        /// None of the certificate's names matches the expected server name.
        case wrongName
        /// The extended key usage does not allow this role (serverAuth / clientAuth).
        case wrongUsage
        /// Rejected by the application's authorization policy (or a pinned key that does not match).
        case notAuthorized
        /// A key or signature below the policy's floor somewhere in the chain: an RSA key under
        /// 2048 bits, a SHA-1 or MD5 signature.
        case insecureAlgorithm
        /// Listed in a CRL of its issuer (see `RevocationList`); the detail names the serial.
        case revoked
        /// The CRL covering it is past its nextUpdate: its revocation status is unknown, and that is
        /// a refusal (see `RevocationList`).
        case crlExpired
        /// Unparseable, or otherwise invalid (a CRL for its issuer that is not signed by it, too).
        case invalid
    }

    public enum HandshakeProblem: Hashable, Sendable {
        /// The transport closed before the handshake finished.
        case unexpectedEOF
        /// The peer violated the protocol.
        case protocolViolation
        case other
    }

    public var reason: Reason
    /// The backend library's own description, for logs. Never contains key material.
    public var detail: String
    /// Who the error concerns (a peer address or name), when known.
    public var peer: String?

    public init(_ reason: Reason, detail: String = "", peer: String? = nil) {
        self.reason = reason
        self.detail = detail
        self.peer = peer
    }

    public func withPeer(_ peer: String?) -> TLSError {
        var copy = self
        if copy.peer == nil { copy.peer = peer }
        return copy
    }

    /// What went wrong, in words a user understands.
    public var summary: String {
        switch reason {
        case .configuration(let file, let problem):
            let subject = file.map { "\($0): " } ?? ""
            return subject + problem.summary
        case .certificateRejected(let problem):
            return "the peer's certificate was rejected: " + problem.summary
        case .peerSentAlert(let alert):
            return "the peer ended the connection with the alert '\(alert.name)'" + alert.hint
        case .noSharedVersion:
            return "the peer offers no TLS version we accept (TLS 1.2 or 1.3 only)"
        case .noSharedCipher:
            return "the peer offers no cipher suite within the policy (ECDHE with AES-GCM or ChaCha20-Poly1305)"
        case .handshakeFailed(.unexpectedEOF):
            return "the connection closed during the handshake"
        case .handshakeFailed(.protocolViolation):
            return "the handshake failed: the peer violated the TLS protocol"
        case .handshakeFailed(.other):
            return "the handshake failed"
        case .malformedInput:
            return "the peer sent data that is not valid TLS"
        case .renegotiationRefused:
            return "the peer tried to renegotiate, which is refused"
        case .uncleanShutdown:
            return "the connection ended without a TLS close_notify; data may have been truncated"
        case .handshakeTimeout:
            return "the handshake did not finish in time"
        case .idleTimeout:
            return "the connection was idle for too long"
        case .sessionClosed:
            return "the TLS session is already closed"
        case .bufferLimitExceeded:
            return "more data was handed to the TLS session than it buffers (the caller ignored backpressure)"
        case .internalError:
            return "the TLS library failed internally"
        }
    }

    public var description: String {
        var text = summary
        if let peer { text = "\(peer): " + text }
        if !detail.isEmpty { text += " [\(detail)]" }
        return text
    }
}

extension TLSError.ConfigurationProblem {
    public var summary: String {
        switch self {
        case .fileNotFound: return "file not found"
        case .fileUnreadable: return "file cannot be read (check its permissions)"
        case .noCertificateInPEM: return "no certificate found in the PEM data"
        case .noPrivateKeyInPEM: return "no private key found in the PEM data"
        case .invalidCertificate: return "the certificate cannot be parsed"
        case .invalidPrivateKey: return "the private key cannot be parsed (or is encrypted)"
        case .keyDoesNotMatchCertificate: return "the private key does not match the certificate"
        case .wrongPKCS12Password: return "wrong PKCS#12 password"
        case .invalidPKCS12: return "not a valid PKCS#12 bundle"
        case .noTrustRoots: return "no trusted CA configured, so the peer cannot be verified (use --ca)"
        case .missingIdentity:
            return "no certificate and key configured, but this role needs one (use --cert/--key or --pki)"
        case .invalidVersionRange: return "the minimum TLS version is above the maximum"
        case .missingServerName:
            return "a client must name the server it expects (--server-name) or pin its key; no name check is never the default"
        case .invalidSetting(let what): return "invalid setting: \(what)"
        case .invalidCRL: return "not a CRL (PEM with X509 CRL blocks, or DER)"
        case .certificateNotYetValid: return "the certificate is not valid yet"
        case .certificateExpired: return "the certificate has expired"
        }
    }
}

extension TLSError.CertificateProblem {
    public var summary: String {
        switch self {
        case .missing: return "a certificate is required and none was presented"
        case .untrustedIssuer: return "it is not signed by a trusted authority"
        case .expired: return "it has expired"
        case .notYetValid: return "it is not valid yet"
        case .wrongName: return "it is not issued for the name that was requested"
        case .wrongUsage: return "its extended key usage does not allow this role"
        case .notAuthorized: return "its identity is not allowed (allow list or pinned key)"
        case .insecureAlgorithm: return "its chain uses a key or signature below the floor (RSA under 2048 bits, SHA-1)"
        case .revoked: return "it has been revoked (listed in its issuer's CRL)"
        case .crlExpired: return "the CRL of its issuer has expired (past its nextUpdate), so its revocation status is unknown"
        case .invalid: return "it is invalid"
        }
    }
}

/// A TLS alert description code (RFC 8446 §6).
public struct TLSAlert: Hashable, Sendable, CustomStringConvertible {
    public let code: UInt8
    public init(code: UInt8) { self.code = code }

    public static let closeNotify = TLSAlert(code: 0)
    public static let unexpectedMessage = TLSAlert(code: 10)
    public static let badRecordMAC = TLSAlert(code: 20)
    public static let recordOverflow = TLSAlert(code: 22)
    public static let handshakeFailure = TLSAlert(code: 40)
    public static let badCertificate = TLSAlert(code: 42)
    public static let unsupportedCertificate = TLSAlert(code: 43)
    public static let certificateRevoked = TLSAlert(code: 44)
    public static let certificateExpired = TLSAlert(code: 45)
    public static let certificateUnknown = TLSAlert(code: 46)
    public static let illegalParameter = TLSAlert(code: 47)
    public static let unknownCA = TLSAlert(code: 48)
    public static let accessDenied = TLSAlert(code: 49)
    public static let decodeError = TLSAlert(code: 50)
    public static let decryptError = TLSAlert(code: 51)
    public static let protocolVersion = TLSAlert(code: 70)
    public static let insufficientSecurity = TLSAlert(code: 71)
    public static let internalError = TLSAlert(code: 80)
    public static let userCanceled = TLSAlert(code: 90)
    public static let noRenegotiation = TLSAlert(code: 100)
    public static let missingExtension = TLSAlert(code: 109)
    public static let unsupportedExtension = TLSAlert(code: 110)
    public static let unrecognizedName = TLSAlert(code: 112)
    public static let certificateRequired = TLSAlert(code: 116)
    public static let noApplicationProtocol = TLSAlert(code: 120)

    public var name: String {
        switch code {
        case 0: return "close_notify"
        case 10: return "unexpected_message"
        case 20: return "bad_record_mac"
        case 22: return "record_overflow"
        case 40: return "handshake_failure"
        case 42: return "bad_certificate"
        case 43: return "unsupported_certificate"
        case 44: return "certificate_revoked"
        case 45: return "certificate_expired"
        case 46: return "certificate_unknown"
        case 47: return "illegal_parameter"
        case 48: return "unknown_ca"
        case 49: return "access_denied"
        case 50: return "decode_error"
        case 51: return "decrypt_error"
        case 70: return "protocol_version"
        case 71: return "insufficient_security"
        case 80: return "internal_error"
        case 90: return "user_canceled"
        case 100: return "no_renegotiation"
        case 109: return "missing_extension"
        case 110: return "unsupported_extension"
        case 112: return "unrecognized_name"
        case 116: return "certificate_required"
        case 120: return "no_application_protocol"
        default: return "alert \(code)"
        }
    }

    /// What the alert most likely means for a user configuring mTLS.
    var hint: String {
        switch code {
        case 116: return " (the peer requires a client certificate and none was configured: use --cert/--key or --pki)"
        case 48: return " (the peer does not trust the authority that signed our certificate)"
        case 42, 46: return " (the peer rejected our certificate)"
        case 45: return " (the peer says our certificate has expired)"
        case 44: return " (the peer has revoked our certificate: it is listed in the peer's CRL)"
        case 70: return " (the peer does not accept our TLS versions)"
        case 40: return " (no common parameters, or our certificate was refused)"
        default: return ""
        }
    }

    public var description: String { name }
}
