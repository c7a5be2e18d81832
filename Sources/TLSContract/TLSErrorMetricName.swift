extension TLSError.Reason {
    /// A stable snake_case name for the reason, for metric labels (`mtls_handshakes_total{result=...}`)
    /// and anything else that counts failures by kind. Written out case by case, never derived from
    /// Swift's own spelling, so that renaming a case does not rename a time series; and it holds no
    /// file name, alert number or other free text, so the set of values stays small.
    public var metricName: String {
        switch self {
        case .configuration(_, let problem): return "configuration_" + problem.metricName
        case .certificateRejected(let problem): return "certificate_rejected_" + problem.metricName
        case .peerSentAlert: return "peer_sent_alert"
        case .noSharedVersion: return "no_shared_version"
        case .noSharedCipher: return "no_shared_cipher"
        case .handshakeFailed(.unexpectedEOF): return "handshake_failed_unexpected_eof"
        case .handshakeFailed(.protocolViolation): return "handshake_failed_protocol_violation"
        case .handshakeFailed(.other): return "handshake_failed"
        case .malformedInput: return "malformed_input"
        case .renegotiationRefused: return "renegotiation_refused"
        case .uncleanShutdown: return "unclean_shutdown"
        case .handshakeTimeout: return "handshake_timeout"
        case .idleTimeout: return "idle_timeout"
        case .sessionClosed: return "session_closed"
        case .bufferLimitExceeded: return "buffer_limit_exceeded"
        case .internalError: return "internal_error"
        }
    }
}

extension TLSError.CertificateProblem {
    var metricName: String {
        switch self {
        case .missing: return "missing"
        case .untrustedIssuer: return "untrusted_issuer"
        case .expired: return "expired"
        case .notYetValid: return "not_yet_valid"
        case .wrongName: return "wrong_name"
        case .wrongUsage: return "wrong_usage"
        case .notAuthorized: return "not_authorized"
        case .insecureAlgorithm: return "insecure_algorithm"
        case .revoked: return "revoked"
        case .crlExpired: return "crl_expired"
        case .invalid: return "invalid"
        }
    }
}

extension TLSError.ConfigurationProblem {
    var metricName: String {
        switch self {
        case .fileNotFound: return "file_not_found"
        case .fileUnreadable: return "file_unreadable"
        case .noCertificateInPEM: return "no_certificate_in_pem"
        case .noPrivateKeyInPEM: return "no_private_key_in_pem"
        case .invalidCertificate: return "invalid_certificate"
        case .invalidPrivateKey: return "invalid_private_key"
        case .keyDoesNotMatchCertificate: return "key_does_not_match_certificate"
        case .wrongPKCS12Password: return "wrong_pkcs12_password"
        case .invalidPKCS12: return "invalid_pkcs12"
        case .noTrustRoots: return "no_trust_roots"
        case .missingIdentity: return "missing_identity"
        case .invalidVersionRange: return "invalid_version_range"
        case .missingServerName: return "missing_server_name"
        case .invalidSetting: return "invalid_setting"
        case .invalidCRL: return "invalid_crl"
        case .certificateNotYetValid: return "certificate_not_yet_valid"
        case .certificateExpired: return "certificate_expired"
        }
    }
}
