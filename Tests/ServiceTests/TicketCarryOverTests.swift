import Foundation
import PKI
import Service
import TLSBackends
import TLSContract
import Testing
import TestSupport

/// Session tickets across a reload of a server's own credentials, in memory, on every client×server
/// backend pair and both TLS versions: tickets issued before a renewal of the server's certificate
/// still resume afterwards; a ticket of a client that a newly loaded CRL revokes does not get it in;
/// new trust roots start new tickets.
@Suite("Ticket carry-over on reload")
struct TicketCarryOverTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let client: any TLSBackend
        let server: any TLSBackend
        let version: TLSVersion
        static let all: [Case] = TLSBackendRegistry.pairs.flatMap { pair in
            TLSVersion.allCases.map { Case(client: pair.client, server: pair.server, version: $0) }
        }
        var testDescription: String { "\(client.name) client → \(server.name) server, \(version)" }
    }

    /// A reloading server over files and one client context (which keeps its tickets).
    private final class Setup {
        let pki: RenewablePKI
        let files: CredentialDirectory
        let logs = LogRecorder()
        let server: ReloadingContext
        let clientCertificate: IssuedCertificate
        let client: any TLSContext

        init(_ testCase: Case, serverValidFor: TimeInterval = 86400) throws {
            pki = try RenewablePKI()
            var configuration: TLSConfiguration
            (files, configuration) = try pki.serverFiles(prefix: "mtls-tickets", validFor: serverValidFor)
            configuration.minimumVersion = testCase.version
            configuration.maximumVersion = testCase.version
            server = try ReloadingContext(backend: testCase.server, configuration: configuration, logger: logs.logger("server"))
            clientCertificate = try pki.client("ticket-holder")
            var clientConfiguration = TLSConfiguration.mtlsClient(
                identity: .pem(certificateChain: .bytes(Array(clientCertificate.chainPEM.utf8), label: "client.pem"),
                               privateKey: .bytes(Array(clientCertificate.privateKeyPEM.utf8), label: "client.key")),
                trustRoots: [.bytes(Array(pki.root.certificatePEM.utf8), label: "ca.pem")], serverName: "localhost")
            clientConfiguration.minimumVersion = testCase.version
            clientConfiguration.maximumVersion = testCase.version
            client = try testCase.client.makeContext(clientConfiguration)
        }

        /// One connection to the server's current context; pumping until quiet delivers the tickets.
        func connect() throws -> InMemoryPair {
            let connection = InMemoryPair(client: try client.makeSession(), server: try server.context.makeSession())
            if connection.handshake() {
                try connection.client.writePlaintext(Array("ping".utf8))
                connection.pump()
            }
            return connection
        }

        func reload() throws {
            guard case .replaced = server.reload(.request) else { throw TestFailure("not replaced: \(logs.lines)") }
        }
    }

    @Test("A renewal of the server's certificate keeps its tickets: the client resumes, and sees the new certificate only on its next full handshake",
          arguments: Case.all)
    func renewalKeepsTickets(testCase: Case) throws {
        let setup = try Setup(testCase)
        let full = try setup.connect()
        try #require(full.serverEvents.failure == nil && full.clientEvents.failure == nil)
        #expect(full.client.negotiated?.resumed == false)
        let warm = try setup.connect()
        #expect(warm.client.negotiated?.resumed == true, "no resumption even before the reload")

        let renewed = try setup.pki.server()
        try setup.files.install(renewed, as: "server")
        try setup.reload()
        #expect(setup.logs.lines(.info).last?.message.contains("session tickets kept") == true, "\(setup.logs.lines)")

        let after = try setup.connect()
        #expect(after.clientEvents.failure == nil && after.serverEvents.failure == nil,
                "\(String(describing: after.clientEvents.failure ?? after.serverEvents.failure))")
        #expect(after.client.negotiated?.resumed == true, "the ticket from before the renewal did not resume")
        #expect(after.server.peerIdentity?.certificateChainDER.first == setup.clientCertificate.certificateDER)
    }

    @Test("Tickets kept across a renewal are not offered once the server certificate they were verified with expires: the client makes a full handshake and sees the new certificate",
          arguments: Case.all)
    func expiredServerCertificateEndsResumption(testCase: Case) throws {
        let setup = try Setup(testCase, serverValidFor: 2)
        _ = try setup.connect()
        let renewed = try setup.pki.server()
        try setup.files.install(renewed, as: "server")
        try setup.reload()
        let resumed = try setup.connect()
        #expect(resumed.client.negotiated?.resumed == true)
        #expect(resumed.client.peerIdentity?.certificateChainDER.first != renewed.certificateDER)
        // Past the first certificate's notAfter (2 s after it was issued).
        usleep(2_500_000)
        let after = try setup.connect()
        #expect(after.clientEvents.failure == nil && after.serverEvents.failure == nil,
                "\(String(describing: after.clientEvents.failure ?? after.serverEvents.failure))")
        #expect(after.client.negotiated?.resumed == false, "a ticket verified with the expired certificate was offered")
        #expect(after.client.peerIdentity?.certificateChainDER.first == renewed.certificateDER)
    }

    @Test("A CRL revoking the client, loaded by a reload that keeps the tickets, refuses the client's resumption as revoked",
          arguments: Case.all)
    func revocationRefusesResumption(testCase: Case) throws {
        let setup = try Setup(testCase)
        let full = try setup.connect()
        try #require(full.serverEvents.failure == nil && full.clientEvents.failure == nil)

        try setup.files.replace("crl.pem", try CRLFactory.make(by: setup.pki.root, revoking: [setup.clientCertificate]))
        try setup.reload()
        #expect(setup.logs.lines(.info).last?.message.contains("session tickets kept") == true, "\(setup.logs.lines)")

        let after = try setup.connect()
        let failure = try #require(after.serverEvents.failure, "the revoked client got in (resumed: \(String(describing: after.server.negotiated?.resumed)))")
        #expect(failure.reason == .certificateRejected(.revoked), "\(failure)")
        #expect(failure.detail.contains(setup.pki.serial(setup.clientCertificate)), "\(failure.detail)")
        // Refused on the resumption path (the ticket was accepted, then its peer re-checked).
        #expect(failure.detail.contains("resumed session"), "\(failure.detail)")
    }

    @Test("New trust roots start new tickets: the next connection is a full handshake", arguments: Case.all)
    func newRootsStartNewTickets(testCase: Case) throws {
        let setup = try Setup(testCase)
        _ = try setup.connect()
        let other = try CertificateAuthority.makeRoot(commonName: "another root")
        try setup.files.replace("ca.pem", setup.pki.root.certificatePEM + other.certificatePEM)
        try setup.reload()
        #expect(setup.logs.lines(.info).last?.message.contains("new session tickets") == true, "\(setup.logs.lines)")
        let after = try setup.connect()
        #expect(after.clientEvents.failure == nil && after.serverEvents.failure == nil)
        #expect(after.client.negotiated?.resumed == false, "a ticket from before the new roots resumed")
    }
}
