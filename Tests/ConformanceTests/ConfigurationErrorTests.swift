import Foundation
import TLSContract
import Testing
import TestSupport

/// Bad credentials are refused when the context is built, with an error that names the file.
@Suite("Configuration errors")
struct ConfigurationErrorTests {
    private func expectConfigurationError(
        _ backend: Backend, _ configuration: TLSConfiguration, file: String?, _ problem: TLSError.ConfigurationProblem,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        do {
            _ = try backend.backend.makeContext(configuration)
            Issue.record("\(backend.backend.name) accepted the configuration", sourceLocation: sourceLocation)
        } catch {
            #expect(error.reason == .configuration(file: file, problem: problem), "\(error)", sourceLocation: sourceLocation)
            if let file { #expect(error.description.contains(file), sourceLocation: sourceLocation) }
        }
    }

    private func serverConfiguration(certificate: TLSConfiguration.Source, key: TLSConfiguration.Source) -> TLSConfiguration {
        TLSConfiguration.mtlsServer(identity: .pem(certificateChain: certificate, privateKey: key),
                                    trustRoots: TestPKI.shared(.ecdsaP256).trustRoots)
    }

    @Test("A missing file is named", arguments: Backend.all)
    func missingFile(backend: Backend) throws {
        let directory = try TemporaryDirectory()
        let pki = TestPKI.shared(.ecdsaP256)
        let key = try directory.write("server.key", pki.server.privateKeyPEM)
        let missing = directory.file("no-such-cert.pem")
        expectConfigurationError(backend, serverConfiguration(certificate: .file(missing), key: .file(key)),
                                 file: missing, .fileNotFound)
        var client = pki.clientConfiguration()
        client.trustRoots = [.file(directory.file("no-such-ca.pem"))]
        expectConfigurationError(backend, client, file: directory.file("no-such-ca.pem"), .fileNotFound)
    }

    @Test("An unreadable file is named", arguments: Backend.all)
    func unreadableFile(backend: Backend) throws {
        let directory = try TemporaryDirectory()
        let pki = TestPKI.shared(.ecdsaP256)
        let certificate = try directory.write("server.pem", pki.server.chainPEM)
        // Tests may run as root, who reads any file whatever its mode; a directory stays unreadable as a file.
        let unreadable = directory.file("server.key")
        try FileManager.default.createDirectory(atPath: unreadable, withIntermediateDirectories: false)
        expectConfigurationError(backend, serverConfiguration(certificate: .file(certificate), key: .file(unreadable)),
                                 file: unreadable, .fileUnreadable)
    }

    @Test("A key that does not match its certificate is named", arguments: Backend.all)
    func mismatchedKey(backend: Backend) throws {
        let directory = try TemporaryDirectory()
        let pki = TestPKI.shared(.ecdsaP256)
        let certificate = try directory.write("server.pem", pki.server.chainPEM)
        let otherKey = try directory.write("client.key", pki.client.privateKeyPEM)
        expectConfigurationError(backend, serverConfiguration(certificate: .file(certificate), key: .file(otherKey)),
                                 file: otherKey, .keyDoesNotMatchCertificate)
    }

    @Test("A PEM file without a certificate is named", arguments: Backend.all)
    func noCertificate(backend: Backend) throws {
        let directory = try TemporaryDirectory()
        let pki = TestPKI.shared(.ecdsaP256)
        let notACertificate = try directory.write("server.pem", pki.server.privateKeyPEM)
        let key = try directory.write("server.key", pki.server.privateKeyPEM)
        expectConfigurationError(backend, serverConfiguration(certificate: .file(notACertificate), key: .file(key)),
                                 file: notACertificate, .noCertificateInPEM)
        let emptyCA = try directory.write("ca.pem", "")
        var client = pki.clientConfiguration()
        client.trustRoots = [.file(emptyCA)]
        expectConfigurationError(backend, client, file: emptyCA, .noCertificateInPEM)
    }

    @Test("A corrupt certificate is named", arguments: Backend.all)
    func corruptCertificate(backend: Backend) throws {
        let directory = try TemporaryDirectory()
        let pki = TestPKI.shared(.ecdsaP256)
        let corrupt = try directory.write("server.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        let key = try directory.write("server.key", pki.server.privateKeyPEM)
        expectConfigurationError(backend, serverConfiguration(certificate: .file(corrupt), key: .file(key)),
                                 file: corrupt, .invalidCertificate)
    }

    @Test("Settings that cannot work are refused the same way", arguments: Backend.all)
    func impossibleSettings(backend: Backend) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        var inverted = pki.clientConfiguration()
        inverted.minimumVersion = .tls13
        inverted.maximumVersion = .tls12
        expectConfigurationError(backend, inverted, file: nil, .invalidVersionRange)
        expectConfigurationError(backend, TLSConfiguration.tlsClient(trustRoots: [], serverName: "localhost"),
                                 file: nil, .noTrustRoots)
        expectConfigurationError(backend, TLSConfiguration(role: .server), file: nil, .missingIdentity)
    }

    @Test("PKCS#12: the right password loads it, a wrong one is named", arguments: BackendPair.all)
    func pkcs12(pair: BackendPair) throws {
        let directory = try TemporaryDirectory()
        let pki = TestPKI.shared(.ecdsaP256)
        let certificate = try directory.write("client.pem", pki.client.chainPEM)
        let key = try directory.write("client.key", pki.client.privateKeyPEM)
        let bundle = directory.file("client.p12")
        let export = try runTool("/usr/bin/openssl", ["pkcs12", "-export", "-in", certificate, "-inkey", key,
                                                      "-out", bundle, "-passout", "pass:correct horse"])
        try #require(export.status == 0, "\(export.output)")

        var client = pki.clientConfiguration()
        client.identity = .pkcs12(.file(bundle), password: "correct horse")
        let connection = try pair.connect(client: client, server: pki.serverConfiguration())
        #expect(connection.handshake(), "\(String(describing: connection.serverEvents.failure ?? connection.clientEvents.failure))")
        #expect(connection.server.peerIdentity?.commonName == "client.swift-mtls.test")

        client.identity = .pkcs12(.file(bundle), password: "wrong")
        expectConfigurationError(Backend(backend: pair.client), client, file: bundle, .wrongPKCS12Password)
        let garbage = try directory.write("garbage.p12", "not a bundle")
        client.identity = .pkcs12(.file(garbage), password: "x")
        expectConfigurationError(Backend(backend: pair.client), client, file: garbage, .invalidPKCS12)
    }
}
