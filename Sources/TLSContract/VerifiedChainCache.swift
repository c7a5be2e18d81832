import Crypto
import Foundation
import X509

/// Chains that passed full verification, so that a peer reconnecting with the same certificate
/// costs its CertificateVerify signature (checked by the TLS library on every handshake, never
/// skipped) instead of a chain build and a signature check per certificate again.
///
/// One cache per context, so a reload (a new context: new roots, CRLs or policy) starts empty; the
/// generation (SHA-256 over the trust roots, the CRLs and the policy) is part of every key anyway,
/// so that an entry can only ever answer for the trust it was verified under.
///
/// Why a hit is exactly as strict as the uncached path:
/// - **Key**: the exact DER of the chain as the peer presented it (each certificate's length, then
///   its bytes, in order), the peer's role, the expected name and the pinned key, and the
///   generation. Whatever the library and the contract check is a function of these and of the time:
///   a padded chain, another name, another role or another trust store is another key.
/// - **Only successes are stored**: a backend inserts after its library verified the chain AND
///   `PeerVerification.check` accepted it, with the identity the check returned. A failure is never
///   stored, so it is checked (and fails) in full every time.
/// - **Time**: the outcome of both checks changes with the clock only at known instants: a
///   certificate's notBefore or notAfter (every certificate presented, every one of the verified
///   path, and the trust roots that issued its top), and, for each CRL naming one of their issuers,
///   its nextUpdate and a thisUpdate not yet reached when the chain was verified (a newer CRL then
///   takes over). An entry answers only from the moment verification started until the first such
///   instant; past it, or with a clock set back before it, the entry is dropped and the full path runs.
///
/// Off for a whole process with `MTLS_VERIFIED_CHAIN_CACHE=off` in the environment (read once, by the
/// first context built): for measuring what the cache saves, never needed for correctness.
public final class VerifiedChainCache: @unchecked Sendable {
    /// A chain as presented, for one expected peer, under one generation.
    struct Key: Hashable, Sendable {
        /// The SHA-256 digest as four words: cheap to hash and compare.
        let words: (UInt64, UInt64, UInt64, UInt64)

        init(_ digest: SHA256Digest) {
            words = digest.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                 raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
            }
        }

        static func == (lhs: Key, rhs: Key) -> Bool { lhs.words == rhs.words }

        func hash(into hasher: inout Hasher) {
            hasher.combine(words.0)
            hasher.combine(words.1)
            hasher.combine(words.2)
            hasher.combine(words.3)
        }
    }

    /// What a hit gives back: the identity the full check returned, and the chain as the library
    /// verified it (leaf first; OpenSSL's includes the trust root), for the backend to report again.
    public struct Entry: Sendable {
        public let identity: PeerIdentity
        public let verifiedChainDER: [[UInt8]]
        /// The entry answers for `validFrom <= now < validUntil` (see the type's doc).
        let validFrom: Date
        let validUntil: Date
        let cost: Int
    }

    public struct Statistics: Sendable, Hashable {
        public var hits = 0
        public var misses = 0
        public var insertions = 0
        /// Found, but outside its time window: dropped, and counted as a miss too.
        public var expirations = 0
        /// Dropped to stay within the bounds.
        public var evictions = 0
    }

    public static let defaultCapacity = 1024
    /// About 1,000 entries of a two-certificate chain (path and verified chain counted both).
    public static let defaultCapacityBytes = 4 * 1024 * 1024
    /// A chain larger than this is verified in full every time rather than stored.
    public static let largestEntryBytes = 64 * 1024
    /// Environment variable that turns the cache off for the process (`off`).
    public static let environmentSwitch = "MTLS_VERIFIED_CHAIN_CACHE"
    static let enabledByEnvironment: Bool = ProcessInfo.processInfo.environment[environmentSwitch] != "off"

    public let capacity: Int
    public let capacityBytes: Int
    /// SHA-256 over the trust roots, the CRLs and the policy.
    public let generation: [UInt8]
    private let anchors: [Certificate]
    private let crls: [CertificateRevocationList]

    private let lock = NSLock()
    // Guarded by `lock`: a clock (second-chance) replacement over `slots`.
    private var slots: [Slot?] = []
    private var slotOfKey: [Key: Int] = [:]
    private var freeSlots: [Int] = []
    private var hand = 0
    private var storedBytes = 0
    private var counters = Statistics()

    private struct Slot {
        let key: Key
        let entry: Entry
        var referenced: Bool
    }

    /// A context's cache, or nil when it verifies no peer or the environment turned caching off.
    /// `trustRootsDER` are the roots the backend loaded; `library` names the backend, whose own
    /// checks (floors, purposes) are part of the policy.
    public static func make(for configuration: TLSConfiguration, trustRootsDER: [[UInt8]],
                            revocation: RevocationList, library: String) -> VerifiedChainCache? {
        guard enabledByEnvironment else { return nil }
        guard configuration.role == .client || configuration.clientAuthentication != .none else { return nil }
        return VerifiedChainCache(configuration: configuration, trustRootsDER: trustRootsDER,
                                  revocation: revocation, library: library)
    }

    public init(configuration: TLSConfiguration, trustRootsDER: [[UInt8]], revocation: RevocationList,
                library: String, capacity: Int = defaultCapacity, capacityBytes: Int = defaultCapacityBytes) {
        self.capacity = max(1, capacity)
        self.capacityBytes = max(1, capacityBytes)
        self.anchors = trustRootsDER.compactMap { try? Certificate(derEncoded: $0) }
        self.crls = revocation.crls
        var hasher = SHA256()
        func add(_ bytes: [UInt8]) {
            hasher.update(data: Self.length(bytes.count))
            hasher.update(data: bytes)
        }
        func add(_ text: String) { add(Array(text.utf8)) }
        add(library)
        add("\(configuration.role) \(configuration.clientAuthentication)")
        add("chain<=\(PeerVerification.maximumChainLength) rsa>=\(PeerVerification.minimumRSAKeyBits)")
        add(configuration.pinnedServerPublicKey ?? [])
        add("roots \(trustRootsDER.count)")
        trustRootsDER.forEach(add)
        add("crls \(revocation.crls.count)")
        revocation.crls.map(\.der).forEach(add)
        self.generation = Array(hasher.finalize())
    }

    /// The key for a chain as the peer presented it (leaf first), checked as `peerRole` against
    /// `expectedName` and `pinnedPublicKey` (what `PeerVerification.check` is given).
    private func key(presentedChainDER chain: [[UInt8]], peerRole: TLSConfiguration.Role,
                    expectedName: String?, pinnedPublicKey: [UInt8]?) -> Key {
        var hasher = SHA256()
        hasher.update(data: generation)
        hasher.update(data: [peerRole == .server ? 1 : 2])
        for field in [expectedName.map { Array($0.utf8) }, pinnedPublicKey] {
            // Absent and empty differ: a presence byte, then length and bytes.
            hasher.update(data: [field == nil ? 0 : 1])
            hasher.update(data: Self.length(field?.count ?? 0))
            hasher.update(data: field ?? [])
        }
        hasher.update(data: Self.length(chain.count))
        for der in chain {
            hasher.update(data: Self.length(der.count))
            hasher.update(data: der)
        }
        return Key(hasher.finalize())
    }

    /// One verification's look-up: the entry if there is one that answers now, and what storing the
    /// outcome of a full verification needs (taken before the library starts: see `insert`).
    public struct Probe: Sendable {
        public let hit: Entry?
        let key: Key
        let presentedChainDER: [[UInt8]]
        let started: Date
    }

    /// What a backend calls first in its verification callback, with the chain as presented and what
    /// `PeerVerification.check` will be given.
    public func probe(presentedChainDER chain: [[UInt8]], peerRole: TLSConfiguration.Role, expectedName: String?,
                      pinnedPublicKey: [UInt8]?, now: Date = Date()) -> Probe {
        let key = key(presentedChainDER: chain, peerRole: peerRole, expectedName: expectedName,
                      pinnedPublicKey: pinnedPublicKey)
        return Probe(hit: lookup(key, now: now), key: key, presentedChainDER: chain, started: now)
    }

    /// After a miss (`probe.hit` nil): stores the chain if the library verified it and
    /// `PeerVerification.check` returned `identity` for it; `verifiedChainDER` is the chain as the
    /// library verified it (leaf first).
    public func insert(_ probe: Probe, identity: PeerIdentity, verifiedChainDER: [[UInt8]]) {
        insert(probe.key, identity: identity, verifiedChainDER: verifiedChainDER,
               presentedChainDER: probe.presentedChainDER, verificationStarted: probe.started)
    }

    /// The entry for `key` if it answers at `now`; an entry outside its window is dropped.
    private func lookup(_ key: Key, now: Date = Date()) -> Entry? {
        lock.withLock {
            guard let index = slotOfKey[key], let slot = slots[index] else {
                counters.misses += 1
                return nil
            }
            guard slot.entry.validFrom <= now, now < slot.entry.validUntil else {
                remove(at: index)
                counters.expirations += 1
                counters.misses += 1
                return nil
            }
            slots[index]?.referenced = true
            counters.hits += 1
            return slot.entry
        }
    }

    /// Stores a chain that passed the library's verification and `PeerVerification.check` (which
    /// returned `identity`). `verificationStarted` is a time taken before the library began, so that
    /// nothing that changed during verification is taken as already seen.
    private func insert(_ key: Key, identity: PeerIdentity, verifiedChainDER: [[UInt8]],
                       presentedChainDER: [[UInt8]], verificationStarted: Date) {
        guard let window = window(identity: identity, verifiedChainDER: verifiedChainDER,
                                  presentedChainDER: presentedChainDER, verificationStarted: verificationStarted)
        else { return }
        let cost = 256 + identity.certificateChainDER.reduce(0) { $0 + $1.count }
            + verifiedChainDER.reduce(0) { $0 + $1.count }
        guard cost <= min(Self.largestEntryBytes, capacityBytes) else { return }
        let entry = Entry(identity: identity, verifiedChainDER: verifiedChainDER,
                          validFrom: window.from, validUntil: window.until, cost: cost)
        lock.withLock {
            if let index = slotOfKey[key] { remove(at: index) }
            while !slotOfKey.isEmpty && (slotOfKey.count >= capacity || storedBytes + cost > capacityBytes) {
                evictOne()
            }
            let slot = Slot(key: key, entry: entry, referenced: false)
            let index: Int
            if let free = freeSlots.popLast() {
                index = free
                slots[index] = slot
            } else {
                index = slots.count
                slots.append(slot)
            }
            slotOfKey[key] = index
            storedBytes += cost
            counters.insertions += 1
        }
    }

    public var statistics: Statistics { lock.withLock { counters } }
    public var count: Int { lock.withLock { slotOfKey.count } }
    public var bytes: Int { lock.withLock { storedBytes } }

    /// Guarded by `lock`. The first slot the hand finds unreferenced since it last passed.
    private func evictOne() {
        while true {
            if hand >= slots.count { hand = 0 }
            if let slot = slots[hand] {
                if slot.referenced {
                    slots[hand]?.referenced = false
                } else {
                    remove(at: hand)
                    counters.evictions += 1
                    hand += 1
                    return
                }
            }
            hand += 1
        }
    }

    /// Guarded by `lock`.
    private func remove(at index: Int) {
        guard let slot = slots[index] else { return }
        slots[index] = nil
        slotOfKey.removeValue(forKey: slot.key)
        freeSlots.append(index)
        storedBytes -= slot.entry.cost
    }

    /// When the checks' outcome may next change (see the type's doc), or nil if a certificate
    /// cannot be parsed (then the chain is not stored).
    private func window(identity: PeerIdentity, verifiedChainDER: [[UInt8]], presentedChainDER: [[UInt8]],
                        verificationStarted: Date) -> (from: Date, until: Date)? {
        var parsed: [[UInt8]: Certificate] = [:]
        for der in presentedChainDER + verifiedChainDER + identity.certificateChainDER where parsed[der] == nil {
            guard let certificate = try? Certificate(derEncoded: der) else { return nil }
            parsed[der] = certificate
        }
        var certificates = Array(parsed.values)
        // The roots that may have issued the top of the path (several may share a name in a rotation).
        if let top = identity.certificateChainDER.last.flatMap({ parsed[$0] }) {
            certificates += anchors.filter { $0.subject == top.issuer }
        }
        var from = verificationStarted
        var until = Date.distantFuture
        for certificate in certificates {
            from = max(from, certificate.notValidBefore)
            until = min(until, certificate.notValidAfter)
        }
        let issuers = Set(certificates.map(\.issuer))
        // Clocks differ by up to a second between the libraries (whole seconds) and Foundation: a CRL
        // whose thisUpdate is that close may not have counted yet, so it ends the window at once.
        let settled = verificationStarted.addingTimeInterval(-2)
        for crl in crls where issuers.contains(crl.issuer) {
            if let nextUpdate = crl.nextUpdate { until = min(until, nextUpdate) }
            if crl.thisUpdate > settled { until = min(until, crl.thisUpdate) }
        }
        return (from, until)
    }

    private static func length(_ count: Int) -> [UInt8] {
        let value = UInt32(clamping: count)
        return [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
                UInt8(truncatingIfNeeded: value)]
    }
}
