import Foundation
import Logging
import Loop
import TLSContract

/// What made a reload happen.
public enum ReloadTrigger: String, Sendable, CustomStringConvertible {
    case signal = "SIGHUP"
    case fileChange = "file change"
    case interval = "reload interval"
    /// An explicit call (an admin endpoint, a test).
    case request = "request"

    /// Watches and timers fire on their own; a person asked for the others, and gets an answer even
    /// when nothing changed.
    public var isAutomatic: Bool { self == .fileChange || self == .interval }
    public var description: String { rawValue }
}

/// How a reload ended.
public enum ReloadOutcome: Sendable {
    /// A new context is in place for new connections.
    case replaced(ServedCredentials)
    /// The files hold exactly what is served already (or, for an automatic trigger, exactly what
    /// failed last time): nothing was built.
    case unchanged
    /// The new files cannot be used; the previous context keeps serving.
    case failed(TLSError)
}

/// One reload, as observers see it.
public struct ReloadEvent: Sendable {
    public let trigger: ReloadTrigger
    public let outcome: ReloadOutcome
    /// When the outcome took effect (for `.replaced`: when new handshakes began to use it).
    public let finishedAt: Date
    /// How long reading, building and checking took.
    public let duration: TimeInterval

    /// A watch or timer that found nothing to do (the files unchanged, or as they were when the last
    /// reload failed): not worth reporting as "the last reload", and it would hide a failure.
    public var isIdleCheck: Bool {
        if trigger.isAutomatic, case .unchanged = outcome { return true }
        return false
    }
}

/// What a context serves: our certificate, the trust roots it checks peers with, its CRLs.
public struct ServedCredentials: Sendable, CustomStringConvertible {
    /// Our leaf (nil for a client without a certificate).
    public let leaf: CertificateSummary?
    /// The CA certificates of our own chain, after the leaf.
    public let intermediates: [CertificateSummary]
    public let trustRoots: [CertificateSummary]
    public let crlCount: Int
    /// Revoked serials over all CRLs.
    public let crlEntries: Int

    init(_ context: any TLSContext, snapshot: CredentialSnapshot) {
        let chain = context.certificateChainDER.compactMap { try? CertificateSummary(derEncoded: $0) }
        leaf = chain.first
        intermediates = Array(chain.dropFirst())
        var roots: [CertificateSummary] = []
        for source in snapshot.configuration.trustRoots {
            if let bytes = try? source.load(), let parsed = try? CertificateSummary.certificates(in: bytes, name: source.name) {
                roots += parsed
            }
        }
        trustRoots = roots
        crlCount = context.revocation.crls.count
        crlEntries = context.revocation.entryCount
    }

    /// One line: subject, serial, not-after, the number of trust roots and of CRL entries.
    public var description: String {
        var parts: [String] = []
        if let leaf {
            parts += ["subject=\(leaf.subject)", "serial=\(leaf.serialHex)", "not-after=\(DateText.format(leaf.notValidAfter))"]
        } else {
            parts.append("no certificate of our own")
        }
        parts.append("trust roots=\(trustRoots.count)")
        parts.append("CRL entries=\(crlEntries)" + (crlCount > 0 ? " (\(crlCount) CRL\(crlCount == 1 ? "" : "s"))" : ""))
        return parts.joined(separator: ", ")
    }
}

/// Credentials that reload without a restart: owns the `TLSContextProvider` a server (or a
/// long-lived client) asks for each new connection, the configuration it was built from and the
/// files that configuration reads.
///
/// A reload reads every file at once (`CredentialSnapshot`), builds a complete new context from
/// those bytes and, only if that works and our certificate is within its validity period, swaps it
/// in: connections that start afterwards use it; established ones keep the context they started
/// with and are never touched. Anything wrong (a missing or unreadable file, a key that does not
/// match the certificate, garbage PEM, a wrong PKCS#12 password, a certificate not yet valid or
/// already expired) keeps the previous context serving and logs exactly one error naming the file
/// and the reason; the next change is tried afresh. Files identical to what is served build
/// nothing (so a timer or a stray touch costs no ticket keys and no resumption).
///
/// Session tickets: a server's new context takes over the ticket keys and session store of the one
/// it replaces when the trust roots are byte for byte the same (our certificate renewed, a CRL
/// changed), so clients keep resuming through renewals; a resumed peer is still re-checked against
/// the new context's CRLs and its certificate's validity (`PeerVerification.checkResumed`). New
/// trust roots start new tickets, since a resumed peer's chain is not verified again.
///
/// Expiry: a warning, once per certificate, when our certificate or a CA in our chain or trust
/// bundle has less than a third of its lifetime left (`checkExpiry`, run on every reload and by
/// `ReloadTriggers` periodically).
///
/// Thread-safe: reloads are serialized; the provider is read by loops at any time.
public final class ReloadingContext: @unchecked Sendable {
    public let backend: any TLSBackend
    /// As given: file sources, which every reload reads again.
    public let configuration: TLSConfiguration
    public let provider: TLSContextProvider
    /// Every file the configuration reads, for a file watch.
    public let files: [String]
    private let logger: Logger

    private let lock = NSLock()
    /// Guarded by `lock`.
    private var servedSnapshot: CredentialSnapshot
    private var failedSnapshot: CredentialSnapshot?
    /// The last error reading the files (a missing file), so that a timer does not repeat it.
    private var failedRead: String?
    private var servedCredentials: ServedCredentials
    private var warnedAbout: Set<[UInt8]> = []
    private var observers: [@Sendable (ReloadEvent) -> Void] = []
    private var lastEvent: ReloadEvent?

    /// Builds the first context; failing here is the caller's start-up error (nothing to keep serving).
    public init(backend: any TLSBackend, configuration: TLSConfiguration, logger: Logger) throws(TLSError) {
        self.backend = backend
        self.configuration = configuration
        self.logger = logger
        files = CredentialSnapshot.paths(of: configuration)
        let snapshot = try CredentialSnapshot.read(configuration)
        let context = try backend.makeContext(snapshot.configuration)
        servedSnapshot = snapshot
        servedCredentials = ServedCredentials(context, snapshot: snapshot)
        provider = TLSContextProvider(context)
        logger.info("credentials loaded: \(verb) \(servedCredentials)")
        if let leaf = servedCredentials.leaf, leaf.notValidBefore > Date() {
            logger.warning("our certificate is not valid until \(DateText.format(leaf.notValidBefore)): peers will refuse it until then")
        }
        checkExpiry()
    }

    /// The context new connections get.
    public var context: any TLSContext { provider.context }

    public var served: ServedCredentials { lock.withLock { servedCredentials } }

    /// The most recent reload (nil until the first one), idle checks aside, for a status page.
    public var lastReload: ReloadEvent? { lock.withLock { lastEvent } }

    /// Calls `body` after every reload attempt (on the reloading thread; keep it short).
    public func observe(_ body: @escaping @Sendable (ReloadEvent) -> Void) {
        lock.withLock { observers.append(body) }
    }

    /// Reloads now. Serialized with every other reload.
    @discardableResult
    public func reload(_ trigger: ReloadTrigger, now: @autoclosure () -> Date = Date()) -> ReloadOutcome {
        let started = Date()
        let (outcome, observers): (ReloadOutcome, [@Sendable (ReloadEvent) -> Void]) = lock.withLock {
            (attempt(trigger, now: now()), self.observers)
        }
        let event = ReloadEvent(trigger: trigger, outcome: outcome, finishedAt: Date(),
                                duration: Date().timeIntervalSince(started))
        if !event.isIdleCheck { lock.withLock { lastEvent = event } }
        for observer in observers { observer(event) }
        return outcome
    }

    /// Under `lock`.
    private func attempt(_ trigger: ReloadTrigger, now: Date) -> ReloadOutcome {
        let snapshot: CredentialSnapshot
        do {
            snapshot = try CredentialSnapshot.read(configuration)
        } catch {
            if trigger.isAutomatic, failedRead == error.description {
                logger.debug("reload (\(trigger)): still \(error)")
                return .failed(error)
            }
            failedRead = error.description
            return fail(error, trigger)
        }
        failedRead = nil
        if snapshot == servedSnapshot {
            let message: Logger.Message = "reload (\(trigger)): the files are unchanged; still \(verb) \(servedCredentials)"
            if trigger.isAutomatic { logger.debug(message) } else { logger.info(message) }
            failedSnapshot = nil
            return .unchanged
        }
        if trigger.isAutomatic, snapshot == failedSnapshot {
            logger.debug("reload (\(trigger)): the files are as they were when the last reload failed; still \(verb) \(servedCredentials)")
            return .unchanged
        }
        // Tickets survive a reload that keeps the trust roots (our certificate renewed, a new CRL):
        // clients keep resuming, and a resumed peer is still checked against the new CRLs
        // (PeerVerification.checkResumed). New roots mean new tickets, since a resumed peer's chain
        // is not verified again.
        let keepsTickets = snapshot.trustRootContents == servedSnapshot.trustRootContents
        let context: any TLSContext
        do {
            context = try backend.makeContext(snapshot.configuration, succeeding: keepsTickets ? provider.context : nil)
            try checkValidity(of: context, now: now)
        } catch {
            failedSnapshot = snapshot
            return fail(error, trigger)
        }
        provider.replace(with: context)
        servedSnapshot = snapshot
        failedSnapshot = nil
        servedCredentials = ServedCredentials(context, snapshot: snapshot)
        let tickets = configuration.role == .server && configuration.sessionTicketsEnabled
            ? (keepsTickets ? "; session tickets kept" : "; new session tickets (the trust roots changed)") : ""
        logger.info("reloaded (\(trigger)): now \(verb) \(servedCredentials)\(tickets)")
        checkExpiryLocked(now: now)
        return .replaced(servedCredentials)
    }

    private func fail(_ error: TLSError, _ trigger: ReloadTrigger) -> ReloadOutcome {
        logger.error("reload (\(trigger)) failed, still \(verb) the previous credentials (\(servedCredentials)): \(error)")
        return .failed(error)
    }

    /// "serving" for a server, "using" for a client, in log lines.
    private var verb: String { configuration.role == .server ? "serving" : "using" }

    /// A renewal must be usable now: a certificate not valid yet (or expired already) is refused,
    /// where at start-up it is only warned about (there is nothing else to serve then).
    private func checkValidity(of context: any TLSContext, now: Date) throws(TLSError) {
        guard let der = context.certificateChainDER.first, let leaf = try? CertificateSummary(derEncoded: der) else { return }
        let file = CredentialSnapshot.identityName(of: configuration)
        if now < leaf.notValidBefore {
            throw TLSError(.configuration(file: file, problem: .certificateNotYetValid),
                           detail: "\(leaf.subject) serial \(leaf.serialHex) is valid from \(DateText.format(leaf.notValidBefore))")
        }
        if now > leaf.notValidAfter {
            throw TLSError(.configuration(file: file, problem: .certificateExpired),
                           detail: "\(leaf.subject) serial \(leaf.serialHex) expired at \(DateText.format(leaf.notValidAfter))")
        }
    }

    /// Warns, once per certificate, about our certificate and every CA we serve or trust that has
    /// less than a third of its lifetime left (or has expired).
    public func checkExpiry(now: Date = Date()) {
        lock.withLock { checkExpiryLocked(now: now) }
    }

    private func checkExpiryLocked(now: Date) {
        var watched: [(String, CertificateSummary)] = []
        if let leaf = servedCredentials.leaf { watched.append(("our certificate", leaf)) }
        watched += servedCredentials.intermediates.map { ("the intermediate CA of our chain", $0) }
        watched += servedCredentials.trustRoots.map { ("the trusted CA", $0) }
        for (role, certificate) in watched where certificate.isDueForRenewal(at: now) {
            guard warnedAbout.insert(certificate.der).inserted else { continue }
            let left = certificate.timeLeft(at: now)
            let state = left > 0
                ? "expires in \(DurationText.format(left)) (at \(DateText.format(certificate.notValidAfter))), less than a third of its \(DurationText.format(certificate.lifetime)) lifetime left"
                : "has expired (at \(DateText.format(certificate.notValidAfter)))"
            logger.warning("\(role) \(certificate.subject), serial \(certificate.serialHex), \(state): renew it")
        }
    }
}
