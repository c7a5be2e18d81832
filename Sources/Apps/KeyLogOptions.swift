import ArgumentParser
import Logging
import TLSContract

/// `--keylog FILE` for every server and client: the secrets of each handshake, appended to FILE in
/// the NSS key log format, so Wireshark or tshark can decrypt a capture. Off unless given.
struct KeyLogOptions: ParsableArguments {
    @Option(name: .customLong("keylog"), help: ArgumentHelp(
        "Append the TLS secrets of every connection to this file (NSS key log format, for Wireshark or tshark; created 0600, never truncated). For debugging only: anyone who can read the file can decrypt the traffic.",
        valueName: "file"))
    var path: String?

    /// A server in plain mode or a --plain client has no TLS secrets to log: say so rather than ignore the flag.
    func checkUsed(withTLS usesTLS: Bool) throws {
        if path != nil && !usesTLS { throw ValidationError("--keylog records TLS secrets: it has no effect without TLS") }
    }

    /// Opens the key log (nil when none was asked for) and warns that it is on, once, at start.
    /// A file that cannot be opened stops the command before it listens or connects.
    func open(logger: Logger, command: String) throws -> TLSKeyLog? {
        guard let path else { return nil }
        let keyLog: TLSKeyLog
        do { keyLog = try TLSKeyLog(path: path) } catch {
            printError("mtls \(command): --keylog \(error.summary)")
            throw ExitCode(1)
        }
        logger.warning("key log on: the TLS secrets of every connection are appended to \(path); anyone who can read \(path) can decrypt this traffic")
        if keyLog.isReadableByOthers {
            logger.warning("the key log \(path) is readable by other users: restrict it (chmod 600)")
        }
        return keyLog
    }
}
