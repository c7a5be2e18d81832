#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the secrets of every handshake go when the user asks for them (`--keylog FILE`): the NSS key
/// log format that Wireshark, tshark and curl's `SSLKEYLOGFILE` share, one line per secret:
/// `LABEL <client random, hex> <secret, hex>`.
///
/// The file is opened once, for appending (`O_APPEND|O_CREAT`, mode 0600 when created), and never
/// truncated: several processes (both ends of a proxy) and every loop of one process can log to the
/// same file. Each line goes out in one `write(2)`, and an `O_APPEND` write to a regular file lands
/// whole at the end, so concurrent writers never interleave within a line.
///
/// Backends only hand lines over (OpenSSL gives them formatted; GnuTLS gives a label and a secret).
/// Nothing else may print them: no description of this type, no log line and no error message carries
/// key material.
public final class TLSKeyLog: Sendable, CustomStringConvertible {
    /// The file, as given: named in the start-up warning and in errors.
    public let path: String
    /// Whether the file existed before and anyone but its owner may read it: O_CREAT's mode applies
    /// only to a file it creates, so an existing file keeps its permissions.
    public let isReadableByOthers: Bool
    private let descriptor: Int32

    /// Opens (or creates, 0600) `path` for appending. Nothing is written until a handshake runs.
    public init(path: String) throws(TLSError) {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw TLSError(.configuration(file: path, problem: .invalidSetting("the key log cannot be opened for appending (\(reason))")))
        }
        var status = stat()
        if fstat(descriptor, &status) == 0 {
            isReadableByOthers = status.st_mode & 0o044 != 0
        } else {
            isReadableByOthers = false
        }
        self.path = path
        self.descriptor = descriptor
    }

    deinit {
        close(descriptor)
    }

    /// Appends one line as OpenSSL formats it ("LABEL clientrandom secret"), adding the newline.
    public func append(line: UnsafePointer<CChar>) {
        let length = strlen(line)
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: length + 1, alignment: 1)
        defer {
            // The buffer held a secret: wipe it before giving the memory back.
            memset(bytes.baseAddress!, 0, bytes.count)
            bytes.deallocate()
        }
        bytes.baseAddress!.copyMemory(from: line, byteCount: length)
        bytes[length] = UInt8(ascii: "\n")
        appendWhole(UnsafeRawBufferPointer(bytes))
    }

    /// Appends "LABEL clientrandom secret", both values in lowercase hex, as GnuTLS hands them over.
    public func append(label: String, clientRandom: UnsafeRawBufferPointer, secret: UnsafeRawBufferPointer) {
        let labelBytes = Array(label.utf8)
        let length = labelBytes.count + 1 + clientRandom.count * 2 + 1 + secret.count * 2 + 1
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 1)
        defer {
            memset(bytes.baseAddress!, 0, bytes.count)
            bytes.deallocate()
        }
        var offset = 0
        func put(_ byte: UInt8) {
            bytes[offset] = byte
            offset += 1
        }
        let digits = Array("0123456789abcdef".utf8)
        labelBytes.forEach(put)
        put(UInt8(ascii: " "))
        for byte in clientRandom {
            put(digits[Int(byte >> 4)])
            put(digits[Int(byte & 0x0f)])
        }
        put(UInt8(ascii: " "))
        for byte in secret {
            put(digits[Int(byte >> 4)])
            put(digits[Int(byte & 0x0f)])
        }
        put(UInt8(ascii: "\n"))
        appendWhole(UnsafeRawBufferPointer(bytes))
    }

    /// One write(2) per line. A line is far below any limit on a regular file, so the kernel writes
    /// it whole; a failure (disk full) loses that line only, quietly, since the handshake must not
    /// depend on a debugging aid and the error could not be reported without naming what was lost.
    private func appendWhole(_ bytes: UnsafeRawBufferPointer) {
        var result: Int
        repeat {
            result = write(descriptor, bytes.baseAddress, bytes.count)
        } while result < 0 && errno == EINTR
    }

    public var description: String { "key log \(path)" }
}
