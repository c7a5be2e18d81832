@_spi(Testing) import TLSBackendGnuTLS
import TLSBackends
@_spi(Testing) import TLSContract
import Testing
import TestSupport

/// A peer's TLS 1.2 warning alerts, received by every backend on either side: the contract's rules
/// (`PeerWarningAlerts`), which OpenSSL applies itself and the GnuTLS backend applies by counting. The
/// sender is always a GnuTLS session, the only one of ours that can send a warning of its choosing
/// (OpenSSL has no call for it); outside the suite, a GnuTLS C client does the same against our
/// echo-server (AppsTests' PostHandshakePeerTests).
@Suite("TLS 1.2 warning alerts")
struct WarningAlertTests {
    enum Receiver: String, CaseIterable, Sendable { case client, server }

    /// A TLS 1.2 connection whose `receiver` side runs on `backend` and whose other side is GnuTLS.
    private func connection(receiver side: Receiver, on backend: Backend) throws -> (InMemoryPair, sender: GnuTLSSession) {
        let gnutls: any TLSBackend = GnuTLSBackend()
        let pair = side == .server ? BackendPair(client: gnutls, server: backend.backend)
                                   : BackendPair(client: backend.backend, server: gnutls)
        let connection = try pair.established(version: .tls12)
        let sender = try #require((side == .server ? connection.client : connection.server) as? GnuTLSSession)
        return (connection, sender)
    }

    private func events(_ connection: InMemoryPair, of side: Receiver) -> SessionLog {
        side == .client ? connection.clientEvents : connection.serverEvents
    }

    @Test("Four warnings in a row pass, data starts the count again; the fifth in a row ends the connection with unexpected_message",
          arguments: Backend.all, Receiver.allCases)
    func warningFlood(backend: Backend, receiver side: Receiver) throws {
        let (connection, sender) = try connection(receiver: side, on: backend)
        let senderSide: Receiver = side == .server ? .client : .server
        for round in 1...3 {
            for _ in 0..<PeerWarningAlerts.maximumInARow { try sender.sendWarningAlert(.unrecognizedName) }
            try sender.writePlaintext(Array("round \(round)".utf8))
            connection.pump()
        }
        #expect(String(decoding: events(connection, of: side).plaintext, as: UTF8.self) == "round 1round 2round 3",
                "\(String(describing: events(connection, of: side).failure))")
        #expect(events(connection, of: side).failure == nil)

        for _ in 0...PeerWarningAlerts.maximumInARow { try sender.sendWarningAlert(.unrecognizedName) }
        try sender.writePlaintext(Array("after the flood".utf8))
        connection.pump()
        let failure = events(connection, of: side).failure
        #expect(failure?.reason == .malformedInput, "\(String(describing: failure))")
        #expect(failure?.detail.hasPrefix(PeerWarningAlerts.floodRefusal) == true, "\(String(describing: failure))")
        #expect(!String(decoding: events(connection, of: side).plaintext, as: UTF8.self).contains("after the flood"))
        #expect(events(connection, of: senderSide).failure?.reason == .peerSentAlert(.unexpectedMessage),
                "the sender heard: \(String(describing: events(connection, of: senderSide).failure))")
    }

    @Test("A no_renegotiation nothing asked for ends the connection with handshake_failure",
          arguments: Backend.all, Receiver.allCases)
    func unpromptedNoRenegotiation(backend: Backend, receiver side: Receiver) throws {
        let (connection, sender) = try connection(receiver: side, on: backend)
        let senderSide: Receiver = side == .server ? .client : .server
        try sender.sendWarningAlert(.noRenegotiation)
        try sender.writePlaintext(Array("after it".utf8))
        connection.pump()
        let failure = events(connection, of: side).failure
        #expect(failure?.reason == .malformedInput, "\(String(describing: failure))")
        #expect(failure?.detail.hasPrefix(PeerWarningAlerts.noRenegotiationRefusal) == true, "\(String(describing: failure))")
        #expect(events(connection, of: side).plaintext.isEmpty)
        #expect(events(connection, of: senderSide).failure?.reason == .peerSentAlert(.handshakeFailure),
                "the sender heard: \(String(describing: events(connection, of: senderSide).failure))")
    }
}
