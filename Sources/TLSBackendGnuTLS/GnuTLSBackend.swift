import CGnuTLS
import TLSContract

/// The GnuTLS backend. A stateless value: credentials and the priority cache live in `GnuTLSContext`.
public struct GnuTLSBackend: TLSBackend {
    public init() {
        GnuTLSLibrary.ensureInitialized()
    }

    public var name: String { "gnutls" }

    public var libraryVersion: String { GnuTLSLibrary.version }

    public var capabilities: TLSCapabilities {
        [.pkcs12, .alpn, .ed25519, .ipAddressVerification, .tls13Resumption, .tls12Resumption]
    }

    public func makeContext(_ configuration: TLSConfiguration) throws(TLSError) -> any TLSContext {
        try GnuTLSContext(configuration: configuration)
    }

    public func makeContext(_ configuration: TLSConfiguration, succeeding previous: (any TLSContext)?) throws(TLSError) -> any TLSContext {
        try GnuTLSContext(configuration: configuration, priorityOverride: nil,
                          inheritedTicketKey: (previous as? GnuTLSContext)?.ticketKey)
    }
}

enum GnuTLSLibrary {
    /// gnutls_global_init is reference counted and thread-safe; a `static let` runs it exactly once
    /// for the process and never pairs it with a deinit, so the library stays up for every context.
    private static let initResult: Int32 = gnutls_global_init()

    static func ensureInitialized() {
        _ = initResult
    }

    static let version: String = {
        ensureInitialized()
        guard let text = gnutls_check_version(nil) else { return "GnuTLS" }
        return "GnuTLS " + String(cString: text)
    }()

    /// gnutls_strerror with the numeric code, for `TLSError.detail`.
    static func describe(_ code: Int32) -> String {
        let text = gnutls_strerror(code).map { String(cString: $0) } ?? "unknown error"
        let name = gnutls_strerror_name(code).map { String(cString: $0) } ?? "\(code)"
        return "\(name): \(text)"
    }
}
