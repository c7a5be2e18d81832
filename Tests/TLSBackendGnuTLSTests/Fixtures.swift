import PKI
import TestSupport
import TLSContract
@_spi(Testing) @testable import TLSBackendGnuTLS

/// Shorthands for building GnuTLS↔GnuTLS pairs from the shared test PKI.
enum Fixture {
    static let backend = GnuTLSBackend()
    static var pki: TestPKI { TestPKI.shared(.ecdsaP256) }

    static func serverConfig(
        _ pki: TestPKI = pki, certificate: IssuedCertificate? = nil,
        clientAuthentication: TLSConfiguration.ClientAuthentication = .require,
        minimumVersion: TLSVersion = .tls12, maximumVersion: TLSVersion = .tls13,
        applicationProtocols: [String] = []
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .server, identity: pki.identity(certificate ?? pki.server), trustRoots: pki.trustRoots,
            clientAuthentication: clientAuthentication,
            minimumVersion: minimumVersion, maximumVersion: maximumVersion,
            applicationProtocols: applicationProtocols)
    }

    static func clientConfig(
        _ pki: TestPKI = pki, certificate: IssuedCertificate?? = .none, serverName: String = "localhost",
        minimumVersion: TLSVersion = .tls12, maximumVersion: TLSVersion = .tls13,
        applicationProtocols: [String] = []
    ) -> TLSConfiguration {
        let leaf: IssuedCertificate? = certificate ?? pki.client
        return TLSConfiguration(
            role: .client, identity: leaf.map { pki.identity($0) }, trustRoots: pki.trustRoots,
            serverName: serverName, minimumVersion: minimumVersion, maximumVersion: maximumVersion,
            applicationProtocols: applicationProtocols)
    }

    static func pair(server: TLSConfiguration, client: TLSConfiguration, serverName: String? = nil) throws -> InMemoryPair {
        let serverSession = try backend.makeContext(server).makeSession()
        let clientSession = try backend.makeContext(client).makeSession(serverName: serverName)
        return InMemoryPair(client: clientSession, server: serverSession)
    }

    /// A session from a context with a hand-written priority string: a deliberately weak peer.
    static func legacySession(_ configuration: TLSConfiguration, priority: String) throws -> any TLSSession {
        try GnuTLSContext(configuration: configuration, priorityOverride: priority).makeSession()
    }

    /// Feeds `bytes` to a fresh server session and returns how it failed (nil if it did not).
    static func serverFailure(afterReceiving bytes: [UInt8], endOfInput: Bool = false) throws -> TLSError? {
        let server = try backend.makeContext(serverConfig()).makeSession()
        server.receiveCiphertext(bytes)
        if endOfInput { server.receiveEndOfInput() }
        for _ in 0..<10 {
            if case .failed(let error) = server.process() { return error }
        }
        return nil
    }
}
