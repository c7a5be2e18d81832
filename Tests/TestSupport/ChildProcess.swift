import Foundation

/// A child process started with `posix_spawn`, its standard output and error going to a file.
///
/// Not Foundation's `Process`: under AddressSanitizer its descriptor scan reads past a heap buffer
/// (`findMaximumOpenFromProcSelfFD`), and its pipe reader needs a thread per child. A file needs
/// neither, and survives the child for a failure message.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    /// Where the child's stdout and stderr go; removed with this object.
    public let outputPath: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    /// Starts `executable` (an absolute path) with `arguments`, in `directory` if given, with
    /// `input` on its standard input (empty: /dev/null).
    public init(_ executable: String, _ arguments: [String], directory: String? = nil, input: String? = nil,
                environment: [String: String] = [:]) throws {
        let scratch = FileManager.default.temporaryDirectory.path + "/mtls-child-\(UUID().uuidString)"
        outputPath = scratch + ".out"
        var inputPath = "/dev/null"
        if let input {
            inputPath = scratch + ".in"
            try input.write(toFile: inputPath, atomically: false, encoding: .utf8)
        }
        defer { if input != nil { unlink(inputPath) } }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The child starts with default signal handling (our test process ignores SIGPIPE) and no
        // blocked signals (a test thread may block SIGTERM, which `terminate` relies on).
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { $1 }
        // Glibc's posix_spawn_file_actions_addchdir_np is not visible to Swift: coreutils' `env -C`
        // changes the directory instead.
        let command = directory.map { ["/usr/bin/env", "-C", $0, executable] } ?? [executable]
        let argv = (command + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let status = posix_spawn(&child, command[0], &actions, &attributes, argv, envp)
        guard status == 0 else {
            unlink(outputPath)
            throw SpawnError(executable: executable, code: status)
        }
        pid = child
    }

    deinit {
        terminate()
        unlink(outputPath)
    }

    public struct SpawnError: Error, CustomStringConvertible {
        public let executable: String
        public let code: Int32
        public var description: String { "cannot start \(executable): \(String(cString: strerror(code)))" }
    }

    /// Everything the child printed so far. Read with POSIX calls: Foundation's
    /// `String(contentsOfFile:)` leaks its buffer when the file is empty (seen under LeakSanitizer).
    public var output: String {
        let fd = open(outputPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = read(fd, &chunk, chunk.count)
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public var isRunning: Bool { reap(blocking: false) == nil }

    /// Waits for the child to exit; its exit status (128 + signal when killed by one).
    @discardableResult
    public func wait() -> Int32 { reap(blocking: true) ?? -1 }

    /// Waits up to `seconds`; nil if it is still running then.
    public func wait(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let status = reap(blocking: false) { return status }
            usleep(20_000)
        }
        return reap(blocking: false)
    }

    /// SIGTERM, up to five seconds' grace, then SIGKILL; waits for the exit.
    public func terminate() {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        if wait(seconds: 5) == nil {
            kill(pid, SIGKILL)
            wait()
        }
    }

    private func reap(blocking: Bool) -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        let result = waitpid(pid, &status, blocking ? 0 : WNOHANG)
        guard result == pid else { return nil }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift cannot call as macros.
        let signal = status & 0x7F
        exitStatus = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
        return exitStatus
    }
}
