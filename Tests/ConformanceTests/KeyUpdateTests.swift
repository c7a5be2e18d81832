@_spi(Testing) import TLSContract
import Testing
import TestSupport

/// TLS 1.3 KeyUpdates between our own backends, either side sending: followed and answered up to the
/// contract's limit (`PeerKeyUpdateLimit`), and the ninth in a second refused in the same words on every
/// pair. (The same from an outside client: AppsTests' PostHandshakePeerTests.)
@Suite("Key updates")
struct KeyUpdateTests {
    enum Sender: String, CaseIterable, Sendable { case client, server }

    private func sessions(_ connection: InMemoryPair, sender: Sender)
        throws -> (sender: any TLSSessionTestHooks, receiver: any TLSSession)
    {
        let hooks = { (session: any TLSSession) throws -> any TLSSessionTestHooks in
            try #require(session as? any TLSSessionTestHooks)
        }
        switch sender {
        case .client: return (try hooks(connection.client), connection.server)
        case .server: return (try hooks(connection.server), connection.client)
        }
    }

    private func events(_ connection: InMemoryPair, of side: Sender) -> SessionLog {
        side == .client ? connection.clientEvents : connection.serverEvents
    }

    /// A fresh TLS 1.3 connection on `pair` in which `side` has sent `count` KeyUpdates, then `text`,
    /// and both have been pumped through.
    private func afterKeyUpdates(_ count: Int, requestingPeer: Bool, pair: BackendPair, sender side: Sender,
                                 then text: String) throws -> (InMemoryPair, receiver: any TLSSession, receiverSide: Sender) {
        let connection = try pair.established(version: .tls13)
        let (sender, receiver) = try sessions(connection, sender: side)
        try sender.sendKeyUpdates(count, requestingPeer: requestingPeer)
        try sender.writePlaintext(Array(text.utf8))
        connection.pump()
        return (connection, receiver, side == .client ? .server : .client)
    }

    @Test("Eight key updates are followed, and the asked-for updates answered, with data flowing both ways after them",
          arguments: BackendPair.all, Sender.allCases)
    func withinLimit(pair: BackendPair, sender side: Sender) throws {
        for requestingPeer in [true, false] {
            let (connection, receiver, receiverSide) = try afterKeyUpdates(
                8, requestingPeer: requestingPeer, pair: pair, sender: side, then: "after eight updates")
            #expect(events(connection, of: receiverSide).plaintext == Array("after eight updates".utf8),
                    "requestingPeer \(requestingPeer): \(String(describing: events(connection, of: receiverSide).failure))")
            // The receiver's answer went out under its updated keys: the sender still reads it.
            try receiver.writePlaintext(Array("and back".utf8))
            connection.pump()
            #expect(events(connection, of: side).plaintext == Array("and back".utf8),
                    "requestingPeer \(requestingPeer): \(String(describing: events(connection, of: side).failure))")
            #expect(connection.clientEvents.failure == nil && connection.serverEvents.failure == nil)
        }
    }

    @Test("The ninth key update in a second ends the connection with malformedInput and the contract's words",
          arguments: BackendPair.all, Sender.allCases)
    func overLimit(pair: BackendPair, sender side: Sender) throws {
        for requestingPeer in [true, false] {
            let (connection, _, receiverSide) = try afterKeyUpdates(
                9, requestingPeer: requestingPeer, pair: pair, sender: side, then: "after nine updates")
            let failure = events(connection, of: receiverSide).failure
            #expect(failure?.reason == .malformedInput, "requestingPeer \(requestingPeer): \(String(describing: failure))")
            #expect(failure?.detail.hasPrefix(PeerKeyUpdateLimit.refusal) == true,
                    "requestingPeer \(requestingPeer): \(String(describing: failure))")
            #expect(events(connection, of: receiverSide).plaintext.isEmpty, "data after the refused update was delivered")
        }
    }
}
