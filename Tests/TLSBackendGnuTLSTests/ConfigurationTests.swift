import Foundation
import PKI
import TestSupport
import Testing
import TLSContract
@_spi(Testing) @testable import TLSBackendGnuTLS

@Suite struct ConfigurationTests {
    let backend = GnuTLSBackend()
    let pki = TestPKI.shared(.ecdsaP256)

    private func configurationError(_ configuration: TLSConfiguration) -> TLSError? {
        do {
            _ = try backend.makeContext(configuration)
            return nil
        } catch {
            return error
        }
    }

    private func server(certificate: TLSConfiguration.Source, key: TLSConfiguration.Source) -> TLSConfiguration {
        TLSConfiguration.mtlsServer(identity: .pem(certificateChain: certificate, privateKey: key), trustRoots: pki.trustRoots)
    }

    @Test func filesAreLoadedAndMissingFilesAreNamed() throws {
        let directory = try TemporaryDirectory()
        let certificate = try directory.write("server.pem", pki.server.chainPEM)
        let key = try directory.write("server.key", pki.server.privateKeyPEM)
        let ca = try directory.write("ca.pem", pki.root.certificatePEM)
        var configuration = TLSConfiguration.mtlsServer(
            identity: .pem(certificateChain: .file(certificate), privateKey: .file(key)), trustRoots: [.file(ca)])
        #expect(configurationError(configuration) == nil)

        let missing = directory.file("nope.pem")
        configuration.trustRoots = [.file(ca), .file(missing)]
        #expect(configurationError(configuration)?.reason == .configuration(file: missing, problem: .fileNotFound))
    }

    @Test func keyThatDoesNotMatchTheCertificate() {
        let error = configurationError(server(
            certificate: .pem(pki.server.chainPEM, label: "server.pem"),
            key: .pem(pki.client.privateKeyPEM, label: "client.key")))
        #expect(error?.reason == .configuration(file: "client.key", problem: .keyDoesNotMatchCertificate))
    }

    @Test func unparsableCertificateAndKeyNameTheirFile() {
        let brokenCertificate = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
        let brokenKey = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
        let certificateError = configurationError(server(
            certificate: .pem(brokenCertificate, label: "broken.pem"),
            key: .pem(pki.server.privateKeyPEM, label: "server.key")))
        #expect(certificateError?.reason == .configuration(file: "broken.pem", problem: .invalidCertificate))

        let keyError = configurationError(server(
            certificate: .pem(pki.server.chainPEM, label: "server.pem"),
            key: .pem(brokenKey, label: "broken.key")))
        #expect(keyError?.reason == .configuration(file: "broken.key", problem: .invalidPrivateKey))

        var configuration = Fixture.serverConfig()
        configuration.trustRoots = [.pem(brokenCertificate, label: "broken-ca.pem")]
        #expect(configurationError(configuration)?.reason
                == .configuration(file: "broken-ca.pem", problem: .invalidCertificate))
    }

    @Test func sharedValidationRunsFirst() {
        var configuration = Fixture.serverConfig()
        configuration.trustRoots = []
        #expect(configurationError(configuration)?.reason == .configuration(file: nil, problem: .noTrustRoots))
    }

    @Test("ALPN lists GnuTLS cannot hold are refused when the context is made, naming the limit")
    func applicationProtocolLimits() {
        let eight = (1...8).map { "proto-\($0)" }
        #expect(configurationError(Fixture.clientConfig(applicationProtocols: eight)) == nil)
        let longest = String(repeating: "x", count: GnuTLSContext.maximumApplicationProtocolLength)
        #expect(configurationError(Fixture.serverConfig(applicationProtocols: [longest])) == nil)

        let nine = configurationError(Fixture.clientConfig(applicationProtocols: eight + ["proto-9"]))
        #expect(nine?.reason == .configuration(file: nil, problem: .invalidSetting("9 ALPN protocols (GnuTLS offers at most 8)")))
        let tooLong = configurationError(Fixture.serverConfig(applicationProtocols: [longest + "x"]))
        guard case .configuration(nil, .invalidSetting(let what))? = tooLong?.reason else {
            Issue.record("a 32-byte ALPN name was accepted: \(String(describing: tooLong))")
            return
        }
        #expect(what.contains("at most 31 bytes"))
    }

    @Test func pkcs12Bundles() throws {
        let directory = try TemporaryDirectory()
        let certificate = try directory.write("server.pem", pki.server.chainPEM)
        let key = try directory.write("server.key", pki.server.privateKeyPEM)
        let bundle = directory.file("server.p12")
        let result = try runTool("/usr/bin/openssl", [
            "pkcs12", "-export", "-in", certificate, "-inkey", key, "-out", bundle, "-passout", "pass:secret",
        ])
        try #require(result.status == 0, "\(result.output)")

        let good = TLSConfiguration.mtlsServer(identity: .pkcs12(.file(bundle), password: "secret"), trustRoots: pki.trustRoots)
        let context = try backend.makeContext(good)
        let client = try backend.makeContext(Fixture.clientConfig()).makeSession()
        let pair = InMemoryPair(client: client, server: try context.makeSession())
        #expect(pair.handshake())

        let wrong = TLSConfiguration.mtlsServer(identity: .pkcs12(.file(bundle), password: "nope"), trustRoots: pki.trustRoots)
        #expect(configurationError(wrong)?.reason == .configuration(file: bundle, problem: .wrongPKCS12Password))

        let garbage = try directory.write("garbage.p12", "this is not PKCS#12")
        let invalid = TLSConfiguration.mtlsServer(identity: .pkcs12(.file(garbage), password: "secret"), trustRoots: pki.trustRoots)
        #expect(configurationError(invalid)?.reason == .configuration(file: garbage, problem: .invalidPKCS12))
    }
}
