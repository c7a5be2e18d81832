import PKI
import TLSContract
import Testing
import TestSupport

/// A client that reconnects again and again, as a service client does, must resume every time.
///
/// Each connection offers the newest ticket the client context holds, which is the one the previous
/// connection received. With TLS 1.3 a client should use each ticket only once (RFC 8446, C.4), so a
/// server must hand out a fresh ticket on resumed handshakes too; a server that issues tickets only
/// after full handshakes leaves every other reconnect of such a client without a ticket. Our client
/// caches would hide that by offering the old ticket again, so these tests read the ticket each
/// ClientHello offers and require that no TLS 1.3 ticket is offered twice.
@Suite("Reconnect resumption")
struct ReconnectResumptionTests {
    static let connections = 6

    @Test("Sequential reconnects all resume, each on the ticket of the connection before",
          arguments: BackendPair.all)
    func everyReconnectResumes(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        for version in TLSVersion.allCases {
            let expected = pair.client.capabilities.contains(Self.capability(version))
                && pair.server.capabilities.contains(Self.capability(version))
            // Chains with an intermediate: a ticket issued on a resumed connection must still carry
            // the client's whole chain.
            let client = try pair.client.makeContext(pki.clientConfiguration(pki.clientViaIntermediate, versions: version ... version))
            let server = try pair.server.makeContext(pki.serverConfiguration(pki.serverViaIntermediate, versions: version ... version))

            var offered: [[UInt8]] = []
            var firstIdentity: PeerIdentity?
            for index in 1...Self.connections {
                let context = "\(version), connection \(index) of \(Self.connections)"
                let (connection, ticket) = try Self.connect(client, server, context)
                let resumed = (connection.client.negotiated?.resumed, connection.server.negotiated?.resumed)
                if index == 1 {
                    #expect(ticket == nil, "\(context): offered a ticket before any connection")
                    #expect(resumed == (false, false), "\(context)")
                    firstIdentity = connection.server.peerIdentity
                    continue
                }
                #expect(resumed == (expected, expected), "\(context): resumed (client, server) = \(resumed)")
                #expect(connection.server.peerIdentity == firstIdentity, "\(context): the server's view of the client changed")
                #expect(connection.server.peerIdentity?.certificateChainDER.count == 2, "\(context)")
                guard expected else { continue }
                let offeredTicket = try #require(ticket, "\(context): offered no ticket")
                if version == .tls13 {
                    // An index, not the tickets: a failure then names the connection, not kilobytes of bytes.
                    let firstOfferedOnConnection = offered.firstIndex(of: offeredTicket).map { $0 + 2 }
                    #expect(firstOfferedOnConnection == nil,
                            "\(context): offered the ticket again; the server issued no new one on the connection before")
                }
                offered.append(offeredTicket)
            }
        }
    }

    private static func capability(_ version: TLSVersion) -> TLSCapabilities {
        version == .tls13 ? .tls13Resumption : .tls12Resumption
    }

    /// One connection: the handshake, then a line each way, which also delivers the tickets that
    /// follow a TLS 1.3 handshake. Returns the ticket the ClientHello offered, if any.
    private static func connect(_ client: any TLSContext, _ server: any TLSContext, _ context: String,
                                sourceLocation: SourceLocation = #_sourceLocation) throws -> (InMemoryPair, [UInt8]?) {
        let connection = InMemoryPair(client: try client.makeSession(), server: try server.makeSession())
        // The client's first flight is its ClientHello alone: read it on its way to the server.
        _ = connection.client.process()
        let hello = connection.client.takeCiphertext()
        let ticket = try #require(OfferedTicket.in(clientHello: hello), "\(context): no ClientHello", sourceLocation: sourceLocation)
        connection.inject(hello, into: connection.server)
        try handshakeAndExchangeLines(connection, context, sourceLocation: sourceLocation)
        return (connection, ticket.bytes)
    }
}

/// The session ticket a ClientHello offers: the first PSK identity (TLS 1.3 `pre_shared_key`) or the
/// RFC 5077 `session_ticket` extension's content (TLS 1.2).
struct OfferedTicket {
    /// nil when the ClientHello offers none.
    var bytes: [UInt8]?

    static let preSharedKey = 41
    static let sessionTicket = 35

    /// Parses the first record of a client's first flight; nil if it is not a whole ClientHello.
    static func `in`(clientHello record: [UInt8]) -> OfferedTicket? {
        var reader = ByteReader(record)
        guard reader.u8() == 22, reader.skip(2), let recordLength = reader.u16(), reader.remaining >= recordLength,
              reader.u8() == 1, let helloLength = reader.u24(), helloLength <= recordLength - 4,
              reader.skip(2 + 32), let sessionID = reader.u8(), reader.skip(Int(sessionID)),
              let suites = reader.u16(), reader.skip(suites), let compression = reader.u8(), reader.skip(Int(compression)),
              let extensionsLength = reader.u16(), reader.remaining >= extensionsLength
        else { return nil }
        var extensions = ByteReader(reader.take(extensionsLength))
        var found = OfferedTicket(bytes: nil)
        while extensions.remaining >= 4, let type = extensions.u16(), let length = extensions.u16(), extensions.remaining >= length {
            var body = ByteReader(extensions.take(length))
            switch type {
            case preSharedKey:
                // identities<7..2^16-1>, each identity<1..2^16-1> followed by a 4-byte ticket age.
                guard body.skip(2), let identityLength = body.u16(), body.remaining >= identityLength else { return nil }
                found.bytes = body.take(identityLength)
            case sessionTicket where length > 0:
                found.bytes = body.take(length)
            default:
                break
            }
        }
        return found
    }
}

/// Big-endian reads over a byte array that fail (nil / false) instead of trapping at the end.
private struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func skip(_ count: Int) -> Bool {
        guard count <= remaining else { return false }
        offset += count
        return true
    }

    mutating func take(_ count: Int) -> [UInt8] {
        let end = offset + min(count, remaining)
        defer { offset = end }
        return Array(bytes[offset..<end])
    }

    mutating func u8() -> UInt8? { remaining >= 1 ? take(1)[0] : nil }

    mutating func u16() -> Int? {
        guard remaining >= 2 else { return nil }
        let pair = take(2)
        return Int(pair[0]) << 8 | Int(pair[1])
    }

    mutating func u24() -> Int? {
        guard remaining >= 3 else { return nil }
        let triple = take(3)
        return Int(triple[0]) << 16 | Int(triple[1]) << 8 | Int(triple[2])
    }
}
