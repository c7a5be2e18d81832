import TLSContract

/// The TLS record layer of one direction of a connection, seen from outside: split a byte stream into
/// records and cut the unencrypted handshake records differently. Re-framing changes no handshake
/// message, so the transcript both sides hash stays the same and the handshake must still complete.
public struct RecordFraming {
    /// One TLS record as it travels on the wire.
    public struct Record: Equatable, Sendable {
        public var contentType: UInt8
        public var legacyVersion: UInt16
        public var payload: [UInt8]

        public static let changeCipherSpec: UInt8 = 20
        public static let handshake: UInt8 = 22
        /// The most a record may carry (RFC 8446 §5.1, RFC 5246 §6.2.1).
        public static let maximumPlaintextLength = 16_384

        public var bytes: [UInt8] {
            [contentType, UInt8(legacyVersion >> 8), UInt8(legacyVersion & 0xFF),
             UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)] + payload
        }
    }

    /// Splits `stream` into whole records; the bytes of an unfinished last record are left over.
    public static func records(in stream: [UInt8]) -> (records: [Record], leftover: [UInt8]) {
        var records: [Record] = []
        var offset = 0
        while stream.count - offset >= 5 {
            let length = Int(stream[offset + 3]) << 8 | Int(stream[offset + 4])
            guard stream.count - offset - 5 >= length else { break }
            records.append(Record(contentType: stream[offset],
                                  legacyVersion: UInt16(stream[offset + 1]) << 8 | UInt16(stream[offset + 2]),
                                  payload: Array(stream[offset + 5 ..< offset + 5 + length])))
            offset += 5 + length
        }
        return (records, Array(stream[offset...]))
    }

    /// The largest handshake payload each re-framed record carries.
    public let maxHandshakePayload: Int
    /// Once the sender has sent ChangeCipherSpec, its TLS 1.2 handshake records are encrypted and
    /// cannot be cut anew; from then on records pass unchanged. (TLS 1.3 encrypts under type 23.)
    private var encrypting = false
    private var pending: [UInt8] = []

    public init(maxHandshakePayload: Int) {
        precondition(maxHandshakePayload > 0)
        self.maxHandshakePayload = maxHandshakePayload
    }

    /// Takes the next bytes one side sent and returns them re-framed: each run of unencrypted
    /// handshake records is joined and cut into records of at most `maxHandshakePayload` bytes.
    /// An unfinished record is held back until the rest of it arrives.
    public mutating func reframe(_ bytes: [UInt8]) -> [UInt8] {
        let (records, leftover) = Self.records(in: pending + bytes)
        pending = leftover
        var output: [UInt8] = []
        var handshakeRun: (version: UInt16, payload: [UInt8])?
        func flushRun() {
            guard let run = handshakeRun else { return }
            var start = 0
            while start < run.payload.count {
                let end = min(run.payload.count, start + maxHandshakePayload)
                output += Record(contentType: Record.handshake, legacyVersion: run.version,
                                 payload: Array(run.payload[start..<end])).bytes
                start = end
            }
            handshakeRun = nil
        }
        for record in records {
            if record.contentType == Record.handshake && !encrypting {
                if let run = handshakeRun, run.version != record.legacyVersion { flushRun() }
                handshakeRun = (record.legacyVersion, (handshakeRun?.payload ?? []) + record.payload)
                continue
            }
            flushRun()
            if record.contentType == Record.changeCipherSpec { encrypting = true }
            output += record.bytes
        }
        flushRun()
        return output
    }
}

extension InMemoryPair {
    /// Runs the connection like `pump()`, but hands every flight to `deliver` on its way, which
    /// passes it on (re-framed, cut, ...) with the `send` function it is given. Returns false on a
    /// livelock.
    @discardableResult
    public func relay(
        clientToServer: (_ flight: [UInt8], _ send: ([UInt8]) -> Void) -> Void,
        serverToClient: (_ flight: [UInt8], _ send: ([UInt8]) -> Void) -> Void,
        maxRounds: Int = 10_000
    ) -> Bool {
        // An empty delivery starts a side that has not been driven yet (the client's hello).
        inject([], into: client)
        inject([], into: server)
        for _ in 0..<maxRounds {
            var moved = false
            if client.pendingCiphertextCount > 0 {
                clientToServer(client.takeCiphertext()) { self.inject($0, into: self.server) }
                moved = true
            }
            if server.pendingCiphertextCount > 0 {
                serverToClient(server.takeCiphertext()) { self.inject($0, into: self.client) }
                moved = true
            }
            if !moved { return true }
        }
        return false
    }
}
