import TLSContract
import Testing
import TestSupport

/// RFC 5746 (renegotiation_info) on both backends. It only matters for TLS 1.2, and our servers refuse
/// every renegotiation anyway (see "Renegotiation"). So: a server answers hellos that lack it, as
/// OpenSSL servers do; a client refuses a TLS 1.2 server that lacks it, as OpenSSL 3 clients do, since
/// only the server's support lets a client tell a spliced renegotiation from its first handshake.
@Suite("Safe renegotiation (RFC 5746)")
struct SafeRenegotiationTests {
    @Test("A TLS 1.3-only ClientHello without renegotiation_info or its SCSV is answered", arguments: Backend.all)
    func tls13OnlyClientHello(backend: Backend) throws {
        let server = try backend.backend.makeContext(TestPKI.shared(.ecdsaP256).serverConfiguration()).makeSession()
        server.receiveCiphertext(RawHandshake.tls13OnlyClientHello())
        try expectServerHello(from: server, version: 0x0304)
    }

    @Test("A first TLS 1.2 handshake from a client without RFC 5746 is answered", arguments: Backend.all)
    func legacyTLS12ClientHello(backend: Backend) throws {
        let server = try backend.backend.makeContext(TestPKI.shared(.ecdsaP256).serverConfiguration()).makeSession()
        server.receiveCiphertext(RawHandshake.legacyTLS12ClientHello(cipherSuites: [0xC02B, 0xC02F]))
        let extensions = try expectServerHello(from: server, version: 0x0303)
        #expect(!extensions.contains(RawHandshake.renegotiationInfoExtension),
                "renegotiation_info answered although the client did not offer it")
    }

    @Test("A TLS 1.2 server without renegotiation_info is refused", arguments: Backend.all)
    func legacyTLS12Server(backend: Backend) throws {
        let configuration = TestPKI.shared(.ecdsaP256).clientConfiguration(versions: .tls12 ... .tls12)
        for (hello, supportsRFC5746) in [(RawHandshake.serverHello(version: 0x0303, cipherSuite: 0xC02B), true),
                                         (RawHandshake.legacyTLS12ServerHello(cipherSuite: 0xC02B), false)] {
            let client = try backend.backend.makeContext(configuration).makeSession()
            _ = client.process()
            _ = client.takeCiphertext()
            client.receiveCiphertext(hello)
            let progress = client.process()
            if supportsRFC5746 {
                // The control: the same answer with renegotiation_info is fine so far (the
                // certificate is awaited), so the refusal below has no other cause.
                guard case .needsInput = progress else {
                    Issue.record("the control ServerHello was not accepted: \(progress)")
                    continue
                }
            } else {
                guard case .failed(let error) = progress else {
                    Issue.record("a TLS 1.2 server without RFC 5746 was accepted: \(progress)")
                    continue
                }
                #expect(error.reason == .handshakeFailed(.protocolViolation), "\(error)")
                #expect(client.pendingCiphertextCount > 0, "no alert was sent")
            }
        }
    }

    /// Checks that `server` answered with a ServerHello selecting `version` and did not fail.
    /// Returns the ServerHello's extension types.
    @discardableResult
    private func expectServerHello(from server: any TLSSession, version: UInt16,
                                   sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt16] {
        let progress = server.process()
        if case .failed(let error) = progress {
            Issue.record("the server refused the hello: \(error)", sourceLocation: sourceLocation)
        }
        let answer = try #require(RawHandshake.serverHelloSummary(server.takeCiphertext()),
                                  "the server did not answer with a ServerHello", sourceLocation: sourceLocation)
        #expect(answer.version == version, sourceLocation: sourceLocation)
        return answer.extensions
    }
}
