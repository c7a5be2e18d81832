import Foundation
import PKI
import TLSContract

/// The demo's ephemeral PKI: `pki init` output in a temporary folder, plus a stranger CA's client.
struct DemoPKI {
    static let clientName = "demo-client"
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.path + "/mtls-demo-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try PKIWriter.initialize(at: directory, keyType: .ecdsaP256, intermediate: false,
                                 serverNames: ["localhost", "127.0.0.1", "::1"], clientName: Self.clientName,
                                 days: 1, force: false)
        let stranger = try CertificateAuthority.makeRoot(commonName: "untrusted demo root").issue(.client(name: "stranger"))
        try stranger.chainPEM.write(toFile: path("stranger.pem"), atomically: true, encoding: .utf8)
        try stranger.privateKeyPEM.write(toFile: path("stranger.key"), atomically: true, encoding: .utf8)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    var trustRoots: [TLSConfiguration.Source] { [.file(path("ca.pem"))] }

    func identity(_ name: String) -> TLSConfiguration.Identity {
        .pem(certificateChain: .file(path("\(name).pem")), privateKey: .file(path("\(name).key")))
    }

    func serverConfiguration() -> TLSConfiguration {
        .mtlsServer(identity: identity("server"), trustRoots: trustRoots)
    }

    func clientConfiguration(identity name: String? = "client", serverName: String = "localhost") -> TLSConfiguration {
        var configuration = TLSConfiguration.tlsClient(trustRoots: trustRoots, serverName: serverName)
        configuration.identity = name.map(identity)
        return configuration
    }
}
