import PKI
import TLSBackends
import TLSContract
import Testing
import TestSupport

/// One client×server combination. Every contract test takes these as arguments, so each case is
/// written once and runs for all four pairs.
struct BackendPair: Sendable, CustomTestStringConvertible {
    let client: any TLSBackend
    let server: any TLSBackend

    static let all: [BackendPair] = TLSBackendRegistry.pairs.map { BackendPair(client: $0.client, server: $0.server) }

    var testDescription: String { "\(client.name) client → \(server.name) server" }

    /// Builds both contexts and sessions and wires them together in memory.
    func connect(client clientConfiguration: TLSConfiguration, server serverConfiguration: TLSConfiguration)
        throws -> InMemoryPair
    {
        let serverSession = try server.makeContext(serverConfiguration).makeSession()
        let clientSession = try client.makeContext(clientConfiguration).makeSession()
        return InMemoryPair(client: clientSession, server: serverSession)
    }

    /// An mTLS pair (ECDSA test PKI) that has completed its handshake on `version`.
    func established(version: TLSVersion = .tls13) throws -> InMemoryPair {
        let pki = TestPKI.shared(.ecdsaP256)
        let connection = try connect(client: pki.clientConfiguration(versions: version ... version),
                                     server: pki.serverConfiguration(versions: version ... version))
        try #require(connection.handshake())
        return connection
    }
}

/// Every backend on its own, for cases where the peer is not one of ours (raw bytes) or there is no peer.
struct Backend: Sendable, CustomTestStringConvertible {
    let backend: any TLSBackend
    static let all: [Backend] = TLSBackendRegistry.all.map(Backend.init)
    var testDescription: String { backend.name }
}

/// Configurations built from the test PKI.
extension TestPKI {
    func serverConfiguration(
        _ certificate: IssuedCertificate? = nil, clientAuthentication: TLSConfiguration.ClientAuthentication = .require,
        versions: ClosedRange<TLSVersion> = .tls12 ... .tls13
    ) -> TLSConfiguration {
        var configuration = TLSConfiguration.mtlsServer(identity: identity(certificate ?? server), trustRoots: trustRoots)
        configuration.clientAuthentication = clientAuthentication
        configuration.minimumVersion = versions.lowerBound
        configuration.maximumVersion = versions.upperBound
        return configuration
    }

    func clientConfiguration(
        _ certificate: IssuedCertificate? = nil, presentsCertificate: Bool = true, serverName: String = "localhost",
        versions: ClosedRange<TLSVersion> = .tls12 ... .tls13
    ) -> TLSConfiguration {
        var configuration = TLSConfiguration.tlsClient(trustRoots: trustRoots, serverName: serverName)
        configuration.identity = presentsCertificate ? identity(certificate ?? client) : nil
        configuration.minimumVersion = versions.lowerBound
        configuration.maximumVersion = versions.upperBound
        return configuration
    }
}

extension TLSError.Reason {
    var isPeerAlert: Bool {
        if case .peerSentAlert = self { return true }
        return false
    }
}

/// Completes the handshake, then sends a line each way; pumping until quiet also delivers the
/// TLS 1.3 tickets that follow the handshake.
func handshakeAndExchangeLines(_ connection: InMemoryPair, _ context: String,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        try #require(connection.handshake(),
                     "\(context): \(String(describing: connection.clientEvents.failure ?? connection.serverEvents.failure))",
                     sourceLocation: sourceLocation)
        try connection.client.writePlaintext(Array("ping".utf8))
        try connection.server.writePlaintext(Array("pong".utf8))
        connection.pump()
        #expect(connection.serverEvents.plaintext == Array("ping".utf8), "\(context)", sourceLocation: sourceLocation)
        #expect(connection.clientEvents.plaintext == Array("pong".utf8), "\(context)", sourceLocation: sourceLocation)
}
