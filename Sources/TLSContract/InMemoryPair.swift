/// Two sessions wired back to back in memory: how the conformance suite, the benchmarks and the demo
/// drive every backend pair without sockets. Bytes move only when `pump` is called, so tests can cut, split or corrupt them.
public final class InMemoryPair {
    public let client: any TLSSession
    public let server: any TLSSession

    public private(set) var clientEvents = SessionLog()
    public private(set) var serverEvents = SessionLog()

    /// How ciphertext is cut on its way to the peer: `nil` delivers each flight whole.
    public var chunking: ((Int) -> [Int])?

    public init(client: any TLSSession, server: any TLSSession) {
        self.client = client
        self.server = server
    }

    /// Moves ciphertext back and forth until neither side has anything more to say.
    /// Returns false if it gave up after `maxRounds` (a livelock).
    @discardableResult
    public func pump(maxRounds: Int = 10_000) -> Bool {
        for _ in 0..<maxRounds {
            let a = step(from: client, to: server, log: &serverEvents)
            let b = step(from: server, to: client, log: &clientEvents)
            // A side that was never fed still needs one process() call to start (the client's hello).
            let c = drive(client, log: &clientEvents)
            let d = drive(server, log: &serverEvents)
            if !a && !b && !c && !d { return true }
        }
        return false
    }

    /// The whole handshake. True when both sides report it complete and neither failed.
    public func handshake() -> Bool {
        pump()
        return clientEvents.handshakeCompleted && serverEvents.handshakeCompleted
            && clientEvents.failure == nil && serverEvents.failure == nil
    }

    /// Delivers raw bytes to `session` as if the peer had sent them.
    public func inject(_ bytes: [UInt8], into session: any TLSSession) {
        session.receiveCiphertext(bytes)
        if session === client { _ = drive(client, log: &clientEvents) } else { _ = drive(server, log: &serverEvents) }
    }

    /// Ends the transport towards `session` (TCP FIN).
    public func endOfInput(to session: any TLSSession) {
        session.receiveEndOfInput()
        if session === client { _ = drive(client, log: &clientEvents) } else { _ = drive(server, log: &serverEvents) }
    }

    private func step(from sender: any TLSSession, to receiver: any TLSSession, log: inout SessionLog) -> Bool {
        guard sender.pendingCiphertextCount > 0 else { return false }
        let bytes = sender.takeCiphertext()
        if let chunking {
            var offset = 0
            for size in chunking(bytes.count) where offset < bytes.count {
                let end = min(bytes.count, offset + max(1, size))
                receiver.receiveCiphertext(Array(bytes[offset..<end]))
                _ = drive(receiver, log: &log)
                offset = end
            }
            if offset < bytes.count {
                receiver.receiveCiphertext(Array(bytes[offset...]))
                _ = drive(receiver, log: &log)
            }
        } else {
            // At most one socket read's worth at a time, processed before the next, as the event
            // loop does (and as TLSSessionLimits expects of every caller).
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + Self.largestDelivery)
                receiver.receiveCiphertext(Array(bytes[offset..<end]))
                _ = drive(receiver, log: &log)
                offset = end
            }
        }
        return true
    }

    /// The most ciphertext handed to a session in one call: the event loop's read buffer size.
    public static let largestDelivery = 256 * 1024

    /// Calls process() until the session is quiet; records what happened. True if anything did.
    private func drive(_ session: any TLSSession, log: inout SessionLog) -> Bool {
        guard log.failure == nil, !log.peerClosed else { return false }
        var progressed = false
        while true {
            switch session.process() {
            case .needsInput:
                return progressed || session.pendingCiphertextCount > 0
            case .handshakeComplete:
                log.handshakeCompleted = true
                progressed = true
            case .plaintextReady:
                session.takePlaintext(into: &log.plaintext, maxBytes: .max)
                progressed = true
            case .peerClosed:
                log.peerClosed = true
                return true
            case .failed(let error):
                log.failure = error
                return true
            }
        }
    }
}

/// What one side of an `InMemoryPair` has seen so far.
public struct SessionLog {
    public var handshakeCompleted = false
    public var plaintext: [UInt8] = []
    public var peerClosed = false
    public var failure: TLSError?
}
