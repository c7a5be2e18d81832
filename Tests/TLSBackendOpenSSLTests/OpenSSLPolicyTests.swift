import COpenSSL
import TLSContract
import Testing
import TestSupport

@testable import TLSBackendOpenSSL

@Suite("OpenSSL backend")
struct OpenSSLPolicyTests {
    @Test("Reports the linked OpenSSL 3 version")
    func version() {
        #expect(OpenSSLBackend().libraryVersion.hasPrefix("OpenSSL 3."))
        #expect(OpenSSLBackend().name == "openssl")
    }

    @Test("Offers only ECDHE with AEAD ciphers in TLS 1.2, and no TLS below 1.2")
    func cipherPolicy() throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let context = try #require(try OpenSSLBackend().makeContext(pki.serverConfiguration()) as? OpenSSLContext)
        let ssl = try #require(SSL_new(context.ctx))
        defer { SSL_free(ssl) }
        var names: [String] = []
        var index: Int32 = 0
        while let name = SSL_get_cipher_list(ssl, index) {
            names.append(String(cString: name))
            index += 1
        }
        #expect(!names.isEmpty)
        for name in names {
            let isTLS13 = name.hasPrefix("TLS_")
            let isAEADWithECDHE = name.hasPrefix("ECDHE-") && (name.contains("GCM") || name.contains("CHACHA20"))
            #expect(isTLS13 || isAEADWithECDHE, "\(name) is outside the policy")
        }
        #expect(SSL_CTX_get_min_proto_version_shim(context.ctx) == TLS1_2_VERSION)
        #expect(SSL_CTX_get_options(context.ctx) & mtls_SSL_OP_NO_RENEGOTIATION() != 0)
        #expect(SSL_CTX_get_options(context.ctx) & mtls_SSL_OP_NO_COMPRESSION() != 0)
    }

    private func SSL_CTX_get_min_proto_version_shim(_ ctx: OpaquePointer) -> Int {
        SSL_CTX_ctrl(ctx, SSL_CTRL_GET_MIN_PROTO_VERSION, 0, nil)
    }
}

extension TestPKI {
    func serverConfiguration() -> TLSConfiguration {
        .mtlsServer(identity: identity(server), trustRoots: trustRoots)
    }
}
