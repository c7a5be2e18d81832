import Testing
import TLSContract

/// `TLSError.Reason.metricName`: the label values of `mtls_handshakes_total{result}` and
/// `mtls_reloads_total{result}`. Dashboards and alerts key on them, so they are pinned here.
@Suite("TLSError metric names")
struct TLSErrorMetricNameTests {
    static let pinned: [(TLSError.Reason, String)] = [
        (.certificateRejected(.missing), "certificate_rejected_missing"),
        (.certificateRejected(.untrustedIssuer), "certificate_rejected_untrusted_issuer"),
        (.certificateRejected(.expired), "certificate_rejected_expired"),
        (.certificateRejected(.notYetValid), "certificate_rejected_not_yet_valid"),
        (.certificateRejected(.wrongName), "certificate_rejected_wrong_name"),
        (.certificateRejected(.wrongUsage), "certificate_rejected_wrong_usage"),
        (.certificateRejected(.notAuthorized), "certificate_rejected_not_authorized"),
        (.certificateRejected(.insecureAlgorithm), "certificate_rejected_insecure_algorithm"),
        (.certificateRejected(.revoked), "certificate_rejected_revoked"),
        (.certificateRejected(.crlExpired), "certificate_rejected_crl_expired"),
        (.certificateRejected(.invalid), "certificate_rejected_invalid"),
        (.peerSentAlert(.unknownCA), "peer_sent_alert"),
        (.peerSentAlert(.certificateRequired), "peer_sent_alert"),
        (.noSharedVersion, "no_shared_version"),
        (.noSharedCipher, "no_shared_cipher"),
        (.handshakeFailed(.unexpectedEOF), "handshake_failed_unexpected_eof"),
        (.handshakeFailed(.protocolViolation), "handshake_failed_protocol_violation"),
        (.handshakeFailed(.other), "handshake_failed"),
        (.malformedInput, "malformed_input"),
        (.renegotiationRefused, "renegotiation_refused"),
        (.uncleanShutdown, "unclean_shutdown"),
        (.handshakeTimeout, "handshake_timeout"),
        (.idleTimeout, "idle_timeout"),
        (.sessionClosed, "session_closed"),
        (.bufferLimitExceeded, "buffer_limit_exceeded"),
        (.internalError, "internal_error"),
        (.configuration(file: "/etc/mtls/server.pem", problem: .keyDoesNotMatchCertificate),
         "configuration_key_does_not_match_certificate"),
        (.configuration(file: nil, problem: .invalidSetting("anything at all")), "configuration_invalid_setting"),
        (.configuration(file: "a.p12", problem: .wrongPKCS12Password), "configuration_wrong_pkcs12_password"),
    ]

    @Test("each reason has its pinned snake_case name; free text (files, alert codes, settings) never reaches it")
    func pinnedNames() {
        for (reason, name) in Self.pinned {
            #expect(reason.metricName == name, "\(reason)")
            #expect(name.allSatisfy { ($0.isASCII && $0.isLowercase) || $0.isNumber || $0 == "_" }, "\(name)")
        }
    }

    @Test("different reasons get different names (alerts aside, which share one)")
    func distinct() {
        let names = Self.pinned.filter { if case .peerSentAlert = $0.0 { return false } else { return true } }.map { $0.1 }
        #expect(Set(names).count == names.count)
    }
}
