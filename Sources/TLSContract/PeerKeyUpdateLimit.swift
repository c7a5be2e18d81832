/// How often a peer may update its TLS 1.3 keys, on both backends.
///
/// A KeyUpdate makes the receiver derive new traffic keys and, when the peer asks for it, update
/// and announce its own: work a peer can demand at will, one small record at a time. Peers that
/// play by RFC 8446 §5.5 update after gigabytes, or a few times per connection on demand, so the
/// rule is generous to them and ends a flood early: at most `maximumPerWindow` KeyUpdate messages
/// in a window of `window` that opens at the first update after the previous window has passed.
/// The next one ends the connection with `.malformedInput` (the peer broke the protocol after the
/// handshake), the detail saying why.
///
/// The numbers are GnuTLS 3.7's, which applies exactly this rule inside the library
/// (lib/tls13/key_update.c: 8 per 1,000 ms) and cannot be told otherwise. OpenSSL has no limit at
/// all, so the OpenSSL backend counts the KeyUpdates it receives with this type: the same peer is
/// ended at the same message by either backend.
public struct PeerKeyUpdateLimit: Sendable {
    public static let maximumPerWindow = 8
    public static let window: Duration = .seconds(1)
    /// The refusal's detail, the same words from both backends.
    public static let refusal = "the peer updated its keys more than \(maximumPerWindow) times within a second"

    private var windowStart: ContinuousClock.Instant?
    private var updatesInWindow = 0

    public init() {}

    /// Counts one KeyUpdate received at `now`. False when it is over the limit: the connection ends.
    public mutating func admit(at now: ContinuousClock.Instant) -> Bool {
        if let windowStart, now - windowStart <= Self.window {
            updatesInWindow += 1
        } else {
            windowStart = now
            updatesInWindow = 1
        }
        return updatesInWindow <= Self.maximumPerWindow
    }
}
