import Foundation
import PKI
import Testing

@Suite("PKIWriter")
struct PKIWriterTests {
    private func mode(_ path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    private func certificateCount(_ path: String) throws -> Int {
        try String(contentsOfFile: path, encoding: .utf8).components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1
    }

    @Test("Writes a verifiable PKI with an intermediate; keys are 0600")
    func withIntermediate() throws {
        let temporary = try ScratchDirectory()
        defer { temporary.remove() }
        let directory = temporary.file("nested/pki")
        let written = try PKIWriter.initialize(at: directory, keyType: .ecdsaP256, intermediate: true,
                                               serverNames: ["localhost", "127.0.0.1"], clientName: "spiffe://example.org/client",
                                               days: 30, force: false)
        let layout = PKIDirectoryLayout(directory: directory)
        #expect(written == [layout.caCertificate, layout.caKey, layout.intermediateCertificate, layout.intermediateKey,
                            layout.serverCertificate, layout.serverKey, layout.clientCertificate, layout.clientKey, layout.crl])
        #expect(written.map { ($0 as NSString).lastPathComponent }
                == ["ca.pem", "ca.key", "intermediate.pem", "intermediate.key", "server.pem", "server.key", "client.pem", "client.key",
                    "crl.pem"])
        for path in written {
            #expect(try mode(path) == (path.hasSuffix(".key") ? 0o600 : 0o644), "\(path)")
            if path.hasSuffix(".key") {
                #expect(try String(contentsOfFile: path, encoding: .utf8).hasPrefix("-----BEGIN PRIVATE KEY-----"))
            }
        }
        #expect(try certificateCount(layout.serverCertificate) == 2)
        #expect(try certificateCount(layout.clientCertificate) == 2)
        #expect(try certificateCount(layout.caCertificate) == 1)

        let server = try OpenSSL.run(["verify", "-CAfile", layout.caCertificate, "-untrusted", layout.serverCertificate,
                                      "-purpose", "sslserver", "-verify_ip", "127.0.0.1", layout.serverCertificate])
        #expect(server.succeeded, "\(server.output)")
        let client = try OpenSSL.run(["verify", "-CAfile", layout.caCertificate, "-untrusted", layout.intermediateCertificate,
                                      "-purpose", "sslclient", layout.clientCertificate])
        #expect(client.succeeded, "\(client.output)")
        let matches = try OpenSSL.run(["x509", "-in", layout.serverCertificate, "-noout", "-checkend", "\(29 * 86400)"])
        #expect(matches.succeeded, "leaf valid for the requested 30 days: \(matches.output)")
        let expires = try OpenSSL.run(["x509", "-in", layout.serverCertificate, "-noout", "-checkend", "\(31 * 86400)"])
        #expect(!expires.succeeded, "leaf not valid longer than 30 days")

        // The key in server.key belongs to server.pem.
        let certificateKey = try OpenSSL.run(["x509", "-in", layout.serverCertificate, "-noout", "-pubkey"])
        let privateKey = try OpenSSL.run(["pkey", "-in", layout.serverKey, "-pubout"])
        #expect(certificateKey.succeeded && certificateKey.output == privateKey.output)
    }

    @Test("Without an intermediate, leaves are signed by the root and no intermediate files are written",
          arguments: [KeyType.rsa2048, .ed25519])
    func withoutIntermediate(keyType: KeyType) throws {
        let temporary = try ScratchDirectory()
        defer { temporary.remove() }
        let written = try PKIWriter.initialize(at: temporary.path, keyType: keyType, intermediate: false,
                                               serverNames: ["server.example"], clientName: "client.example", days: 1, force: false)
        let layout = PKIDirectoryLayout(directory: temporary.path)
        #expect(written == layout.files(intermediate: false))
        #expect(!FileManager.default.fileExists(atPath: layout.intermediateCertificate))
        #expect(!FileManager.default.fileExists(atPath: layout.intermediateKey))
        #expect(try certificateCount(layout.serverCertificate) == 1)
        let client = try OpenSSL.run(["verify", "-CAfile", layout.caCertificate, "-purpose", "sslclient", layout.clientCertificate])
        #expect(client.succeeded, "\(client.output)")
        let server = try OpenSSL.run(["verify", "-CAfile", layout.caCertificate, "-purpose", "sslserver",
                                      "-verify_hostname", "server.example", layout.serverCertificate])
        #expect(server.succeeded, "\(server.output)")
    }

    @Test("Refuses to overwrite any existing file unless forced; force replaces files and fixes key modes")
    func overwriting() throws {
        let temporary = try ScratchDirectory()
        defer { temporary.remove() }
        let layout = PKIDirectoryLayout(directory: temporary.path)
        func initialize(force: Bool) throws -> [String] {
            try PKIWriter.initialize(at: temporary.path, keyType: .ecdsaP256, intermediate: true, serverNames: ["localhost"],
                                     clientName: "client", days: 10, force: force)
        }

        // One existing file blocks everything, and nothing else is written.
        try "keep me".write(toFile: layout.clientKey, atomically: false, encoding: .utf8)
        let blocked = try #require(throws: PKIError.self) { try initialize(force: false) }
        #expect(blocked == .fileExists(path: layout.clientKey))
        #expect(blocked.description.contains(layout.clientKey))
        #expect(!FileManager.default.fileExists(atPath: layout.caCertificate))
        #expect(try String(contentsOfFile: layout.clientKey, encoding: .utf8) == "keep me")

        try FileManager.default.removeItem(atPath: layout.clientKey)
        _ = try initialize(force: false)
        let firstCA = try String(contentsOfFile: layout.caCertificate, encoding: .utf8)
        let again = try #require(throws: PKIError.self) { try initialize(force: false) }
        #expect(again == .fileExists(path: layout.caCertificate))
        #expect(again.description.contains("ca.pem"))
        #expect(try String(contentsOfFile: layout.caCertificate, encoding: .utf8) == firstCA)

        // A key made world-readable is rewritten with 0600 when forced.
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: layout.caKey)
        let rewritten = try initialize(force: true)
        #expect(rewritten.count == 9)
        #expect(try String(contentsOfFile: layout.caCertificate, encoding: .utf8) != firstCA)
        #expect(try mode(layout.caKey) == 0o600)
    }

    @Test("Refuses bad arguments and symlinks in place of files")
    func refusals() throws {
        let temporary = try ScratchDirectory()
        defer { temporary.remove() }
        #expect(throws: PKIError.self) {
            try PKIWriter.initialize(at: temporary.path, keyType: .ecdsaP256, intermediate: false, serverNames: [],
                                     clientName: "c", days: 1, force: false)
        }
        #expect(throws: PKIError.self) {
            try PKIWriter.initialize(at: temporary.path, keyType: .ecdsaP256, intermediate: false, serverNames: ["s"],
                                     clientName: "c", days: 0, force: false)
        }
        #expect(throws: PKIError.self) {
            try PKIWriter.initialize(at: temporary.path, keyType: .ecdsaP256, intermediate: false, serverNames: ["s"],
                                     clientName: "", days: 1, force: false)
        }
        let target = temporary.file("elsewhere.txt")
        try "target".write(toFile: target, atomically: false, encoding: .utf8)
        let layout = PKIDirectoryLayout(directory: temporary.path)
        try FileManager.default.createSymbolicLink(atPath: layout.serverKey, withDestinationPath: target)
        #expect(throws: PKIError.fileExists(path: layout.serverKey)) {
            try PKIWriter.initialize(at: temporary.path, keyType: .ecdsaP256, intermediate: false, serverNames: ["s"],
                                     clientName: "c", days: 1, force: false)
        }
        #expect(throws: PKIError.self) {
            try PKIWriter.initialize(at: temporary.path, keyType: .ecdsaP256, intermediate: false, serverNames: ["s"],
                                     clientName: "c", days: 1, force: true)
        }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "target")
    }
}
