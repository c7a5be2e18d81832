import Foundation

/// A TLS library, seen through the contract. Backends are stateless values; all state lives in contexts.
public protocol TLSBackend: Sendable {
    /// The name users pick it by: `openssl` or `gnutls`.
    var name: String { get }
    /// The linked library's version, e.g. "OpenSSL 3.0.19".
    var libraryVersion: String { get }
    var capabilities: TLSCapabilities { get }
    /// Parses the credentials and trust store once. Sessions made from the context share them.
    func makeContext(_ configuration: TLSConfiguration) throws(TLSError) -> any TLSContext
    /// A context that replaces `previous` (a reload). A server context of the same backend, with
    /// tickets on, takes over `previous`'s ticket keys and session store, so tickets issued before
    /// keep resuming: the caller passes `previous` only when that is safe, i.e. when our own
    /// certificate or the CRLs changed but the trust roots did not (a resumed peer is re-checked
    /// against the new context's CRLs, `PeerVerification.checkResumed`, but its chain is not
    /// verified again, so new roots must mean new tickets). Anything else starts afresh.
    func makeContext(_ configuration: TLSConfiguration, succeeding previous: (any TLSContext)?) throws(TLSError) -> any TLSContext
}

extension TLSBackend {
    /// Backends without ticket state to carry over build a context from scratch.
    public func makeContext(_ configuration: TLSConfiguration, succeeding previous: (any TLSContext)?) throws(TLSError) -> any TLSContext {
        try makeContext(configuration)
    }
}

/// Immutable and shared across loops and threads. Rotating credentials means building a new context
/// and using it for new sessions; live sessions keep theirs.
public protocol TLSContext: AnyObject, Sendable {
    var configuration: TLSConfiguration { get }
    var backendName: String { get }
    /// Starts one connection's session. A client may override the configured server name.
    func makeSession(serverName: String?) throws(TLSError) -> any TLSSession
    /// Our own certificate chain as loaded (leaf first, DER); empty without an identity. What a
    /// reload reports as served, whatever form (PEM or PKCS#12) it came in.
    var certificateChainDER: [[UInt8]] { get }
    /// The CRLs this context checks peers against (parsed from `configuration.crls`).
    var revocation: RevocationList { get }
    /// The chains this context verified in full, and its hit/miss counts; nil when it verifies no
    /// peer or caching is off.
    var verifiedChains: VerifiedChainCache? { get }
}

extension TLSContext {
    public var certificateChainDER: [[UInt8]] { [] }
    public var revocation: RevocationList { .empty }
    public var verifiedChains: VerifiedChainCache? { nil }

    public func makeSession() throws(TLSError) -> any TLSSession {
        try makeSession(serverName: nil)
    }
}

/// Features a backend may lack. A missing feature is reported here, never silently ignored.
public struct TLSCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let pkcs12 = TLSCapabilities(rawValue: 1 << 0)
    public static let alpn = TLSCapabilities(rawValue: 1 << 1)
    public static let ed25519 = TLSCapabilities(rawValue: 1 << 2)
    public static let tls13Resumption = TLSCapabilities(rawValue: 1 << 3)
    public static let tls12Resumption = TLSCapabilities(rawValue: 1 << 4)
    public static let ipAddressVerification = TLSCapabilities(rawValue: 1 << 5)
}

/// What `TLSSession.process()` achieved. Call `process()` until it returns `.needsInput`,
/// `.peerClosed` or `.failed`, and drain `takeCiphertext` after every call.
public enum TLSProgress: Sendable {
    /// Nothing more happens until more ciphertext arrives (or plaintext is taken, see below).
    case needsInput
    /// The handshake has just completed, peer verification included. Reported exactly once.
    case handshakeComplete
    /// Decrypted application data waits in `takePlaintext`. `process()` decrypts no more while
    /// `pendingPlaintextCount` is at or above `plaintextLimit`: take it first.
    case plaintextReady
    /// The peer sent close_notify. Whatever plaintext came before it has been delivered.
    case peerClosed
    /// The session is dead. Send what `takeCiphertext` still holds (the alert), then close.
    case failed(TLSError)
}

/// What any session buffers at most, whichever backend, so that a session on its own cannot be made
/// to hold memory without limit. Past either bound the session refuses with `.bufferLimitExceeded`.
public enum TLSSessionLimits {
    /// Ciphertext received and not yet consumed by `process()`. `process()` consumes it, except
    /// while `plaintextLimit` of decrypted data waits to be taken: a caller that keeps feeding then
    /// (instead of pausing its reads) fails the session at the next `process()`. A loop that feeds
    /// one read (256 KiB here) and then processes never comes near it.
    public static let maximumUnprocessedCiphertext = 1024 * 1024
    /// Plaintext written before the handshake completes, held and sent right after it.
    public static let maximumPlaintextBeforeHandshake = 256 * 1024

    public static func unprocessedCiphertextExceeded(_ count: Int) -> TLSError {
        TLSError(.bufferLimitExceeded, detail: "\(count) bytes of ciphertext waiting, more than \(maximumUnprocessedCiphertext)")
    }

    public static func plaintextBeforeHandshakeExceeded(_ count: Int) -> TLSError {
        TLSError(.bufferLimitExceeded,
                 detail: "\(count) bytes written before the handshake completed, more than \(maximumPlaintextBeforeHandshake)")
    }
}

/// One connection's TLS state machine, without I/O. Not thread-safe: confine it to one loop.
///
/// Ciphertext goes in through `receiveCiphertext`, comes out through `takeCiphertext`.
/// Plaintext goes in through `writePlaintext`, comes out through `takePlaintext`.
public protocol TLSSession: AnyObject {
    var role: TLSConfiguration.Role { get }
    var isHandshakeComplete: Bool { get }

    /// Takes ciphertext received from the transport. `bytes` are only borrowed for the call: an
    /// established session may decrypt from them in place (the plaintext, and any failure, then
    /// wait for `process()` to report them, plaintext first), and it copies what it has not read
    /// before returning, so the caller may reuse its buffer at once. Past
    /// `TLSSessionLimits.maximumUnprocessedCiphertext` unprocessed, the next `process()` fails.
    func receiveCiphertext(_ bytes: UnsafeRawBufferPointer)
    /// The transport reached end of input. The next `process()` reports a clean close
    /// (close_notify seen), an unclean shutdown, or a handshake failure.
    func receiveEndOfInput()
    /// Advances the handshake and decrypts available records.
    func process() -> TLSProgress

    /// Decrypted application data waiting to be taken.
    var pendingPlaintextCount: Int { get }
    /// Moves up to `maxBytes` of decrypted data to the end of `buffer`.
    func takePlaintext(into buffer: inout [UInt8], maxBytes: Int)

    /// `process()` stops decrypting while this much plaintext waits to be taken (default 64 KiB).
    var plaintextLimit: Int { get set }

    /// Encrypts application data. Before the handshake completes it is held and sent right after,
    /// up to `TLSSessionLimits.maximumPlaintextBeforeHandshake` (beyond: `.bufferLimitExceeded`).
    /// After `close()` it throws `.sessionClosed`; after a failure, that failure.
    func writePlaintext(_ bytes: UnsafeRawBufferPointer) throws(TLSError)

    /// Ciphertext waiting to be sent to the peer.
    var pendingCiphertextCount: Int { get }
    /// Moves all pending ciphertext to the end of `buffer`.
    func takeCiphertext(into buffer: inout [UInt8])

    /// Queues close_notify (sent as soon as the handshake is complete).
    func close()

    /// The verified peer, once the handshake completes (nil when the peer sent no certificate).
    var peerIdentity: PeerIdentity? { get }
    var negotiated: NegotiatedParameters? { get }
}

extension TLSSession {
    public func receiveCiphertext(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { receiveCiphertext($0) }
    }

    public func writePlaintext(_ bytes: [UInt8]) throws(TLSError) {
        let result: Result<Void, TLSError> = bytes.withUnsafeBytes { raw in
            do throws(TLSError) { try writePlaintext(raw); return .success(()) } catch { return .failure(error) }
        }
        try result.get()
    }

    public func takeCiphertext() -> [UInt8] {
        var out: [UInt8] = []
        takeCiphertext(into: &out)
        return out
    }

    public func takePlaintext() -> [UInt8] {
        var out: [UInt8] = []
        takePlaintext(into: &out, maxBytes: .max)
        return out
    }
}

/// Hooks that let the conformance suite make a session misbehave on purpose.
@_spi(Testing)
public protocol TLSSessionTestHooks: TLSSession {
    /// Client only: starts a TLS 1.2 renegotiation, which every server of ours must refuse.
    func startRenegotiation() throws(TLSError)
    /// TLS 1.3, either side: sends `count` KeyUpdate messages back to back, each asking the peer to
    /// update its keys too when `requestingPeer` (see `PeerKeyUpdateLimit`).
    func sendKeyUpdates(_ count: Int, requestingPeer: Bool) throws(TLSError)
}

/// What the handshake settled on.
public struct NegotiatedParameters: Sendable, Hashable {
    public var version: TLSVersion
    /// The IANA name, e.g. `TLS_AES_128_GCM_SHA256` or `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`.
    public var cipherSuite: String
    /// The key-exchange group, e.g. `x25519` or `secp256r1`.
    public var group: String?
    public var applicationProtocol: String?
    public var resumed: Bool

    public init(version: TLSVersion, cipherSuite: String, group: String?, applicationProtocol: String?, resumed: Bool) {
        self.version = version
        self.cipherSuite = cipherSuite
        self.group = group
        self.applicationProtocol = applicationProtocol
        self.resumed = resumed
    }
}

/// The cipher suites the policy allows, by IANA code point, so both backends report the same names.
public enum CipherSuitePolicy {
    public static let allowed: [UInt16: String] = [
        0x1301: "TLS_AES_128_GCM_SHA256",
        0x1302: "TLS_AES_256_GCM_SHA384",
        0x1303: "TLS_CHACHA20_POLY1305_SHA256",
        0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ]

    /// The IANA name for a code point, or its hex value if it is outside the policy.
    public static func name(for codePoint: UInt16) -> String {
        allowed[codePoint] ?? String(format: "0x%04X", codePoint)
    }
}

/// Key-exchange group names as both backends report them.
public enum NamedGroup {
    /// Maps each library's spelling ("X25519", "prime256v1", "SECP256R1", "P-256") to one name.
    public static func canonicalName(_ libraryName: String) -> String {
        switch libraryName.lowercased() {
        case "x25519": return "x25519"
        case "x448": return "x448"
        case "secp256r1", "prime256v1", "p-256": return "secp256r1"
        case "secp384r1", "p-384": return "secp384r1"
        case "secp521r1", "p-521": return "secp521r1"
        default: return libraryName.lowercased()
        }
    }
}

/// The client half of resumption, shared by both backends: the newest resumable session per server
/// name, for one client context. Contexts are shared across loops, so every access takes the lock;
/// it is held only to look up, store or drop one entry, never across a TLS library call.
///
/// One entry per name (a newer ticket replaces the older), at most `capacity` names (the oldest
/// name stored is dropped first). A session is keyed by the name it verified the server against,
/// so a ticket obtained for one name is never offered to another.
///
/// Entries are not removed when offered. One after another, each connection uses the ticket the
/// previous one received, so each ticket is used once; connections started together share one.
/// RFC 8446 (C.4) says a client SHOULD NOT reuse a TLS 1.3 ticket, since a passive observer can
/// link the connections that carry it. We accept that for service-to-service clients, for whom
/// resuming a burst of parallel connections matters more than hiding that they come from one client.
package final class ResumptionCache<Entry: Sendable>: @unchecked Sendable {
    package let capacity: Int
    private let lock = NSLock()
    /// Guarded by `lock`. `stamp` orders insertions for eviction.
    private var entries: [String: (entry: Entry, stamp: UInt64, usableUntil: Date?)] = [:]
    private var nextStamp: UInt64 = 0

    package init(capacity: Int = 1000) {
        self.capacity = max(1, capacity)
    }

    /// The entry for `name`, unless the server certificate it was verified with has expired by `now`.
    package func entry(for name: String, now: Date = Date()) -> Entry? {
        var expired: Entry?
        let found: Entry? = lock.withLock {
            guard let found = entries[name] else { return nil }
            if let until = found.usableUntil, now >= until {
                expired = entries.removeValue(forKey: name)?.entry
                return nil
            }
            return found.entry
        }
        _ = expired  // released after the lock is dropped
        return found
    }

    /// `usableUntil`: the notAfter of the server certificate the session was verified with. A resumed
    /// session carries that certificate (and the tickets issued on it carry it on), and a client refuses
    /// a resumption whose certificate has expired (`PeerVerification.checkResumed`); so past it, the
    /// entry is not offered and the next connection makes a full handshake, which sees the server's
    /// current certificate. That matters once a server keeps its tickets across a renewal.
    package func store(_ entry: Entry, for name: String, usableUntil: Date? = nil) {
        // Whatever this replaces or evicts is released after the lock is dropped.
        var released: [Entry] = []
        lock.withLock {
            nextStamp += 1
            if let old = entries.updateValue((entry, nextStamp, usableUntil), forKey: name) {
                released.append(old.entry)
            } else if entries.count > capacity, let oldest = entries.min(by: { $0.value.stamp < $1.value.stamp }) {
                released.append(oldest.value.entry)
                entries.removeValue(forKey: oldest.key)
            }
        }
        _ = released
    }

    package func removeEntry(for name: String) {
        let removed = lock.withLock { entries.removeValue(forKey: name) }
        _ = removed
    }

    package var count: Int { lock.withLock { entries.count } }
}
