internal import COpenSSL
import Foundation

/// Server: the sessions behind one context's TLS 1.3 tickets, which are stateful: a ticket carries
/// only a random 32-byte session ID, and the session stays here, already parsed.
///
/// Why not sealed tickets: OpenSSL 3.0 builds a sealed ticket by serializing the session and parsing
/// it back (a fresh copy), and opens one by parsing it again; each parse decodes the client's
/// certificate through OSSL_DECODER, which cost about a fifth of a full handshake's server CPU and
/// made a resumed handshake (which opens one ticket and seals the next) cost almost as much as a
/// full one. Here a ticket costs a copy and a table insertion, a resumption a lookup and a copy.
///
/// Bounded: at most `capacity` sessions, and expired ones are dropped as new ones arrive. A client
/// whose ticket was dropped gets a full handshake (and a new ticket). Sessions are not removed when
/// a client resumes from them, since our client contexts offer their newest ticket to every
/// connection they start at once, and each should resume; but a session resumed from is superseded
/// by the ticket that resumption issued, so a full store drops those first, oldest first, and only
/// then sessions never resumed from. The store thus keeps the newest ticket of as many clients as it
/// can hold, however many tickets each has used. A session from a full handshake holds the client's
/// parsed certificate (about 7 KiB in all with an ECDSA P-256 one); the sessions issued on
/// resumptions from it share that certificate and cost about one KiB each.
///
/// The store holds its own copies, and hands out copies: OpenSSL marks the session a connection
/// uses unresumable when that connection ends without close_notify, and changes the one it resumes
/// from; neither may reach the stored one, which connections on other loops copy at any time.
final class OpenSSLServerSessionStore: @unchecked Sendable {
    /// Sessions kept at most: about 28 MiB if each came from its own full handshake.
    static let defaultCapacity = 4096

    private struct Entry {
        /// Owned: one reference, freed when the entry goes.
        let session: OpaquePointer
        /// Seconds since the epoch, as OpenSSL counts a session's lifetime.
        let expires: Int
        var resumedFrom = false
    }

    let capacity: Int
    private let lock = NSLock()
    /// Guarded by `lock`, as are both queues.
    private var sessions: [SessionID: Entry] = [:]
    /// Sessions not resumed from yet, in the order they were stored.
    private var neverResumedFrom = SessionIDQueue()
    /// Sessions resumed from at least once, in the order of their first resumption.
    private var superseded = SessionIDQueue()

    init(capacity: Int = OpenSSLServerSessionStore.defaultCapacity) {
        self.capacity = max(1, capacity)
    }

    deinit {
        removeAll()
    }

    var count: Int { lock.withLock { sessions.count } }

    /// Stores a copy of `original` under its ID, if that is a 32-byte one (the only kind a TLS 1.3
    /// stateful ticket carries).
    func store(copyOf original: OpaquePointer) {
        guard let id = SessionID(of: original), let session = SSL_SESSION_dup(original) else { return }
        let expires = SSL_SESSION_get_time(session) + SSL_SESSION_get_timeout(session)
        let now = Int(time(nil))
        var dropped: [OpaquePointer] = []
        lock.withLock {
            if let replaced = sessions.updateValue(Entry(session: session, expires: expires), forKey: id) {
                dropped.append(replaced.session)
            }
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
                while let first = firstLive(resumedFrom: resumed), sessions[first]!.expires <= now {
                    dropped.append(sessions.removeValue(forKey: first)!.session)
                }
            }
            while sessions.count > capacity,
                  let victim = firstLive(resumedFrom: true) ?? firstLive(resumedFrom: false) {
                dropped.append(sessions.removeValue(forKey: victim)!.session)
            }
        }
        // Freed outside the lock: freeing a session can free a certificate and its key.
        dropped.forEach { SSL_SESSION_free($0) }
    }

    /// A private copy of the session stored under `id` (the caller owns it), or nil.
    func copy(id: UnsafeRawBufferPointer) -> OpaquePointer? {
        guard let key = SessionID(id) else { return nil }
        return lock.withLock {
            guard let entry = sessions[key] else { return nil }
            if !entry.resumedFrom {
                sessions[key]!.resumedFrom = true
                superseded.append(key)
            }
            // Copied under the lock, so that an eviction on another loop cannot free it meanwhile.
            return SSL_SESSION_dup(entry.session)
        }
    }

    func removeAll() {
        let all = lock.withLock {
            defer {
                sessions.removeAll()
                neverResumedFrom.removeAll()
                superseded.removeAll()
            }
            return sessions.values.map(\.session)
        }
        all.forEach { SSL_SESSION_free($0) }
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
