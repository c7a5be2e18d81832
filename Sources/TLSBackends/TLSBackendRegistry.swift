import TLSBackendGnuTLS
import TLSBackendOpenSSL
import TLSContract

/// The backends compiled into this build, by the name users pick them with (`--backend NAME`).
public enum TLSBackendRegistry {
    public static let all: [any TLSBackend] = [OpenSSLBackend(), GnuTLSBackend()]

    public static var names: [String] { all.map(\.name) }

    public static func backend(named name: String) -> (any TLSBackend)? {
        all.first { $0.name == name.lowercased() }
    }

    /// Every client×server combination, for demos and conformance runs.
    public static var pairs: [(client: any TLSBackend, server: any TLSBackend)] {
        all.flatMap { client in all.map { server in (client, server) } }
    }
}
