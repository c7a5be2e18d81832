@_spi(Testing) import TLSContract
import Testing
import TestSupport

@Suite("Closing and hostile input")
struct CloseTests {
    @Test("close_notify is sent and recognized both ways, after the data before it", arguments: BackendPair.all)
    func closeNotify(pair: BackendPair) throws {
        for version in TLSVersion.allCases {
            let connection = try pair.established(version: version)
            try connection.client.writePlaintext(Array("last words".utf8))
            connection.client.close()
            connection.pump()
            #expect(connection.serverEvents.plaintext == Array("last words".utf8), "\(version)")
            #expect(connection.serverEvents.peerClosed, "\(version)")
            #expect(connection.serverEvents.failure == nil, "\(version)")
            #expect(throws: TLSError.self) { try connection.client.writePlaintext([1]) }

            connection.server.close()
            connection.pump()
            #expect(connection.clientEvents.peerClosed, "\(version)")
            #expect(connection.clientEvents.failure == nil, "\(version)")
        }
    }

    @Test("A clean EOF after close_notify is not an error", arguments: BackendPair.all)
    func eofAfterCloseNotify(pair: BackendPair) throws {
        let connection = try pair.established()
        connection.client.close()
        connection.pump()
        connection.endOfInput(to: connection.server)
        #expect(connection.serverEvents.peerClosed)
        #expect(connection.serverEvents.failure == nil)
    }

    @Test("EOF without close_notify after the handshake is an unclean shutdown", arguments: BackendPair.all)
    func uncleanShutdown(pair: BackendPair) throws {
        for version in TLSVersion.allCases {
            let connection = try pair.established(version: version)
            try connection.client.writePlaintext(Array("partial".utf8))
            connection.pump()
            connection.endOfInput(to: connection.server)
            connection.endOfInput(to: connection.client)
            #expect(connection.serverEvents.plaintext == Array("partial".utf8))
            #expect(connection.serverEvents.failure?.reason == .uncleanShutdown, "\(version)")
            #expect(connection.clientEvents.failure?.reason == .uncleanShutdown, "\(version)")
        }
    }

    @Test("EOF during the handshake is a handshake failure", arguments: BackendPair.all)
    func eofDuringHandshake(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let connection = try pair.connect(client: pki.clientConfiguration(), server: pki.serverConfiguration())
        // Let the ClientHello reach the server, then cut the transport both ways.
        _ = connection.client.process()
        connection.server.receiveCiphertext(connection.client.takeCiphertext())
        _ = connection.server.process()
        connection.endOfInput(to: connection.server)
        connection.endOfInput(to: connection.client)
        #expect(connection.serverEvents.failure?.reason == .handshakeFailed(.unexpectedEOF))
        #expect(connection.clientEvents.failure?.reason == .handshakeFailed(.unexpectedEOF))
        #expect(!connection.serverEvents.handshakeCompleted)
    }

    @Test("EOF before any byte is a handshake failure", arguments: Backend.all)
    func eofBeforeAnything(backend: Backend) throws {
        let server = try backend.backend.makeContext(TestPKI.shared(.ecdsaP256).serverConfiguration()).makeSession()
        server.receiveEndOfInput()
        try expectFailure(server, .handshakeFailed(.unexpectedEOF))
    }

    static let hostileInputs: [(String, [UInt8])] = [
        ("random garbage", SeededRandom(seed: 3).bytesOf(4096)),
        ("a plaintext HTTP request", Array("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)),
        ("a handshake record header claiming 65535 bytes", RawHandshake.oversizedRecordHeader(type: 22) + [UInt8](repeating: 0, count: 64)),
    ]

    @Test("Garbage and absurd record lengths before the handshake give a clean error", arguments: Backend.all)
    func hostileInputDuringHandshake(backend: Backend) throws {
        for (name, bytes) in Self.hostileInputs {
            let server = try backend.backend.makeContext(TestPKI.shared(.ecdsaP256).serverConfiguration()).makeSession()
            server.receiveCiphertext(bytes)
            try expectFailure(server, .malformedInput)
            // The session stays failed and refuses further use.
            if case .failed = server.process() {} else { Issue.record("\(name): the session recovered") }
            #expect(throws: TLSError.self) { try server.writePlaintext([1]) }
        }
    }

    @Test("Garbage and absurd record lengths after the handshake give a clean error", arguments: BackendPair.all)
    func hostileInputAfterHandshake(pair: BackendPair) throws {
        for version in TLSVersion.allCases {
            for (name, bytes) in Self.hostileInputs + [("an application record claiming 65535 bytes", RawHandshake.oversizedRecordHeader(type: 23))] {
                let connection = try pair.established(version: version)
                connection.inject(bytes, into: connection.server)
                #expect(connection.serverEvents.failure?.reason == .malformedInput, "\(version) \(name): \(String(describing: connection.serverEvents.failure))")
                #expect(connection.serverEvents.plaintext.isEmpty)
            }
        }
    }

    @Test("A flipped bit in a record is detected", arguments: BackendPair.all)
    func tamperedRecord(pair: BackendPair) throws {
        let connection = try pair.established()
        try connection.client.writePlaintext(Array("integrity".utf8))
        var record = connection.client.takeCiphertext()
        record[record.count - 3] ^= 0x01
        connection.inject(record, into: connection.server)
        #expect(connection.serverEvents.failure?.reason == .malformedInput, "\(String(describing: connection.serverEvents.failure))")
        #expect(connection.serverEvents.plaintext.isEmpty)
    }
}

@Suite("Renegotiation")
struct RenegotiationTests {
    @Test("A TLS 1.2 client-initiated renegotiation is refused", arguments: BackendPair.all)
    func refused(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let connection = try pair.connect(client: pki.clientConfiguration(versions: .tls12 ... .tls12),
                                          server: pki.serverConfiguration(versions: .tls12 ... .tls12))
        try #require(connection.handshake())
        let hooks = try #require(connection.client as? any TLSSessionTestHooks)
        try hooks.startRenegotiation()
        connection.pump()
        #expect(connection.serverEvents.failure?.reason == .renegotiationRefused,
                "\(String(describing: connection.serverEvents.failure))")
        #expect(connection.clientEvents.failure != nil, "the client believes it renegotiated")
    }
}
