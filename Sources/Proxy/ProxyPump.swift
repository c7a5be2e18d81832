import Logging
import Loop
import TLSContract

/// Forwards bytes between a client connection and a target connection, both ways, losing none.
///
/// A pump is the handler of an accepted client connection (give `TCPServer` one per connection,
/// with `forwardingOptions`). It opens the target connection only from `connectionDidEstablish`,
/// that is after the client's certificate was verified and `ConnectionOptions.authorize` admitted
/// it: a refused client never causes a connection to the target. Then it is the handler of both.
///
/// - Backpressure, per direction: when the receiving side is not writable, the sending side stops
///   reading until the receiver reports `connectionDidBecomeWritable`. Until the target is up the
///   client is not read either. What a connection had already read when it was paused (one read
///   at most) is still forwarded, so a pair holds about its connections' high-water marks plus one
///   read each way, however fast one side sends and however slowly the other reads.
/// - Half-close: a side that ends its half (TCP EOF, or close_notify for TLS) has the other side's
///   write half shut after everything before it is written; the opposite direction keeps flowing.
/// - Close: when one side closes (cleanly or not), the other is closed after its queued bytes are
///   written (`Connection.close()`, bounded by its close timeout).
///
/// Confined to the client connection's loop; the target connection is opened on the same loop.
public final class ProxyPump: ConnectionHandler {
    /// Connection options a pump needs on both of its connections: the peer's end must not close
    /// the connection (it is forwarded instead), and each connection must keep reading while its
    /// own writes back up, since pausing is the pump's decision, per direction. With the default
    /// (stop reading while our writes back up) a slow reader on one side would also stop the
    /// other direction of the same pair.
    public static func forwardingOptions(_ options: ConnectionOptions) -> ConnectionOptions {
        var options = options
        options.allowsHalfClose = true
        options.stopsReadingWhileWritesBackUp = false
        return options
    }

    private enum TargetState {
        case notStarted
        case connecting
        case connected(Connection)
        case closed
    }

    /// One direction of the pair.
    private final class Flow {
        var bytes: UInt64 = 0
        /// The sending side was paused because the receiving side could not take more (or, towards
        /// the target, was not connected yet).
        var sourcePaused = false
    }

    private let target: ProxyTarget
    private let pairs: ProxyPairs
    private let logger: Logger

    /// Nil until the client is established (verified and authorized).
    private var client: Connection?
    private var clientClosed = false
    private var targetState = TargetState.notStarted
    private var pairStarted = false
    private var pairFinished = false

    /// Bytes the client sent before the target connection was up (the client is paused from the
    /// moment it is established, so this is at most what that moment's read had brought in).
    private var heldForTarget: [UInt8] = []
    /// The client ended its half before the target connection was up.
    private var clientEndedEarly = false
    private let toTarget = Flow()
    private let toClient = Flow()
    private var peakBytesHeld = 0

    public init(target: ProxyTarget, pairs: ProxyPairs, logger: Logger) {
        self.target = target
        self.pairs = pairs
        self.logger = logger
    }

    private var targetConnection: Connection? {
        if case .connected(let connection) = targetState { return connection }
        return nil
    }

    /// The client is the first connection this pump hears of; every other one is the target.
    private func isClient(_ connection: Connection) -> Bool {
        client == nil || connection === client
    }

    // MARK: ConnectionHandler

    public func connectionDidEstablish(_ connection: Connection) {
        if isClient(connection) {
            clientEstablished(connection)
        } else {
            targetEstablished(connection)
        }
    }

    public func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        guard let client else { return }
        if connection === client {
            if let targetConnection {
                forward(bytes, from: client, to: targetConnection, flow: toTarget)
            } else {
                heldForTarget.append(contentsOf: bytes)
                notePeak()
            }
        } else {
            forward(bytes, from: connection, to: client, flow: toClient)
        }
    }

    public func connectionDidBecomeWritable(_ connection: Connection) {
        if isClient(connection) {
            resume(toClient, source: targetConnection)
        } else {
            resume(toTarget, source: client)
        }
    }

    public func connectionDidReceiveEnd(_ connection: Connection) {
        if isClient(connection) {
            if let targetConnection {
                targetConnection.shutdownWrite()
            } else {
                clientEndedEarly = true
            }
        } else {
            client?.shutdownWrite()
        }
    }

    public func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
        if isClient(connection) {
            clientDidClose(connection, error: error)
        } else {
            targetDidClose(connection, error: error)
        }
        finishIfDone()
    }

    // MARK: The client side

    private func clientEstablished(_ connection: Connection) {
        guard pairs.start() else {
            logger.info("refusing a connection: the proxy is shutting down", metadata: ["peer": "\(connection.remoteAddress)"])
            connection.close()
            return
        }
        pairStarted = true
        client = connection
        // Nothing is read from the client until there is somewhere to send it.
        toTarget.sourcePaused = true
        connection.pauseReading()
        targetState = .connecting
        pairs.targetConnectionAttempted()
        let pump = LoopBound(self, on: connection.loop)
        TCPClient.connect(on: connection.loop, to: target.address, tls: target.tls, serverName: target.serverName,
                          options: Self.forwardingOptions(target.connection)) { pump.unwrapped }
    }

    private func clientDidClose(_ connection: Connection, error: ConnectionError?) {
        if !pairStarted {
            // A handshake that failed or was refused: no pair, no target.
            if let error { logger.info("client refused", metadata: ["peer": "\(connection.remoteAddress)", "error": "\(error)"]) }
            return
        }
        clientClosed = true
        if let error { logger.info("client connection failed", metadata: ["peer": "\(connection.remoteAddress)", "error": "\(error)"]) }
        switch targetState {
        case .connected(let target): target.close()
        case .notStarted: targetState = .closed
        case .connecting, .closed: break  // a connection still on its way is closed when it arrives
        }
    }

    // MARK: The target side

    private func targetEstablished(_ connection: Connection) {
        guard let client, !clientClosed else {
            connection.close()
            return
        }
        targetState = .connected(connection)
        var metadata: Logger.Metadata = ["client": "\(client.remoteAddress)", "target": "\(connection.remoteAddress)"]
        if let identity = client.peerIdentity { metadata["identity"] = "\(identity.displayName)" }
        if let identity = connection.peerIdentity { metadata["target-identity"] = "\(identity.displayName)" }
        logger.info("forwarding", metadata: metadata)
        if target.proxyProtocol == .v2 { sendProxyProtocolHeader(describing: client, to: connection) }
        if !heldForTarget.isEmpty {
            let held = heldForTarget
            heldForTarget = []
            held.withUnsafeBytes { forward($0, from: client, to: connection, flow: toTarget) }
        }
        if clientEndedEarly { connection.shutdownWrite() }
        if connection.isWritable { resume(toTarget, source: client) }
    }

    /// The header goes before any byte of the client's, in the same queue, so the target reads it first.
    private func sendProxyProtocolHeader(describing client: Connection, to targetConnection: Connection) {
        guard let addresses = client.socketAddresses else { return }  // the client is gone: nothing will follow
        let tls = client.isTLS ? ProxyProtocolHeader.ClientTLS(identity: client.peerIdentity, negotiated: client.negotiated) : nil
        let header = ProxyProtocolHeader.make(source: addresses.peer, destination: addresses.local, tls: tls)
        // Not counted as forwarded bytes; a write that fails means the target is closing, which closes the client.
        header.withUnsafeBytes { _ = try? targetConnection.write($0) }
    }

    private func targetDidClose(_ connection: Connection, error: ConnectionError?) {
        if case .connecting = targetState, let error, !clientClosed {
            logger.warning("cannot reach the target", metadata: ["target": "\(target.address)", "error": "\(error)"])
        } else if let error {
            logger.info("target connection failed", metadata: ["target": "\(connection.remoteAddress)", "error": "\(error)"])
        }
        targetState = .closed
        client?.close()
    }

    // MARK: Forwarding

    private func forward(_ bytes: UnsafeRawBufferPointer, from source: Connection, to sink: Connection, flow: Flow) {
        do {
            try sink.write(bytes)
        } catch {
            // The sink is closing or closed: its close closes the source too.
            return
        }
        flow.bytes += UInt64(bytes.count)
        notePeak()
        if !sink.isWritable && !flow.sourcePaused {
            flow.sourcePaused = true
            pairs.pausedForBackpressure()
            source.pauseReading()
        }
    }

    private func resume(_ flow: Flow, source: Connection?) {
        guard flow.sourcePaused, let source else { return }
        flow.sourcePaused = false
        // May deliver data at once, and so re-enter `forward`, which may pause it again.
        source.resumeReading()
    }

    private func notePeak() {
        let held = heldForTarget.count + (client?.queuedOutboundBytes ?? 0) + (targetConnection?.queuedOutboundBytes ?? 0)
        peakBytesHeld = max(peakBytesHeld, held)
    }

    private func finishIfDone() {
        guard pairStarted, !pairFinished, clientClosed, case .closed = targetState else { return }
        pairFinished = true
        logger.debug("pair closed", metadata: ["to-target": "\(toTarget.bytes)", "to-client": "\(toClient.bytes)"])
        pairs.finish(bytesToTarget: toTarget.bytes, bytesToClient: toClient.bytes, peakBytesHeld: peakBytesHeld)
    }
}
