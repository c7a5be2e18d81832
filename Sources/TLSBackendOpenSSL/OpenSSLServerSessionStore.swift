internal import COpenSSL
import Foundation

/// Server: the sessions behind one context's TLS 1.3 tickets, which are stateful: a ticket carries
/// only a random 32-byte session ID, and what resuming needs stays here.
///
/// Why not sealed tickets: OpenSSL 3.0 builds a sealed ticket by serializing the session and parsing
/// it back (a fresh copy), and opens one by parsing it again; each parse decodes the client's
/// certificate through OSSL_DECODER, which cost about a fifth of a full handshake's server CPU and
/// made a resumed handshake (which opens one ticket and seals the next) cost almost as much as a
/// full one. Here a ticket costs a table insertion, and a resumption a lookup and a session rebuilt
/// from a handful of fields.
///
/// What is kept is not the `SSL_SESSION` but a `StoredSession`: the resumption secret, cipher and
/// lifetime, inline, and the client's chain as DER (TicketChain), shared by every session of the
/// same chain. An `SSL_SESSION` would keep the client's parsed certificate (about 7 KiB, allocated
/// among the connection's own memory, which it would then keep the allocator from giving back once
/// the connection is gone); resuming needs none of it, since resumed connections read the client's
/// identity from the chain. So a session costs its slot in one table, wherever it came from.
///
/// Bounded: at most `capacity` sessions, and expired ones are dropped as new ones arrive. A client
/// whose ticket was dropped gets a full handshake (and a new ticket). Sessions are not removed when
/// a client resumes from them, since our client contexts offer their newest ticket to every
/// connection they start at once, and each should resume; but a session resumed from is superseded
/// by the ticket that resumption issued, so a full store drops those first, oldest first, and only
/// then sessions never resumed from. The store thus keeps the newest ticket of as many clients as it
/// can hold, however many tickets each has used.
final class OpenSSLServerSessionStore: @unchecked Sendable {
    /// As many as OpenSSL's own session cache keeps by default; a few hundred bytes each.
    static let defaultCapacity = 20_480

    private struct Entry {
        let stored: StoredSession
        var resumedFrom = false
    }

    let capacity: Int
    /// The session ID context every session of this server carries (SSL_CTX_set_session_id_context).
    private let sessionIDContext: [UInt8]
    private let lock = NSLock()
    /// Guarded by `lock`, as are the queues and `chains`.
    private var sessions: [SessionID: Entry] = [:]
    /// Sessions not resumed from yet, in the order they were stored.
    private var neverResumedFrom = SessionIDQueue()
    /// Sessions resumed from at least once, in the order of their first resumption.
    private var superseded = SessionIDQueue()
    /// One copy of each client chain the stored sessions carry.
    private var chains = SharedChains()

    init(capacity: Int = OpenSSLServerSessionStore.defaultCapacity, sessionIDContext: [UInt8]) {
        self.capacity = max(1, capacity)
        self.sessionIDContext = sessionIDContext
    }

    var count: Int { lock.withLock { sessions.count } }

    /// Distinct client chains held, for tests.
    var chainCount: Int { lock.withLock { chains.count } }

    /// Keeps what resuming `session` needs, under its ID, if that is a 32-byte one (the only kind a
    /// TLS 1.3 stateful ticket carries).
    func store(_ session: OpaquePointer) {
        guard let id = SessionID(of: session), let fields = StoredSession.Fields(session) else { return }
        let now = Int(time(nil))
        lock.withLock {
            if let replaced = sessions.removeValue(forKey: id) { chains.release(replaced.stored.clientChain) }
            sessions[id] = Entry(stored: StoredSession(fields, clientChain: chains.retain(fields.clientChain)))
            neverResumedFrom.append(id)
            // IDs of sessions that moved on to `superseded` stay behind in this queue until they reach
            // its head, which a client that went away without resuming can hold for a session's whole
            // lifetime: sweep them out now and then, so that the queue stays within twice the store.
            if neverResumedFrom.count > 2 * capacity + 64 {
                neverResumedFrom.keep { sessions[$0]?.resumedFrom == false }
            }
            // Every session lives equally long, so the first of each queue expires first (nearly,
            // for the superseded ones).
            for resumed in [true, false] {
                while let first = firstLive(resumedFrom: resumed), sessions[first]!.stored.expires <= now {
                    remove(first)
                }
            }
            while sessions.count > capacity,
                  let victim = firstLive(resumedFrom: true) ?? firstLive(resumedFrom: false) {
                remove(victim)
            }
        }
    }

    /// A new `SSL_SESSION` (the caller owns it) to resume the session stored under `id`, or nil.
    func session(id: UnsafeRawBufferPointer) -> OpaquePointer? {
        guard let key = SessionID(id) else { return nil }
        let found: StoredSession? = lock.withLock {
            guard let entry = sessions[key] else { return nil }
            if !entry.resumedFrom {
                sessions[key]!.resumedFrom = true
                superseded.append(key)
            }
            return entry.stored
        }
        return found?.makeSession(id: key, sessionIDContext: sessionIDContext)
    }

    func removeAll() {
        lock.withLock {
            sessions.removeAll()
            neverResumedFrom.removeAll()
            superseded.removeAll()
            chains.removeAll()
        }
    }

    /// With `lock` held.
    private func remove(_ id: SessionID) {
        if let entry = sessions.removeValue(forKey: id) { chains.release(entry.stored.clientChain) }
    }

    /// With `lock` held: the first ID of a queue that still names a session of that queue, after
    /// discarding those that do not (dropped, or moved on to `superseded`).
    private func firstLive(resumedFrom: Bool) -> SessionID? {
        while let id = resumedFrom ? superseded.first : neverResumedFrom.first {
            if let entry = sessions[id], entry.resumedFrom == resumedFrom { return id }
            if resumedFrom { superseded.removeFirst() } else { neverResumedFrom.removeFirst() }
        }
        return nil
    }
}

/// What resuming a TLS 1.3 session takes: its resumption secret (the PSK the ticket stands for),
/// cipher and lifetime, and the client's chain for the resumed connection's identity. Early data,
/// for which OpenSSL would also consult the ticket's age, ALPN and server name, is never enabled.
private struct StoredSession {
    /// What is read from an `SSL_SESSION`, before the chain is shared.
    struct Fields {
        let resumptionSecret: ResumptionSecret
        let cipher: OpaquePointer
        let created: Int
        let lifetime: Int
        let clientChain: [UInt8]

        init?(_ session: OpaquePointer) {
            guard SSL_SESSION_get_protocol_version(session) == TLS1_3_VERSION,
                  let cipher = SSL_SESSION_get0_cipher(session), let secret = ResumptionSecret(of: session)
            else { return nil }
            resumptionSecret = secret
            self.cipher = cipher
            created = SSL_SESSION_get_time(session)
            lifetime = SSL_SESSION_get_timeout(session)
            var data: UnsafeMutableRawPointer?
            var length = 0
            if SSL_SESSION_get0_ticket_appdata(session, &data, &length) == 1, let data, length > 0 {
                clientChain = Array(UnsafeRawBufferPointer(start: data, count: length))
            } else {
                clientChain = []
            }
        }
    }

    let resumptionSecret: ResumptionSecret
    /// A `const SSL_CIPHER *`: one of libssl's static cipher table entries.
    let cipher: OpaquePointer
    let created: Int
    let lifetime: Int
    /// TicketChain's encoding, as the session's ticket app data holds it (empty: no client
    /// certificate); shared with the other sessions of the same chain.
    let clientChain: [UInt8]

    init(_ fields: Fields, clientChain: [UInt8]) {
        resumptionSecret = fields.resumptionSecret
        cipher = fields.cipher
        created = fields.created
        lifetime = fields.lifetime
        self.clientChain = clientChain
    }

    var expires: Int { created + lifetime }

    func makeSession(id: SessionID, sessionIDContext: [UInt8]) -> OpaquePointer? {
        guard let session = SSL_SESSION_new() else { return nil }
        let built = id.withUnsafeBytes { SSL_SESSION_set1_id(session, $0.baseAddress, UInt32($0.count)) == 1 }
            && SSL_SESSION_set1_id_context(session, sessionIDContext, UInt32(sessionIDContext.count)) == 1
            && SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION) == 1
            && SSL_SESSION_set_cipher(session, cipher) == 1
            && resumptionSecret.withUnsafeBytes { SSL_SESSION_set1_master_key(session, $0.baseAddress, $0.count) == 1 }
            && SSL_SESSION_set_timeout(session, lifetime) != 0
            && SSL_SESSION_set_time(session, created) != 0
            && (clientChain.isEmpty || SSL_SESSION_set1_ticket_appdata(session, clientChain, clientChain.count) == 1)
        guard built else {
            SSL_SESSION_free(session)
            return nil
        }
        return session
    }
}

/// A TLS 1.3 resumption secret (as long as the cipher suite's hash: 32 or 48 bytes), kept inline.
private struct ResumptionSecret {
    private var bytes: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)
    private let count: Int

    init?(of session: OpaquePointer) {
        var bytes = self.bytes
        let count = Swift.withUnsafeMutableBytes(of: &bytes) { buffer in
            SSL_SESSION_get_master_key(session, buffer.baseAddress, buffer.count)
        }
        guard count > 0 else { return nil }
        self.bytes = bytes
        self.count = count
    }

    func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        var copy = bytes
        return Swift.withUnsafeBytes(of: &copy) { body(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
    }
}

/// Each distinct client chain once, counted by the sessions that carry it: services reconnect with
/// the same certificate, so thousands of stored sessions hold a handful of chains.
private struct SharedChains {
    /// Hashes the DER as bytes, not byte by byte.
    private struct Key: Hashable {
        let der: [UInt8]
        func hash(into hasher: inout Hasher) { der.withUnsafeBytes { hasher.combine(bytes: $0) } }
    }

    private var chains: [Key: (chain: [UInt8], users: Int)] = [:]

    var count: Int { chains.count }

    /// The shared copy of `chain` (empty stays empty), counted as used once more.
    mutating func retain(_ chain: [UInt8]) -> [UInt8] {
        guard !chain.isEmpty else { return chain }
        let key = Key(der: chain)
        if let shared = chains[key] {
            chains[key]!.users += 1
            return shared.chain
        }
        chains[key] = (chain, 1)
        return chain
    }

    mutating func release(_ chain: [UInt8]) {
        guard !chain.isEmpty else { return }
        let key = Key(der: chain)
        guard let shared = chains[key] else { return }
        if shared.users > 1 { chains[key]!.users -= 1 } else { chains.removeValue(forKey: key) }
    }

    mutating func removeAll() { chains.removeAll() }
}

/// A first-in, first-out list of session IDs that gives its space back as it drains.
private struct SessionIDQueue {
    private var ids: [SessionID] = []
    private var head = 0

    var first: SessionID? { head < ids.count ? ids[head] : nil }
    var count: Int { ids.count - head }

    mutating func append(_ id: SessionID) { ids.append(id) }

    mutating func removeFirst() {
        head += 1
        if head == ids.count {
            removeAll()
        } else if head >= 1024 && head * 2 >= ids.count {
            ids.removeFirst(head)
            head = 0
        }
    }

    mutating func removeAll() {
        ids.removeAll(keepingCapacity: false)
        head = 0
    }

    /// Keeps only the IDs `isKept` accepts, in order.
    mutating func keep(where isKept: (SessionID) -> Bool) {
        ids = ids[head...].filter(isKept)
        head = 0
    }
}

/// A 32-byte session ID, as four words (hashing it costs no allocation).
private struct SessionID: Hashable {
    let words: (UInt64, UInt64, UInt64, UInt64)

    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count == 32 else { return nil }
        words = (bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                 bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                 bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
                 bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
    }

    init?(of session: OpaquePointer) {
        var length: UInt32 = 0
        guard let id = SSL_SESSION_get_id(session, &length) else { return nil }
        self.init(UnsafeRawBufferPointer(start: id, count: Int(length)))
    }

    func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        var copy = words
        return Swift.withUnsafeBytes(of: &copy, body)
    }

    static func == (lhs: SessionID, rhs: SessionID) -> Bool {
        lhs.words == rhs.words
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }
}
