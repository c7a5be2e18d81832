/// What a peer's TLS 1.2 warning alerts may do, on both backends. (TLS 1.3 has no warnings: every
/// alert but close_notify and user_canceled is fatal, and both libraries treat them so.)
///
/// - **At most `maximumInARow` in a row.** A warning costs a record and changes nothing, so a stream
///   of them is a flood; the next one, with no data record between, ends the connection with
///   `.malformedInput`. OpenSSL's own rule (MAX_WARN_ALERT_COUNT in ssl/record/rec_layer_s3.c: the
///   fifth in a row is fatal, a data record starts the count again); GnuTLS lets any number through,
///   so the GnuTLS backend counts them with this type.
/// - **no_renegotiation ends the connection.** We never ask to renegotiate, so it answers nothing;
///   OpenSSL ends the connection on it (SSL_R_NO_RENEGOTIATION), GnuTLS reports a warning and the
///   GnuTLS backend ends it likewise.
///
/// Both backends send the alert OpenSSL sends: unexpected_message for the flood, handshake_failure
/// for no_renegotiation.
public struct PeerWarningAlerts: Sendable {
    public static let maximumInARow = 4
    /// The refusals' details, the same words from both backends.
    public static let floodRefusal = "the peer sent more than \(maximumInARow) warning alerts in a row"
    public static let noRenegotiationRefusal = "the peer sent a no_renegotiation alert, but nothing asked to renegotiate"

    private var inARow = 0

    public init() {}

    /// Counts one warning alert. False when it is one too many: the connection ends.
    public mutating func admitWarning() -> Bool {
        inARow += 1
        return inARow <= Self.maximumInARow
    }

    /// A record of application data arrived: the count starts again.
    public mutating func dataReceived() {
        inARow = 0
    }
}
