import CGnuTLS
import TLSContract

/// GnuTLS error codes mapped onto the shared vocabulary; must agree with the OpenSSL backend.
enum GnuTLSErrors {
    static func reason(
        for code: Int32,
        role: TLSConfiguration.Role,
        duringHandshake: Bool,
        sentNonTLS: Bool,
        transportEnded: Bool,
        plaintextAlert: UInt8?,
        verifyStatus: () -> UInt32,
        peerSentCertificate: () -> Bool,
        receivedAlert: () -> UInt8
    ) -> TLSError.Reason {
        switch code {
        case GNUTLS_E_FATAL_ALERT_RECEIVED:
            return .peerSentAlert(TLSAlert(code: receivedAlert()))
        case GNUTLS_E_PREMATURE_TERMINATION:
            return duringHandshake ? .handshakeFailed(.unexpectedEOF) : .uncleanShutdown
        case GNUTLS_E_UNEXPECTED_PACKET_LENGTH where transportEnded:
            // The transport ended in the middle of a record: a truncation, as OpenSSL reports it.
            return duringHandshake ? .handshakeFailed(.unexpectedEOF) : .uncleanShutdown
        case GNUTLS_E_MEMORY_ERROR, GNUTLS_E_INTERNAL_ERROR:
            return .internalError
        default:
            break
        }
        // Whatever GnuTLS calls it (UNSUPPORTED_VERSION_PACKET, UNEXPECTED_PACKET, ...), a record
        // header that cannot be TLS means the peer does not speak TLS, not that it speaks an old version.
        if sentNonTLS {
            return .malformedInput
        }
        // OpenSSL clients abort a TLS 1.3 handshake with an unencrypted alert before they switch keys;
        // GnuTLS, already expecting encrypted records, reports it as a decryption failure.
        if code == GNUTLS_E_DECRYPTION_FAILED && duringHandshake, let alert = plaintextAlert {
            return .peerSentAlert(TLSAlert(code: alert))
        }
        switch code {
        case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
            return .certificateRejected(certificateProblem(status: verifyStatus()))
        case GNUTLS_E_CERTIFICATE_ERROR:
            return .certificateRejected(peerSentCertificate() ? .invalid : .missing)
        case GNUTLS_E_NO_CERTIFICATE_FOUND, GNUTLS_E_CERTIFICATE_REQUIRED:
            guard role == .server else { return .handshakeFailed(.protocolViolation) }
            // A TLS 1.2 GnuTLS server reports any alert that arrives instead of the client's
            // Certificate as NO_CERTIFICATE_FOUND; the alert (never 0 here) is the real story.
            let alert = receivedAlert()
            if code == GNUTLS_E_NO_CERTIFICATE_FOUND && alert != 0 { return .peerSentAlert(TLSAlert(code: alert)) }
            return .certificateRejected(.missing)
        case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
            return .noSharedVersion
        case GNUTLS_E_NO_CIPHER_SUITES, GNUTLS_E_UNKNOWN_CIPHER_SUITE, GNUTLS_E_INSUFFICIENT_CREDENTIALS,
             GNUTLS_E_NO_COMMON_KEY_SHARE, GNUTLS_E_ECC_NO_SUPPORTED_CURVES, GNUTLS_E_ECC_UNSUPPORTED_CURVE,
             GNUTLS_E_UNSUPPORTED_SIGNATURE_ALGORITHM:
            return .noSharedCipher
        case GNUTLS_E_UNEXPECTED_PACKET_LENGTH, GNUTLS_E_RECORD_OVERFLOW, GNUTLS_E_DECRYPTION_FAILED,
             GNUTLS_E_TOO_MANY_EMPTY_PACKETS, GNUTLS_E_HANDSHAKE_TOO_LARGE, GNUTLS_E_UNEXPECTED_EXTENSIONS_LENGTH:
            return .malformedInput
        case GNUTLS_E_UNEXPECTED_PACKET, GNUTLS_E_UNEXPECTED_HANDSHAKE_PACKET, GNUTLS_E_ILLEGAL_PARAMETER,
             GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER, GNUTLS_E_RECEIVED_ILLEGAL_EXTENSION, GNUTLS_E_MISSING_EXTENSION,
             GNUTLS_E_ERROR_IN_FINISHED_PACKET, GNUTLS_E_PK_SIG_VERIFY_FAILED, GNUTLS_E_SAFE_RENEGOTIATION_FAILED,
             GNUTLS_E_UNSAFE_RENEGOTIATION_DENIED, GNUTLS_E_INSUFFICIENT_SECURITY:
            // After the handshake a broken protocol is malformed input, as the OpenSSL backend says.
            return duringHandshake ? .handshakeFailed(.protocolViolation) : .malformedInput
        case GNUTLS_E_REHANDSHAKE:
            return .renegotiationRefused
        default:
            return duringHandshake ? .handshakeFailed(.other) : .malformedInput
        }
    }

    /// One problem from GnuTLS's status bits. When several are set the most fundamental wins:
    /// insecure algorithm > untrusted issuer > expired > not yet valid > wrong usage > wrong name > invalid.
    /// (A weak key or SHA-1 signature comes first, as OpenSSL reports it before the rest.)
    static func certificateProblem(status: UInt32) -> TLSError.CertificateProblem {
        func has(_ flag: gnutls_certificate_status_t) -> Bool { status & flag.rawValue != 0 }
        if has(GNUTLS_CERT_INSECURE_ALGORITHM) { return .insecureAlgorithm }
        if has(GNUTLS_CERT_SIGNER_NOT_FOUND) || has(GNUTLS_CERT_SIGNER_NOT_CA)
            || has(GNUTLS_CERT_SIGNATURE_FAILURE) || has(GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE) {
            return .untrustedIssuer
        }
        if has(GNUTLS_CERT_EXPIRED) { return .expired }
        if has(GNUTLS_CERT_NOT_ACTIVATED) { return .notYetValid }
        if has(GNUTLS_CERT_PURPOSE_MISMATCH) { return .wrongUsage }
        if has(GNUTLS_CERT_UNEXPECTED_OWNER) { return .wrongName }
        // Set only when the chain passed every other check (see GnuTLSContext.loadRevocationLists).
        if has(GNUTLS_CERT_REVOKED) { return .revoked }
        if has(GNUTLS_CERT_REVOCATION_DATA_SUPERSEDED) { return .crlExpired }
        // INVALID alone: GnuTLS could not build a chain to a trusted root.
        if status == GNUTLS_CERT_INVALID.rawValue { return .untrustedIssuer }
        return .invalid
    }
}
