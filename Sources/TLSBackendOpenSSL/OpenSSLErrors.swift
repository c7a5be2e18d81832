internal import COpenSSL
import TLSContract

/// Turns OpenSSL's error queue and verify results into the contract's one vocabulary.
enum OpenSSLErrors {
    /// Empties the error queue into a detail string for logs.
    static func drainQueue() -> String {
        var messages: [String] = []
        var buffer = [CChar](repeating: 0, count: 256)
        while case let code = ERR_get_error(), code != 0 {
            ERR_error_string_n(code, &buffer, buffer.count)
            messages.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return messages.joined(separator: "; ")
    }

    static func collect(_ reason: TLSError.Reason) -> TLSError {
        TLSError(reason, detail: drainQueue())
    }

    /// Classifies a failed handshake or record operation from the first SSL-library reason code.
    static func classify(ssl: OpaquePointer, handshakeComplete: Bool, renegotiationSeen: Bool,
                         policyRefusal: TLSError? = nil) -> TLSError {
        // The SSL library's own verdict is pushed last, after whatever lower layer (ASN.1, EVP) it called.
        let lastCode = ERR_peek_last_error()
        let reasonCode = mtls_ERR_GET_REASON(lastCode)
        let isSSL = mtls_ERR_GET_LIB(lastCode) == ERR_LIB_SSL
        let detail = drainQueue()
        if renegotiationSeen {
            return TLSError(.renegotiationRefused, detail: detail)
        }
        guard isSSL else {
            return TLSError(handshakeComplete ? .malformedInput : .handshakeFailed(.other), detail: detail)
        }
        let reason: TLSError.Reason
        switch reasonCode {
        case SSL_R_CERTIFICATE_VERIFY_FAILED:
            let result = SSL_get_verify_result(ssl)
            // Refused by the contract's rules (from the verify callback), or a revocation failure the
            // contract worded: its error, word for word.
            if let policyRefusal, result == X509_V_ERR_APPLICATION_VERIFICATION || isRevocationResult(result) {
                return policyRefusal
            }
            reason = .certificateRejected(certificateProblem(verifyResult: Int32(result)))
            let verifyText = X509_verify_cert_error_string(result).map { String(cString: $0) } ?? ""
            return TLSError(reason, detail: [verifyText, detail].filter { !$0.isEmpty }.joined(separator: "; "))
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            reason = .certificateRejected(.missing)
        case SSL_AD_REASON_OFFSET...(SSL_AD_REASON_OFFSET + 255):
            reason = .peerSentAlert(TLSAlert(code: UInt8(reasonCode - SSL_AD_REASON_OFFSET)))
        case SSL_R_UNSUPPORTED_PROTOCOL, SSL_R_VERSION_TOO_LOW, SSL_R_VERSION_TOO_HIGH, SSL_R_WRONG_SSL_VERSION,
             SSL_R_NO_PROTOCOLS_AVAILABLE:
            reason = .noSharedVersion
        case SSL_R_NO_SHARED_CIPHER, SSL_R_WRONG_CIPHER_RETURNED, SSL_R_NO_CIPHERS_AVAILABLE,
             SSL_R_NO_SUITABLE_KEY_SHARE, SSL_R_NO_SHARED_GROUPS:
            reason = .noSharedCipher
        case SSL_R_WRONG_VERSION_NUMBER, SSL_R_PACKET_LENGTH_TOO_LONG, SSL_R_RECORD_LENGTH_MISMATCH,
             SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC, SSL_R_ENCRYPTED_LENGTH_TOO_LONG, SSL_R_DATA_LENGTH_TOO_LONG,
             SSL_R_HTTP_REQUEST, SSL_R_HTTPS_PROXY_REQUEST, SSL_R_UNKNOWN_PROTOCOL, SSL_R_BAD_RECORD_TYPE,
             SSL_R_LENGTH_TOO_SHORT, SSL_R_LENGTH_MISMATCH, SSL_R_BAD_LENGTH,
             SSL_R_BAD_PACKET_LENGTH, SSL_R_EXCESSIVE_MESSAGE_SIZE, SSL_R_RECORD_TOO_SMALL,
             SSL_R_UNEXPECTED_RECORD, SSL_R_BLOCK_CIPHER_PAD_IS_WRONG, SSL_R_DECRYPTION_FAILED:
            reason = .malformedInput
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
            reason = handshakeComplete ? .uncleanShutdown : .handshakeFailed(.unexpectedEOF)
        case SSL_R_NO_RENEGOTIATION:
            // A no_renegotiation alert that nothing of ours asked for (a renegotiation this session
            // started is `renegotiationSeen`, above): the contract's rule, in its words.
            return TLSError(.malformedInput, detail: PeerWarningAlerts.noRenegotiationRefusal + " [" + detail + "]")
        case SSL_R_TOO_MANY_WARN_ALERTS:
            return TLSError(.malformedInput, detail: PeerWarningAlerts.floodRefusal + " [" + detail + "]")
        default:
            reason = handshakeComplete ? .malformedInput : .handshakeFailed(.protocolViolation)
        }
        return TLSError(reason, detail: detail)
    }

    /// Verify results about CRLs (with CRLs configured): revoked, or a CRL that cannot vouch.
    static func isRevocationResult(_ result: Int) -> Bool {
        switch Int32(truncatingIfNeeded: result) {
        case X509_V_ERR_CERT_REVOKED, X509_V_ERR_CRL_HAS_EXPIRED, X509_V_ERR_CRL_NOT_YET_VALID,
             X509_V_ERR_CRL_SIGNATURE_FAILURE, X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE,
             X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD, X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
            return true
        default:
            return false
        }
    }

    /// One problem per verify result, in the same buckets the GnuTLS backend uses.
    static func certificateProblem(verifyResult: Int32) -> TLSError.CertificateProblem {
        switch verifyResult {
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
             X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
             X509_V_ERR_CERT_SIGNATURE_FAILURE, X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
             X509_V_ERR_CERT_UNTRUSTED, X509_V_ERR_INVALID_CA, X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE,
             X509_V_ERR_CERT_REJECTED, X509_V_ERR_AKID_SKID_MISMATCH, X509_V_ERR_AKID_ISSUER_SERIAL_MISMATCH:
            return .untrustedIssuer
        case X509_V_ERR_CA_KEY_TOO_SMALL, X509_V_ERR_CA_MD_TOO_WEAK, X509_V_ERR_EE_KEY_TOO_SMALL:
            return .insecureAlgorithm
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return .expired
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return .notYetValid
        case X509_V_ERR_INVALID_PURPOSE:
            return .wrongUsage
        case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH:
            return .wrongName
        case X509_V_ERR_CERT_REVOKED:
            return .revoked
        case X509_V_ERR_CRL_HAS_EXPIRED:
            return .crlExpired
        default:
            return .invalid
        }
    }
}
