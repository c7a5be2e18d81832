import TLSContract
import Testing
import TestSupport

@Suite("Application data")
struct DataTransferTests {
    static let sizes = [0, 1, 16_383, 16_384, 16_385, 1 << 20]

    @Test("Data flows both ways byte-exact", arguments: BackendPair.all)
    func bothWays(pair: BackendPair) throws {
        for version in TLSVersion.allCases {
            let connection = try pair.established(version: version)
            var random = SeededRandom(seed: 42)
            for size in Self.sizes {
                let fromClient = random.bytes(size)
                let fromServer = random.bytes(size)
                let clientBefore = connection.clientEvents.plaintext.count
                let serverBefore = connection.serverEvents.plaintext.count
                try connection.client.writePlaintext(fromClient)
                try connection.server.writePlaintext(fromServer)
                #expect(connection.pump())
                #expect(Array(connection.serverEvents.plaintext[serverBefore...]) == fromClient, "\(version) \(size) bytes")
                #expect(Array(connection.clientEvents.plaintext[clientBefore...]) == fromServer, "\(version) \(size) bytes")
            }
        }
    }

    @Test("The handshake and data survive ciphertext fed one byte at a time", arguments: BackendPair.all)
    func oneByteAtATime(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let connection = try pair.connect(client: pki.clientConfiguration(), server: pki.serverConfiguration())
        connection.chunking = { count in Array(repeating: 1, count: count) }
        try #require(connection.handshake())
        try exchange(SeededRandom(seed: 7).bytesOf(40_000), over: connection)
    }

    @Test("1 MiB survives ciphertext fed in random chunks", arguments: BackendPair.all)
    func randomChunks(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let connection = try pair.connect(client: pki.clientConfiguration(), server: pki.serverConfiguration())
        var chunkSizes = SeededRandom(seed: 1234)
        connection.chunking = { count in
            var sizes: [Int] = []
            var total = 0
            while total < count {
                let size = Int.random(in: 1...3000, using: &chunkSizes)
                sizes.append(size)
                total += size
            }
            return sizes
        }
        try #require(connection.handshake())
        try exchange(SeededRandom(seed: 99).bytesOf(1 << 20), over: connection)
    }

    /// Both sides send `payload` at once; each must receive exactly it.
    private func exchange(_ payload: [UInt8], over connection: InMemoryPair,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
        try connection.client.writePlaintext(payload)
        try connection.server.writePlaintext(payload)
        #expect(connection.pump(), sourceLocation: sourceLocation)
        expectSameBytes(connection.serverEvents.plaintext, payload, sourceLocation: sourceLocation)
        expectSameBytes(connection.clientEvents.plaintext, payload, sourceLocation: sourceLocation)
    }

    @Test("Data written before the handshake completes is sent right after it", arguments: BackendPair.all)
    func earlyWrite(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let connection = try pair.connect(client: pki.clientConfiguration(), server: pki.serverConfiguration())
        try connection.client.writePlaintext(Array("GET /hello".utf8))
        try #require(connection.handshake())
        #expect(connection.serverEvents.plaintext == Array("GET /hello".utf8))
    }

    @Test("Decrypted data beyond the plaintext limit waits until it is taken", arguments: BackendPair.all)
    func plaintextLimit(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let server = try pair.server.makeContext(pki.serverConfiguration()).makeSession()
        let client = try pair.client.makeContext(pki.clientConfiguration()).makeSession()
        let connection = InMemoryPair(client: client, server: server)
        try #require(connection.handshake())
        let payload = SeededRandom(seed: 5).bytesOf(300_000)
        try client.writePlaintext(payload)
        server.receiveCiphertext(client.takeCiphertext())
        var received: [UInt8] = []
        var rounds = 0
        loop: while rounds < 10_000 {
            rounds += 1
            switch server.process() {
            case .plaintextReady:
                // Ask for at most one record's worth beyond the limit at a time.
                #expect(server.pendingPlaintextCount <= 64 * 1024 + 16_384)
                server.takePlaintext(into: &received, maxBytes: 10_000)
            case .needsInput:
                if server.pendingPlaintextCount == 0 { break loop }
                server.takePlaintext(into: &received, maxBytes: 10_000)
            default:
                Issue.record("unexpected progress")
                break loop
            }
        }
        expectSameBytes(received, payload)
    }
}

/// An established session decrypts as it receives, straight from the caller's bytes (which it may
/// not keep): whatever one read brings must come out in order, and only then the end or the failure.
@Suite("Several records in one read")
struct OneReadTests {
    @Test("Records and close_notify in one read: all the data, then the close", arguments: BackendPair.all)
    func dataThenClose(pair: BackendPair) throws {
        // Below the plaintext limit, the close is read in the same call as the data; above it, later.
        for version in TLSVersion.allCases {
          for size in [30_000, 200_000] {
            let connection = try pair.established(version: version)
            let payload = SeededRandom(seed: 11).bytesOf(size)
            try connection.server.writePlaintext(payload)
            connection.server.close()
            var wire = connection.server.takeCiphertext()
            connection.client.receiveCiphertext(wire)
            // The caller's buffer is reused at once, as the loop's read buffer is.
            for index in wire.indices { wire[index] = 0 }
            let end = drain(connection.client)
            expectSameBytes(end.received, payload)
            #expect(end.peerClosed && end.failure == nil, "\(version), \(size) bytes: \(String(describing: end.failure))")
          }
        }
    }

    @Test("Records before a tampered one in the same read are delivered, then the failure", arguments: BackendPair.all)
    func dataThenTamperedRecord(pair: BackendPair) throws {
        for version in TLSVersion.allCases {
            let connection = try pair.established(version: version)
            let payload = SeededRandom(seed: 12).bytesOf(40_000)
            try connection.server.writePlaintext(payload)
            try connection.server.writePlaintext(Array("tail".utf8))
            var wire = connection.server.takeCiphertext()
            wire[wire.count - 3] ^= 0x01  // inside the last record, the one carrying "tail"
            connection.client.receiveCiphertext(wire)
            let end = drain(connection.client)
            expectSameBytes(end.received, payload)
            #expect(end.failure == .malformedInput, "\(version): \(String(describing: end.failure))")
        }
    }

    /// Takes plaintext until the session stops; returns it and how the session stopped.
    private func drain(_ session: any TLSSession) -> (received: [UInt8], peerClosed: Bool, failure: TLSError.Reason?) {
        var received: [UInt8] = []
        for _ in 0..<1000 {
            switch session.process() {
            case .plaintextReady, .handshakeComplete:
                session.takePlaintext(into: &received, maxBytes: .max)
            case .needsInput: return (received, false, nil)
            case .peerClosed: return (received, true, nil)
            case .failed(let error): return (received, false, error.reason)
            }
        }
        return (received, false, nil)
    }
}

extension SeededRandom {
    func bytesOf(_ count: Int) -> [UInt8] {
        var copy = self
        return copy.bytes(count)
    }
}

@Suite("Post-handshake messages")
struct PostHandshakeTests {
    @Test("Session tickets and application data arriving in one read are both processed", arguments: BackendPair.all)
    func ticketsAndDataTogether(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let client = try pair.client.makeContext(pki.clientConfiguration()).makeSession()
        let server = try pair.server.makeContext(pki.serverConfiguration()).makeSession()
        var serverDone = false
        var clientDone = false
        // Step the handshake by hand, so that what the server sends after it (TLS 1.3 tickets) is
        // held back and delivered together with the first application data, as one socket read would.
        for _ in 0..<20 where !serverDone {
            if case .handshakeComplete = client.process() { clientDone = true }
            server.receiveCiphertext(client.takeCiphertext())
            if case .handshakeComplete = server.process() { serverDone = true; break }
            client.receiveCiphertext(server.takeCiphertext())
        }
        try #require(serverDone)
        try server.writePlaintext(Array("right after the handshake".utf8))
        client.receiveCiphertext(server.takeCiphertext())
        var received: [UInt8] = []
        for _ in 0..<20 {
            let progress = client.process()
            if case .handshakeComplete = progress { clientDone = true; continue }
            if case .plaintextReady = progress { client.takePlaintext(into: &received, maxBytes: .max); continue }
            break
        }
        #expect(clientDone)
        #expect(received == Array("right after the handshake".utf8))
    }
}
