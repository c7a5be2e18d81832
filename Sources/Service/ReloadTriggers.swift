import Dispatch
import Foundation

/// What makes a `ReloadingContext` reload: signals (SIGHUP), a watch on its files, a fixed
/// interval. Everything runs on one serial queue, so reloads never overlap.
///
/// The file watch polls: every `pollInterval` it stats each path, following symlinks, and compares
/// a fingerprint (device, inode, size, modification and change times, and the path the symlinks
/// resolve to). Polling was chosen over inotify because it needs no special case for the ways
/// credentials get replaced: an in-place write changes the size or times; a rename into place (a
/// new inode) and a Kubernetes secret update (the `..data` symlink swapped to a new directory) both
/// change the inode the path resolves to; a file deleted and recreated later is seen both times.
/// inotify watches an inode, so after a rename or a symlink swap it must be re-armed on the new one
/// (and on the directories in between), which is where watchers usually lose events. A handful of
/// stat calls every 250 ms costs nothing measurable.
///
/// Debounce: a change starts a quiet period; the reload happens once the files have not changed
/// for `quietPeriod`, so a certificate written just before its key is loaded together with it,
/// not as a mismatched pair.
public final class ReloadTriggers: @unchecked Sendable {
    public struct Options: Sendable {
        /// Watch the files the configuration reads.
        public var watchFiles = true
        public var pollInterval: TimeInterval = 0.25
        public var quietPeriod: TimeInterval = 0.3
        /// Reload every so many seconds as well (nil: never).
        public var reloadInterval: TimeInterval?
        /// Signals that reload (servers use SIGHUP). Installing one ignores its default action.
        public var signals: [Int32] = []
        /// How often the expiry warnings are re-evaluated.
        public var expiryCheckInterval: TimeInterval = 60
        public init() {}
    }

    public let target: ReloadingContext
    public let options: Options
    private let queue = DispatchQueue(label: "swift-mtls.reload")
    /// Queue only.
    private var running = false
    private var fingerprints: [FileFingerprint?] = []
    private var changedAt: Date?
    private var lastExpiryCheck = Date()
    private var sources: [DispatchSourceProtocol] = []

    public init(_ target: ReloadingContext, options: Options = Options()) {
        self.target = target
        self.options = options
    }

    /// Nothing else can hold this object now (queue blocks hold it weakly), so no queue hop: one
    /// could deadlock if the last reference went away on the queue itself.
    deinit { sources.forEach { $0.cancel() } }

    public func start() {
        queue.sync {
            guard !running else { return }
            running = true
            fingerprints = target.files.map(FileFingerprint.init(path:))
            for number in options.signals {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler { [weak self] in self?.target.reload(.signal) }
                source.resume()
                sources.append(source)
            }
            if let interval = options.reloadInterval, interval > 0 {
                let timer = DispatchSource.makeTimerSource(queue: queue)
                timer.schedule(deadline: .now() + interval, repeating: interval)
                timer.setEventHandler { [weak self] in self?.target.reload(.interval) }
                timer.resume()
                sources.append(timer)
            }
            schedulePoll(after: options.pollInterval)
        }
    }

    /// Stops every trigger (a reload in progress finishes first).
    public func stop() {
        queue.sync {
            running = false
            sources.forEach { $0.cancel() }
            sources.removeAll()
        }
    }

    private func schedulePoll(after delay: TimeInterval) {
        queue.asyncAfter(deadline: .now() + delay) { [weak self] in self?.poll() }
    }

    /// Queue only.
    private func poll() {
        guard running else { return }
        let now = Date()
        if options.watchFiles {
            let current = target.files.map(FileFingerprint.init(path:))
            if current != fingerprints {
                fingerprints = current
                changedAt = now
            } else if let changed = changedAt, now.timeIntervalSince(changed) >= options.quietPeriod * 0.99 {
                changedAt = nil
                target.reload(.fileChange)
            }
        }
        if now.timeIntervalSince(lastExpiryCheck) >= options.expiryCheckInterval {
            lastExpiryCheck = now
            target.checkExpiry(now: now)
        }
        // While a change settles, look again exactly when the quiet period would end.
        schedulePoll(after: changedAt == nil ? options.pollInterval : options.quietPeriod)
    }
}

/// What identifies a file's contents without reading them: enough to see in-place writes, renames
/// into place and symlink swaps (see ReloadTriggers).
struct FileFingerprint: Equatable {
    let resolvedPath: String?
    let device: UInt64
    let inode: UInt64
    let size: Int64
    let modified: timespec
    let changed: timespec

    /// Nil when the path does not exist (or a symlink on it dangles).
    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        resolvedPath = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modified = info.st_mtim
        changed = info.st_ctim
    }

    static func == (lhs: FileFingerprint, rhs: FileFingerprint) -> Bool {
        lhs.resolvedPath == rhs.resolvedPath && lhs.device == rhs.device && lhs.inode == rhs.inode && lhs.size == rhs.size
            && lhs.modified.tv_sec == rhs.modified.tv_sec && lhs.modified.tv_nsec == rhs.modified.tv_nsec
            && lhs.changed.tv_sec == rhs.changed.tv_sec && lhs.changed.tv_nsec == rhs.changed.tv_nsec
    }
}
