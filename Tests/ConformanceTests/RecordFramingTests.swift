import TLSContract
import Testing
import TestSupport

/// The record layer may cut handshake messages anywhere (RFC 8446 §5.1), and a transport read may
/// hold any number of records. Neither may change the outcome.
@Suite("Record framing")
struct RecordFramingTests {
    /// How re-framed bytes reach the receiving session.
    enum Delivery: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// All the records of a flight in one `receiveCiphertext` call.
        case wholeFlight
        /// One byte per `receiveCiphertext` call, `process()` after each.
        case byteByByte

        var testDescription: String { rawValue }

        func deliver(_ bytes: [UInt8], _ send: ([UInt8]) -> Void) {
            switch self {
            case .wholeFlight: send(bytes)
            case .byteByByte: for byte in bytes { send([byte]) }
            }
        }
    }

    @Test("Handshake messages cut into 100-byte records, both ways, still complete the handshake",
          arguments: BackendPair.all, Delivery.allCases)
    func hundredByteRecords(pair: BackendPair, delivery: Delivery) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            let connection = try pair.connect(client: pki.clientConfiguration(versions: version ... version),
                                              server: pki.serverConfiguration(versions: version ... version))
            var fromClient = RecordFraming(maxHandshakePayload: 100)
            var fromServer = RecordFraming(maxHandshakePayload: 100)
            var clientHelloRecords = 0
            let settled = connection.relay(
                clientToServer: { flight, send in
                    let reframed = fromClient.reframe(flight)
                    if clientHelloRecords == 0 { clientHelloRecords = RecordFraming.records(in: reframed).records.count }
                    delivery.deliver(reframed, send)
                },
                serverToClient: { flight, send in delivery.deliver(fromServer.reframe(flight), send) })
            #expect(settled, "\(version): livelock")
            #expect(clientHelloRecords > 1, "\(version): the ClientHello was not cut")
            try expectEstablished(connection, "\(version), \(delivery)")
            try exchange(over: connection, "\(version), \(delivery)")
        }
    }

    @Test("A ClientHello over 16 KiB, spread over two records, completes the handshake", arguments: BackendPair.all)
    func clientHelloOver16KiB(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            var client = pki.clientConfiguration(versions: version ... version)
            // 90 names of 200 bytes: an 18 KiB ALPN extension, legal (each name ≤ 255 bytes, the list < 64 KiB).
            client.applicationProtocols = (0..<90).map { String(format: "p%03d-", $0) + String(repeating: "x", count: 195) }
                + ["http/1.1"]
            var server = pki.serverConfiguration(versions: version ... version)
            server.applicationProtocols = ["http/1.1"]
            let connection: InMemoryPair
            do {
                connection = try pair.connect(client: client, server: server)
            } catch let error as TLSError {
                // GnuTLS holds at most 8 ALPN names of ≤ 31 bytes, so its clients cannot send this
                // hello (and say so). The servers are covered by the other client backend's pairs.
                guard case .configuration(nil, .invalidSetting(let what)) = error.reason, what.contains("ALPN") else { throw error }
                return
            }

            var helloRecords: [RecordFraming.Record]?
            let settled = connection.relay(
                clientToServer: { flight, send in
                    if helloRecords == nil { helloRecords = RecordFraming.records(in: flight).records }
                    send(flight)
                },
                serverToClient: { flight, send in send(flight) })
            #expect(settled, "\(version): livelock")

            let records = try #require(helloRecords)
            let helloLength = records.reduce(0) { $0 + $1.payload.count }
            #expect(helloLength > 16_384, "\(version): the ClientHello is only \(helloLength) bytes")
            #expect(records.count >= 2, "\(version): the ClientHello is not spread over records")
            #expect(records.allSatisfy { $0.payload.count <= RecordFraming.Record.maximumPlaintextLength },
                    "\(version): \(pair.client.name) sent a record over 16 KiB: \(records.map(\.payload.count))")
            try expectEstablished(connection, "\(version)")
            #expect(connection.server.negotiated?.applicationProtocol == "http/1.1", "\(version)")
            try exchange(over: connection, "\(version)")
        }
    }

    private func expectEstablished(_ connection: InMemoryPair, _ context: String,
                                   sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(connection.serverEvents.failure == nil, "\(context): server \(String(describing: connection.serverEvents.failure))",
                sourceLocation: sourceLocation)
        #expect(connection.clientEvents.failure == nil, "\(context): client \(String(describing: connection.clientEvents.failure))",
                sourceLocation: sourceLocation)
        try #require(connection.serverEvents.handshakeCompleted && connection.clientEvents.handshakeCompleted,
                     "\(context): the handshake did not complete", sourceLocation: sourceLocation)
    }

    /// Application data still flows both ways after the re-framed handshake.
    private func exchange(over connection: InMemoryPair, _ context: String,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
        let request = Array("GET /hello".utf8)
        let response = Array("hello, client".utf8)
        try connection.client.writePlaintext(request)
        try connection.server.writePlaintext(response)
        #expect(connection.pump(), sourceLocation: sourceLocation)
        #expect(connection.serverEvents.plaintext == request, "\(context)", sourceLocation: sourceLocation)
        #expect(connection.clientEvents.plaintext == response, "\(context)", sourceLocation: sourceLocation)
    }
}
