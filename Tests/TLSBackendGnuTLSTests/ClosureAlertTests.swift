import TestSupport
import Testing
import TLSContract
@_spi(Testing) @testable import TLSBackendGnuTLS

/// A peer that ends with user_canceled, then close_notify, after its last data: what JSSE does on
/// every close() of a TLS 1.3 socket. Not an abort: the data arrives and the connection ends cleanly.
@Suite struct ClosureAlertTests {
    @Test("A warning user_canceled after the handshake, then close_notify: all data, then a clean close",
          arguments: TLSVersion.allCases)
    func userCanceledThenCloseNotify(version: TLSVersion) throws {
        let connection = try established(version)
        let server = try #require(connection.server as? GnuTLSSession)
        let response = Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".utf8)
        try server.writePlaintext(response)
        try server.sendWarningAlert(.userCanceled)
        server.close()
        connection.pump()

        #expect(connection.clientEvents.plaintext == response, "\(version)")
        #expect(connection.clientEvents.failure == nil, "\(version): \(String(describing: connection.clientEvents.failure))")
        #expect(connection.clientEvents.peerClosed, "\(version)")
    }

    @Test("After a TLS 1.3 user_canceled the connection is closed both ways, without an error")
    func userCanceledClosesBothWays() throws {
        let connection = try established(.tls13)
        let server = try #require(connection.server as? GnuTLSSession)
        try server.sendWarningAlert(.userCanceled)
        connection.pump()
        #expect(connection.clientEvents.peerClosed)
        #expect(connection.clientEvents.failure == nil)
        // GnuTLS refuses the session once it has seen the alert: writing says so plainly.
        let writeError = #expect(throws: TLSError.self) { try connection.client.writePlaintext([1]) }
        #expect(writeError?.reason == .sessionClosed)
        connection.client.close()
        if case .peerClosed = connection.client.process() {} else { Issue.record("the closed session changed its state") }
    }

    @Test("A fatal alert after the handshake is still the peer's abort")
    func otherAlertsStillAbort() throws {
        let connection = try established(.tls13)
        let server = try #require(connection.server as? GnuTLSSession)
        try server.sendWarningAlert(.accessDenied)
        connection.pump()
        #expect(connection.clientEvents.failure?.reason == .peerSentAlert(.accessDenied))
        #expect(!connection.clientEvents.peerClosed)
    }

    private func established(_ version: TLSVersion) throws -> InMemoryPair {
        let connection = try Fixture.pair(
            server: Fixture.serverConfig(minimumVersion: version, maximumVersion: version),
            client: Fixture.clientConfig(minimumVersion: version, maximumVersion: version))
        try #require(connection.handshake())
        return connection
    }
}
