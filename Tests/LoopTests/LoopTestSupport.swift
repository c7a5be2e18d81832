import Foundation
import Loop
import TLSBackends
import TLSContract
import Testing
import TestSupport

/// One client×server backend pair over real loopback sockets.
struct SocketPair: Sendable, CustomTestStringConvertible {
    let client: any TLSBackend
    let server: any TLSBackend
    static let all: [SocketPair] = TLSBackendRegistry.pairs.map { SocketPair(client: $0.client, server: $0.server) }
    var testDescription: String { "\(client.name) client → \(server.name) server" }

    func contexts(_ pki: TestPKI = .shared(.ecdsaP256)) throws -> (client: any TLSContext, server: any TLSContext) {
        let server = try server.makeContext(.mtlsServer(identity: pki.identity(pki.server), trustRoots: pki.trustRoots))
        let client = try client.makeContext(.mtlsClient(identity: pki.identity(pki.client), trustRoots: pki.trustRoots,
                                                        serverName: "localhost"))
        return (client, server)
    }
}

/// Echoes every byte back. Records how each connection ended.
final class EchoHandler: ConnectionHandler, @unchecked Sendable {
    let closes: Shared<[String]>
    init(closes: Shared<[String]>) { self.closes = closes }
    func connectionDidEstablish(_ connection: Connection) {}
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        try? connection.write(bytes)
    }
    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        let text = error.map { "\($0)" } ?? "clean"
        closes.with { $0.append(text) }
    }
}

/// Sends `payload`, reads until as many bytes came back, then closes. Reports through `done`.
/// Unchecked: its mutable state is touched only on the connection's loop; results cross through `outcome`.
final class EchoClient: ConnectionHandler, @unchecked Sendable {
    struct Outcome: Sendable {
        var received: [UInt8] = []
        var error: String?
        var established = false
        var identity: String?
    }
    let payload: [UInt8]
    let roundTrips: Int
    /// Bytes expected back per round trip: the payload's size unless the server answers otherwise.
    let replyBytes: Int
    let outcome = Shared(Outcome())
    let done = DispatchSemaphore(value: 0)
    private var received: [UInt8] = []
    private var tripsLeft: Int
    private var signalled = false

    init(payload: [UInt8], roundTrips: Int = 1, expectedReply: Int = 0) {
        self.payload = payload
        self.roundTrips = roundTrips
        self.replyBytes = expectedReply > 0 ? expectedReply : payload.count
        self.tripsLeft = roundTrips
    }

    func connectionDidEstablish(_ connection: Connection) {
        let identity = connection.peerIdentity?.displayName
        outcome.with { $0.established = true; $0.identity = identity }
        sendNext(connection)
    }

    private func sendNext(_ connection: Connection) {
        if payload.isEmpty {
            tripsLeft = 0
            connection.close()
            return
        }
        // Write in slices while the connection takes them, so a large payload respects backpressure.
        writeOffset = 0
        continueWriting(connection)
    }

    private var writeOffset = 0
    private func continueWriting(_ connection: Connection) {
        while writeOffset < payload.count && connection.isWritable {
            let end = min(payload.count, writeOffset + 64 * 1024)
            do { try payload[writeOffset..<end].withUnsafeBytes { try connection.write($0) } } catch {
                finish(error: "\(error)")
                return
            }
            writeOffset = end
        }
    }

    func connectionDidBecomeWritable(_ connection: Connection) { continueWriting(connection) }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        received.append(contentsOf: bytes)
        if received.count >= replyBytes * (roundTrips - tripsLeft + 1) {
            tripsLeft -= 1
            if tripsLeft > 0 { sendNext(connection) } else { connection.close() }
        }
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        finish(error: error.map { "\($0)" })
    }

    private func finish(error: String?) {
        guard !signalled else { return }
        signalled = true
        let received = self.received
        outcome.with { $0.received = received; if $0.error == nil { $0.error = error } }
        done.signal()
    }
}

/// Open file descriptors of this process, to prove nothing leaks.
func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// Sockets of this process whose local or remote port is `port` (from /proc/self/net/tcp{,6}):
/// unlike a count of every descriptor, this is not disturbed by other suites running meanwhile.
func openSockets(touchingPort port: Int) -> [String] {
    var inodes: Set<String> = []
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 9 else { continue }
            let ports = [fields[1], fields[2]].compactMap { $0.split(separator: ":").last.flatMap { Int($0, radix: 16) } }
            if ports.contains(port) { inodes.insert(String(fields[9])) }
        }
    }
    return openDescriptors().filter { entry in
        inodes.contains { entry.hasSuffix("socket:[\($0)]") }
    }
}

/// What each open descriptor of this process points at, for a leak's failure message.
func openDescriptors() -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return names.sorted().map { name in
        "\(name)->\((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)")) ?? "?")"
    }
}

extension ConnectionOptions {
    /// For clients that write and read at once: paced by `isWritable`, never stop reading.
    static var streamingClient: ConnectionOptions {
        var options = ConnectionOptions()
        options.stopsReadingWhileWritesBackUp = false
        return options
    }
}

/// A blocking POSIX socket for peers that misbehave on purpose: silent, half a hello, a reset.
final class RawSocket {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if status != 0 {
            Foundation.close(fd)
            throw ConnectionError.transport(code: -errno, operation: "raw connect")
        }
    }

    func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

    func shutdownWrite() { Foundation.shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with SO_LINGER 0: the peer sees a reset, not a FIN.
    func reset() {
        var linger = Foundation.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Foundation.linger>.size))
        Foundation.close(fd)
    }

    func close() { Foundation.close(fd) }

    /// Reads until the peer closes; true if it did within `seconds` (a guard, not a measurement).
    func waitForPeerClose(seconds: Int = 30) -> Bool {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }
}

/// Every loop test runs inside this suite, one at a time: they open real sockets and time out
/// stalled peers, so running them side by side (worse, under a sanitizer) only measures starvation.
@Suite(.serialized) enum LoopSuite {}
