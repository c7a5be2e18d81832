import Foundation
import Logging
import Loop
import Proxy
import TLSBackends
import TLSContract
import Testing
import TestSupport

/// Every proxy test runs inside this suite, one at a time: they stream megabytes over real sockets
/// on two shared cores, and side by side they would only measure each other.
@Suite(.serialized) enum ProxySuite {}

/// The backends of one proxy chain: the proxy client's (which originates mTLS) and the proxy
/// server's (which terminates it).
struct BackendPair: Sendable, CustomTestStringConvertible {
    let client: any TLSBackend
    let server: any TLSBackend
    static let all: [BackendPair] = TLSBackendRegistry.pairs.map { BackendPair(client: $0.client, server: $0.server) }
    /// One pair, for behaviour that does not depend on the backends: GnuTLS on both sides, the
    /// faster of the two in a debug build (see `OpenSSLSession.takeCiphertext` in the proxy's notes).
    static let single = BackendPair(client: TLSBackendRegistry.backend(named: "gnutls")!,
                                    server: TLSBackendRegistry.backend(named: "gnutls")!)
    var testDescription: String { "\(client.name) proxy client → \(server.name) proxy server" }
}

/// Test payloads that differ per connection, so that bytes crossing between pairs would show.
func payload(_ count: Int, seed: UInt64) -> [UInt8] {
    var random = SeededRandom(seed: seed)
    return random.bytes(count)
}

/// Connections (of any handler) held back from reading until the test opens the gate: a peer that
/// reads nothing for a while, then everything.
final class ReadGate: @unchecked Sendable {
    private let lock = NSLock()
    private var isOpen = false
    private var waiting: [@Sendable () -> Void] = []

    /// Called on `connection`'s loop: pauses it if the gate is still closed.
    func hold(_ connection: Connection) {
        lock.lock()
        defer { lock.unlock() }
        guard !isOpen else { return }
        connection.pauseReading()
        let held = UncheckedSendable(connection)
        waiting.append { [loop = connection.loop] in loop.execute { held.value.resumeReading() } }
    }

    func open() {
        lock.lock()
        isOpen = true
        let resumes = waiting
        waiting = []
        lock.unlock()
        resumes.forEach { $0() }
    }
}

/// A loop-confined object carried to its loop through a `@Sendable` closure.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// The proxies' target: a plain TCP service in the test process that counts what it accepts.
final class TestTarget: @unchecked Sendable {
    enum Behaviour: Sendable {
        /// Sends back every byte; ends its half when the client has ended its own and all is echoed.
        case echo
        /// Sends `greeting`, ends its half at once, and keeps reading what the client sends.
        case greetThenListen([UInt8])
    }

    let server: TCPServer
    let accepted = Shared(0)
    /// With `greetThenListen`: what each connection received, once it closed.
    let received = Shared<[[UInt8]]>([])
    var port: Int { server.port }

    init(group: LoopGroup, behaviour: Behaviour = .echo, gate: ReadGate? = nil) throws {
        var options = TCPServer.Options()
        options.connection.allowsHalfClose = true
        let accepted = self.accepted
        let received = self.received
        server = try TCPServer(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: nil, options: options) {
            TargetConnection(behaviour: behaviour, gate: gate, accepted: accepted, received: received)
        }
    }

    func shutdown() { server.shutdown(graceful: false) }
}

private final class TargetConnection: ConnectionHandler {
    let behaviour: TestTarget.Behaviour
    let gate: ReadGate?
    let accepted: Shared<Int>
    let received: Shared<[[UInt8]]>
    private var collected: [UInt8] = []

    init(behaviour: TestTarget.Behaviour, gate: ReadGate?, accepted: Shared<Int>, received: Shared<[[UInt8]]>) {
        self.behaviour = behaviour
        self.gate = gate
        self.accepted = accepted
        self.received = received
    }

    func connectionDidEstablish(_ connection: Connection) {
        accepted.with { $0 += 1 }
        gate?.hold(connection)
        if case .greetThenListen(let greeting) = behaviour {
            try? connection.write(greeting)
            connection.shutdownWrite()
        }
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        switch behaviour {
        case .echo: try? connection.write(bytes)
        case .greetThenListen: collected.append(contentsOf: bytes)
        }
    }

    func connectionDidReceiveEnd(_ connection: Connection) { connection.shutdownWrite() }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        if case .greetThenListen = behaviour {
            let collected = self.collected
            received.with { $0.append(collected) }
        }
    }
}

/// A logger that drops everything: the proxies' per-connection lines would drown test output.
let quietLogger = Logger(label: "proxy-tests") { _ in SwiftLogNoOpLogHandler() }

/// proxy client (plain in, mTLS out) → proxy server (mTLS in, plain out) → a target, in process.
final class ProxyChain: @unchecked Sendable {
    let group: LoopGroup
    let target: TestTarget
    let proxyServer: ProxyListener
    let proxyClient: ProxyListener
    var clientPort: Int { proxyClient.address.port }
    var serverPort: Int { proxyServer.address.port }

    /// `authorize`: the proxy server's decision on client identities (default: any verified client).
    /// `targetPort`, `targetEndpoint`: send the proxy server's pairs there instead of to `target`.
    init(_ backends: BackendPair, target behaviour: TestTarget.Behaviour = .echo, targetGate: ReadGate? = nil,
         authorize: (@Sendable (PeerIdentity?) -> Bool)? = nil, targetPort: Int? = nil,
         targetConnection: ConnectionOptions = ConnectionOptions(), proxyProtocol: ProxyProtocolVersion? = nil,
         targetEndpoint: Endpoint? = nil) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        group = LoopGroup(count: 2)
        target = try TestTarget(group: group, behaviour: behaviour, gate: targetGate)
        let serverContext = try backends.server.makeContext(.mtlsServer(identity: pki.identity(pki.server), trustRoots: pki.trustRoots))
        var serverOptions = TCPServer.Options()
        serverOptions.connection.authorize = authorize
        proxyServer = try ProxyListener(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: TLSContextProvider(serverContext),
                                        options: serverOptions,
                                        target: ProxyTarget(address: targetEndpoint ?? .tcp(HostAndPort(host: "127.0.0.1", port: targetPort ?? target.port)),
                                                            connection: targetConnection, proxyProtocol: proxyProtocol),
                                        logger: quietLogger)
        let clientContext = try backends.client.makeContext(.mtlsClient(identity: pki.identity(pki.client), trustRoots: pki.trustRoots,
                                                                        serverName: "localhost"))
        proxyClient = try ProxyListener(group: group, listen: HostAndPort(host: "127.0.0.1", port: 0), tls: nil,
                                        target: ProxyTarget(address: .tcp(HostAndPort(host: "127.0.0.1", port: proxyServer.address.port)),
                                                            tls: clientContext),
                                        logger: quietLogger)
    }

    /// Waits until both proxies have finished every pair they started (closing is asynchronous).
    func waitUntilIdle() -> Bool {
        eventually {
            proxyClient.pairs.snapshot.open == 0 && proxyServer.pairs.snapshot.open == 0
        }
    }

    func shutdown() {
        proxyClient.shutdown(drainTimeout: .zero)
        proxyServer.shutdown(drainTimeout: .zero)
        target.shutdown()
        group.shutdown()
    }
}

/// A plain TCP client of the chain: streams `payload` (paced by backpressure) and reads what comes
/// back. It ends either by closing once `expectedReply` bytes came back, or by shutting down its
/// write half as soon as everything is sent and waiting for the peer to end its own.
final class StreamClient: ConnectionHandler, @unchecked Sendable {
    enum Ending: Sendable { case closeAfterReply, halfCloseAfterSending }

    struct Outcome: Sendable {
        var received: [UInt8] = []
        var error: ConnectionError?
        var sawPeerEnd = false
    }

    let payload: [UInt8]
    let ending: Ending
    let expectedReply: Int
    /// Send nothing until the peer has ended its half (a target that speaks first and is done).
    let sendsAfterPeerEnds: Bool
    let readGate: ReadGate?
    let done = DispatchSemaphore(value: 0)
    let outcome = Shared(Outcome())
    /// Bytes handed to the connection so far, for tests that watch the client being held back.
    let sent = Shared(0)
    private var received: [UInt8] = []
    private var offset = 0
    private var sending = false

    init(payload: [UInt8], ending: Ending = .closeAfterReply, expectedReply: Int? = nil, sendsAfterPeerEnds: Bool = false,
         readGate: ReadGate? = nil) {
        self.payload = payload
        self.ending = ending
        self.expectedReply = expectedReply ?? payload.count
        self.sendsAfterPeerEnds = sendsAfterPeerEnds
        self.readGate = readGate
        received.reserveCapacity(self.expectedReply)
    }

    /// Connects to 127.0.0.1:`port` on one of `group`'s loops.
    func start(group: LoopGroup, port: Int) {
        var options = ConnectionOptions()
        options.stopsReadingWhileWritesBackUp = false
        options.allowsHalfClose = true
        TCPClient.connect(on: group.next(), to: HostAndPort(host: "127.0.0.1", port: port), tls: nil, options: options) { self }
    }

    func connectionDidEstablish(_ connection: Connection) {
        readGate?.hold(connection)
        if !sendsAfterPeerEnds { startSending(connection) }
    }

    private func startSending(_ connection: Connection) {
        sending = true
        pump(connection)
    }

    private func pump(_ connection: Connection) {
        guard sending else { return }
        while offset < payload.count && connection.isWritable {
            let end = min(payload.count, offset + 64 * 1024)
            do { try payload[offset..<end].withUnsafeBytes { try connection.write($0) } } catch { return }
            sent.with { $0 = end }
            offset = end
        }
        if offset == payload.count && ending == .halfCloseAfterSending { connection.shutdownWrite() }
    }

    func connectionDidBecomeWritable(_ connection: Connection) { pump(connection) }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        received.append(contentsOf: bytes)
        if ending == .closeAfterReply && received.count >= expectedReply { connection.close() }
    }

    func connectionDidReceiveEnd(_ connection: Connection) {
        outcome.with { $0.sawPeerEnd = true }
        if sendsAfterPeerEnds {
            startSending(connection)
        } else if ending == .closeAfterReply {
            connection.close()  // no more reply can come
        }
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        let received = self.received
        outcome.with {
            $0.received = received
            $0.error = error
        }
        done.signal()
    }
}
