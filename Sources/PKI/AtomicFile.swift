import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes files the way a watcher must see them: whole or not at all.
///
/// The bytes go to a temporary file in the target's own folder (a rename is atomic only within one
/// file system), created with its final mode so a key is never readable by others, not even empty;
/// the file is fsync'ed, then renamed over the target (`replace`) or linked to it (`link` fails if
/// the target exists, so "never overwrite" holds even against a concurrent writer), and the folder
/// is fsync'ed so that the new name survives a crash. A process reading the target meanwhile sees the
/// old file or the new one, never a half-written one; a file watch sees one rename.
public enum AtomicFile {
    /// Writes `bytes` to `path` with `mode`. Without `replace`, an existing `path` (even a dangling
    /// symlink) is `PKIError.fileExists` and nothing changes. A symlink at `path` is refused either
    /// way: following it would write elsewhere, and replacing it would undo whoever set it up.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t, replace: Bool) throws(PKIError) {
        var info = stat()
        if lstat(path, &info) == 0 {
            guard replace else { throw PKIError.fileExists(path: path) }
            guard (info.st_mode & S_IFMT) != S_IFLNK else {
                throw PKIError.fileSystem(path: path, reason: "it is a symbolic link; not replacing it")
            }
        }
        let folder = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let temporary = ((folder.isEmpty ? "." : folder) as NSString)
            .appendingPathComponent(".\(name).tmp-\(getpid())-\(UInt32.random(in: .min ... .max))")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw failure(path, "cannot create a temporary file next to it: ", errno) }
        var published = false
        defer { if !published { unlink(temporary) } }
        do {
            defer { close(fd) }
            // The umask may have narrowed `mode`; set it exactly, before any byte lands.
            guard fchmod(fd, mode) == 0 else { throw failure(path, "cannot set mode \(String(mode, radix: 8)): ", errno) }
            var written = 0
            while written < bytes.count {
                let result = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if result < 0 {
                    if errno == EINTR { continue }
                    throw failure(path, "", errno)
                }
                written += result
            }
            guard fsync(fd) == 0 else { throw failure(path, "fsync: ", errno) }
        }
        if replace {
            guard rename(temporary, path) == 0 else { throw failure(path, "rename: ", errno) }
        } else {
            guard link(temporary, path) == 0 else {
                let code = errno
                if code == EEXIST { throw PKIError.fileExists(path: path) }
                throw failure(path, "link: ", code)
            }
            unlink(temporary)
        }
        published = true
        syncFolder(folder.isEmpty ? "." : folder)
    }

    public static func write(_ text: String, to path: String, mode: mode_t, replace: Bool) throws(PKIError) {
        try write(Array(text.utf8), to: path, mode: mode, replace: replace)
    }

    /// Moves `path` to `destination` (same file system), refusing to replace an existing destination.
    static func move(_ path: String, to destination: String) throws(PKIError) {
        guard link(path, destination) == 0 else {
            let code = errno
            if code == EEXIST { throw PKIError.fileExists(path: destination) }
            throw failure(destination, "link: ", code)
        }
        guard unlink(path) == 0 else { throw failure(path, "unlink: ", errno) }
        syncFolder((path as NSString).deletingLastPathComponent)
        syncFolder((destination as NSString).deletingLastPathComponent)
    }

    /// Best effort: a folder that cannot be opened (no permission) still got the rename.
    private static func syncFolder(_ folder: String) {
        let fd = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    private static func failure(_ path: String, _ what: String, _ code: Int32) -> PKIError {
        .fileSystem(path: path, reason: what + String(cString: strerror(code)))
    }
}
