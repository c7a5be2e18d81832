import CGnuTLS
import Foundation
import PKI
import TestSupport
import Testing
@_spi(Testing) import TLSContract
@_spi(Testing) @testable import TLSBackendGnuTLS

/// Certificates our side must refuse, with the reason and the alert the peer is sent.
@Suite struct CertificateRefusalTests {
    struct Case: Sendable, CustomStringConvertible {
        let name: String
        let certificate: @Sendable (TestPKI) -> IssuedCertificate
        let problem: TLSError.CertificateProblem
        let alert: TLSAlert
        var description: String { name }
    }

    static let clientCases: [Case] = [
        Case(name: "rogue", certificate: { $0.rogueClient }, problem: .untrustedIssuer, alert: .unknownCA),
        Case(name: "forged", certificate: { $0.forgedClient }, problem: .untrustedIssuer, alert: .unknownCA),
        Case(name: "self-signed", certificate: { $0.selfSignedClient }, problem: .untrustedIssuer, alert: .unknownCA),
        Case(name: "expired", certificate: { $0.expiredClient }, problem: .expired, alert: .certificateExpired),
        Case(name: "not yet valid", certificate: { $0.notYetValidClient }, problem: .notYetValid, alert: .badCertificate),
        Case(name: "serverAuth only", certificate: { $0.clientWithoutClientAuth }, problem: .wrongUsage,
             alert: .unsupportedCertificate),
    ]

    static let serverCases: [Case] = [
        Case(name: "rogue", certificate: { $0.rogueServer }, problem: .untrustedIssuer, alert: .unknownCA),
        Case(name: "forged", certificate: { $0.forgedServer }, problem: .untrustedIssuer, alert: .unknownCA),
        Case(name: "self-signed", certificate: { $0.selfSignedServer }, problem: .untrustedIssuer, alert: .unknownCA),
        Case(name: "expired", certificate: { $0.expiredServer }, problem: .expired, alert: .certificateExpired),
        Case(name: "not yet valid", certificate: { $0.notYetValidServer }, problem: .notYetValid, alert: .badCertificate),
        Case(name: "client certificate", certificate: { $0.client }, problem: .wrongUsage, alert: .unsupportedCertificate),
        Case(name: "wrong names", certificate: { $0.serverWithWrongNames }, problem: .wrongName, alert: .handshakeFailure),
    ]

    @Test(arguments: clientCases, [TLSVersion.tls12, .tls13])
    func serverRefusesClientCertificate(_ test: Case, version: TLSVersion) throws {
        let pki = Fixture.pki
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(maximumVersion: version),
            client: Fixture.clientConfig(certificate: test.certificate(pki)))
        #expect(!pair.handshake())
        #expect(pair.serverEvents.failure?.reason == .certificateRejected(test.problem))
        #expect(pair.serverEvents.failure?.detail.isEmpty == false)
        #expect(pair.clientEvents.failure?.reason == .peerSentAlert(test.alert))
        #expect(!pair.serverEvents.handshakeCompleted)
    }

    @Test(arguments: serverCases, [TLSVersion.tls12, .tls13])
    func clientRefusesServerCertificate(_ test: Case, version: TLSVersion) throws {
        let pki = Fixture.pki
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(certificate: test.certificate(pki), maximumVersion: version),
            client: Fixture.clientConfig())
        #expect(!pair.handshake())
        #expect(pair.clientEvents.failure?.reason == .certificateRejected(test.problem))
        #expect(pair.serverEvents.failure?.reason == .peerSentAlert(test.alert))
        #expect(!pair.clientEvents.handshakeCompleted)
    }

    @Test(arguments: [(TLSVersion.tls12, TLSAlert.handshakeFailure), (.tls13, .certificateRequired)])
    func serverRequiresAClientCertificate(version: TLSVersion, alert: TLSAlert) throws {
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(maximumVersion: version),
            client: Fixture.clientConfig(certificate: .some(nil)))
        #expect(!pair.handshake())
        #expect(pair.serverEvents.failure?.reason == .certificateRejected(.missing))
        #expect(pair.clientEvents.failure?.reason == .peerSentAlert(alert))
    }

    @Test func untrustedIssuerOutranksExpiry() {
        let expiredAndUnknown = GNUTLS_CERT_INVALID.rawValue | GNUTLS_CERT_EXPIRED.rawValue
            | GNUTLS_CERT_SIGNER_NOT_FOUND.rawValue
        #expect(GnuTLSErrors.certificateProblem(status: expiredAndUnknown) == .untrustedIssuer)
        let expiredWrongName = GNUTLS_CERT_INVALID.rawValue | GNUTLS_CERT_EXPIRED.rawValue
            | GNUTLS_CERT_UNEXPECTED_OWNER.rawValue
        #expect(GnuTLSErrors.certificateProblem(status: expiredWrongName) == .expired)
        #expect(GnuTLSErrors.certificateProblem(status: GNUTLS_CERT_INVALID.rawValue) == .untrustedIssuer)
        let revoked = GNUTLS_CERT_INVALID.rawValue | GNUTLS_CERT_REVOKED.rawValue
        #expect(GnuTLSErrors.certificateProblem(status: revoked) == .revoked)
        let superseded = GNUTLS_CERT_INVALID.rawValue | GNUTLS_CERT_REVOCATION_DATA_SUPERSEDED.rawValue
        #expect(GnuTLSErrors.certificateProblem(status: superseded) == .crlExpired)
    }
}

/// Peers outside the policy, and bytes that are not TLS.
@Suite struct ProtocolRefusalTests {
    @Test func tls11OnlyClientHelloIsRefused() throws {
        let hello = RawHandshake.clientHello(legacyVersion: 0x0302, cipherSuites: [0xC02B, 0xC02F, 0xC013])
        let error = try Fixture.serverFailure(afterReceiving: hello)
        #expect(error?.reason == .noSharedVersion)
    }

    @Test func cbcOnlyClientHelloIsRefused() throws {
        let hello = RawHandshake.clientHello(legacyVersion: 0x0303, cipherSuites: RawHandshake.cbcOnlySuites)
        let error = try Fixture.serverFailure(afterReceiving: hello)
        #expect(error?.reason == .noSharedCipher)
    }

    @Test func legacyGnuTLSClientsAreRefused() throws {
        let cases: [(String, TLSError.Reason)] = [
            ("NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.0", .noSharedVersion),
            ("NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-CBC:+AES-256-CBC:-MAC-ALL:+SHA1:+SHA256", .noSharedCipher),
            ("NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+RSA", .noSharedCipher),
        ]
        for (priority, expected) in cases {
            let client = try Fixture.legacySession(Fixture.clientConfig(), priority: priority)
            let server = try Fixture.backend.makeContext(Fixture.serverConfig()).makeSession()
            let pair = InMemoryPair(client: client, server: server)
            #expect(!pair.handshake())
            #expect(pair.serverEvents.failure?.reason == expected, "\(priority)")
        }
    }

    @Test func ourClientRefusesATLS11Server() throws {
        let client = try Fixture.backend.makeContext(Fixture.clientConfig()).makeSession()
        _ = client.process()
        _ = client.takeCiphertext()
        client.receiveCiphertext(RawHandshake.serverHello(version: 0x0302, cipherSuite: 0xC02B))
        guard case .failed(let error) = client.process() else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.reason == .noSharedVersion)
        #expect(client.pendingCiphertextCount > 0)  // the alert
    }

    @Test(arguments: ["random", "http", "oversized", "ssl2"])
    func bytesThatAreNotTLSAreMalformedInput(kind: String) throws {
        var random = SeededRandom(seed: 42)
        let bytes: [UInt8]
        switch kind {
        case "random": bytes = random.bytes(600)
        case "http": bytes = Array("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        case "oversized": bytes = RawHandshake.oversizedRecordHeader(type: 22) + random.bytes(64)
        default: bytes = [0x80, 0x2E, 0x01, 0x00, 0x02] + random.bytes(45)
        }
        let error = try Fixture.serverFailure(afterReceiving: bytes)
        #expect(error?.reason == .malformedInput, "\(String(describing: error))")
    }

    @Test(arguments: ["random", "http", "oversized", "bad version"], [TLSVersion.tls12, .tls13])
    func bytesThatAreNotTLSAfterTheHandshakeAreMalformedInput(kind: String, version: TLSVersion) throws {
        var random = SeededRandom(seed: 9)
        let bytes: [UInt8]
        switch kind {
        case "random": bytes = random.bytes(4096)
        case "http": bytes = Array("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        case "oversized": bytes = RawHandshake.oversizedRecordHeader(type: 23)
        default: bytes = [23, 0x7F, 0x03, 0x00, 0x20] + random.bytes(32)
        }
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(maximumVersion: version), client: Fixture.clientConfig())
        #expect(pair.handshake())
        // Real data first, then the garbage in the same read: the data is still delivered.
        try pair.client.writePlaintext(Array("before".utf8))
        pair.inject(pair.client.takeCiphertext() + bytes, into: pair.server)
        #expect(pair.serverEvents.plaintext == Array("before".utf8))
        #expect(pair.serverEvents.failure?.reason == .malformedInput, "\(String(describing: pair.serverEvents.failure))")
    }

    @Test func recordScannerFindsTheFirstBadHeaderAndPlaintextAlerts() {
        var scanner = RecordScanner()
        let good: [UInt8] = [22, 3, 1, 0, 3, 1, 2, 3, 21, 3, 3, 0, 2, 2, 48]
        good.withUnsafeBytes { raw in
            // Split inside a header and inside the alert body.
            scanner.scan(UnsafeRawBufferPointer(rebasing: raw[0..<3]))
            scanner.scan(UnsafeRawBufferPointer(rebasing: raw[3..<14]))
            scanner.scan(UnsafeRawBufferPointer(rebasing: raw[14...]))
        }
        #expect(scanner.firstBadHeaderOffset == nil)
        #expect(scanner.lastPlaintextAlert?.description == 48)
        #expect(scanner.lastPlaintextAlert?.end == good.count)
        let bad: [UInt8] = [23, 3, 3, 0x48, 0x01]
        bad.withUnsafeBytes { scanner.scan($0) }
        #expect(scanner.firstBadHeaderOffset == good.count)
        var http = RecordScanner()
        Array("GET /".utf8).withUnsafeBytes { http.scan($0) }
        #expect(http.firstBadHeaderOffset == 0)
    }

    @Test func tamperedRecordAfterTheHandshakeIsMalformedInput() throws {
        let pair = try Fixture.pair(server: Fixture.serverConfig(), client: Fixture.clientConfig())
        #expect(pair.handshake())
        try pair.client.writePlaintext(Array("hello, world".utf8))
        var record = pair.client.takeCiphertext()
        record[record.count - 3] ^= 0x01
        pair.inject(record, into: pair.server)
        #expect(pair.serverEvents.failure?.reason == .malformedInput)
        #expect(pair.server.pendingCiphertextCount > 0)  // bad_record_mac goes out
        pair.pump()
        #expect(pair.clientEvents.failure?.reason == .peerSentAlert(.badRecordMAC))
    }

    /// OpenSSL clients abort a TLS 1.3 handshake with an unencrypted alert, which GnuTLS (expecting
    /// encrypted records by then) reports as a decryption failure. It must still read as the alert.
    @Test func plaintextAlertDuringATLS13HandshakeIsThePeersAlert() throws {
        let client = try Fixture.backend.makeContext(Fixture.clientConfig()).makeSession()
        let server = try Fixture.backend.makeContext(Fixture.serverConfig()).makeSession()
        _ = client.process()
        server.receiveCiphertext(client.takeCiphertext())
        guard case .needsInput = server.process() else {
            Issue.record("the server should wait for the client's second flight")
            return
        }
        #expect(server.pendingCiphertextCount > 0)
        server.receiveCiphertext(RawHandshake.record(type: 21, version: 0x0303, [2, TLSAlert.certificateExpired.code]))
        guard case .failed(let error) = server.process() else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.reason == .peerSentAlert(.certificateExpired))
    }

    @Test func tls12RenegotiationIsRefused() throws {
        let pair = try Fixture.pair(
            server: Fixture.serverConfig(maximumVersion: .tls12), client: Fixture.clientConfig())
        #expect(pair.handshake())
        let client = try #require(pair.client as? GnuTLSSession)
        try client.startRenegotiation()
        #expect(client.pendingCiphertextCount > 0)  // the new ClientHello
        pair.pump()
        #expect(pair.serverEvents.failure?.reason == .renegotiationRefused)
        #expect(pair.clientEvents.failure?.reason == .peerSentAlert(.noRenegotiation))
    }

    @Test func renegotiationNeedsTLS12() throws {
        let pair = try Fixture.pair(server: Fixture.serverConfig(), client: Fixture.clientConfig())
        #expect(pair.handshake())
        let client = try #require(pair.client as? GnuTLSSession)
        #expect(throws: TLSError.self) { try client.startRenegotiation() }
    }
}
