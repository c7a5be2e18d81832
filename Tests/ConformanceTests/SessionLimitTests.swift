import TLSContract
import Testing
import TestSupport

/// A session bounds what it buffers on its own (`TLSSessionLimits`), the same way on both backends.
@Suite("Session limits")
struct SessionLimitTests {
    @Test("Ciphertext fed past the bound without process() fails the session", arguments: Backend.all)
    func unprocessedCiphertext(backend: Backend) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let server = try backend.backend.makeContext(pki.serverConfiguration()).makeSession()
        let chunk = [UInt8](repeating: 0x16, count: 64 * 1024)
        for _ in 0...(TLSSessionLimits.maximumUnprocessedCiphertext / chunk.count) {
            server.receiveCiphertext(chunk)
        }
        try expectFailure(server, .bufferLimitExceeded)
    }

    @Test("Plaintext written before the handshake is held up to the bound, then refused", arguments: Backend.all)
    func plaintextBeforeHandshake(backend: Backend) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let client = try backend.backend.makeContext(pki.clientConfiguration()).makeSession()
        try client.writePlaintext([UInt8](repeating: 1, count: TLSSessionLimits.maximumPlaintextBeforeHandshake))
        #expect {
            try client.writePlaintext([1])
        } throws: { error in
            (error as? TLSError)?.reason == .bufferLimitExceeded
        }
    }

    @Test("Held plaintext up to the bound is delivered whole once the handshake completes", arguments: BackendPair.all)
    func heldPlaintextDelivered(pair: BackendPair) throws {
        let pki = TestPKI.shared(.ecdsaP256)
        let connection = try pair.connect(client: pki.clientConfiguration(), server: pki.serverConfiguration())
        let held = [UInt8](repeating: 7, count: TLSSessionLimits.maximumPlaintextBeforeHandshake)
        try connection.client.writePlaintext(held)
        #expect(connection.pump())
        expectSameBytes(connection.serverEvents.plaintext, held)
    }
}
