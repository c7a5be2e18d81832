internal import COpenSSL
import TLSContract

extension OpenSSLBackend {
    /// A server context that replaces `previous` takes over its tickets (see the protocol's rule).
    public func makeContext(_ configuration: TLSConfiguration, succeeding previous: (any TLSContext)?) throws(TLSError) -> any TLSContext {
        try OpenSSLContext(configuration: configuration, inheritedTickets: (previous as? OpenSSLContext)?.tickets)
    }
}

/// A server's resumption state: the TLS 1.3 session store and the TLS 1.2 ticket keys. Shared by
/// the contexts of one reloading server (see `TLSBackend.makeContext(_:succeeding:)`); the keys
/// are freed when the last context using them is gone (each context frees its SSL_CTX, which calls
/// back into them, in its own deinit, before it lets go of this).
final class OpenSSLServerTickets: @unchecked Sendable {
    let store: OpenSSLServerSessionStore
    let keys: UnsafeMutablePointer<mtls_ticket_keys>

    init?(storeCapacity: Int, sessionIDContext: [UInt8], keyLifetimeSeconds: Int) {
        guard let keys = mtls_ticket_keys_new(keyLifetimeSeconds) else { return nil }
        self.keys = keys
        store = OpenSSLServerSessionStore(capacity: storeCapacity, sessionIDContext: sessionIDContext)
    }

    deinit { mtls_ticket_keys_free(keys) }
}
