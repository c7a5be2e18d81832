import Foundation
import PKI
import Testing
import TestSupport
import X509

/// The lifecycle of a `pki init` directory: CRLs checked by openssl, renewals, revocations and the
/// three stages of a root rotation, with their order enforced.
@Suite("PKI directory lifecycle")
struct PKIDirectoryTests {
    private func initialized(intermediate: Bool = false, days: Int = 30, keyType: KeyType = .ecdsaP256) throws -> (ScratchDirectory, PKIDirectory) {
        let scratch = try ScratchDirectory()
        let path = scratch.file("pki")
        try PKIWriter.initialize(at: path, keyType: keyType, intermediate: intermediate,
                                 serverNames: ["localhost", "127.0.0.1"], clientName: "client", days: days, force: false)
        return (scratch, PKIDirectory(path))
    }

    private func text(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    private func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    private func verify(_ leaf: String, bundle: String, crl: String? = nil) throws -> CommandResult {
        var arguments = ["verify", "-CAfile", bundle]
        if let crl { arguments += ["-crl_check", "-CRLfile", crl] }
        return try OpenSSL.run(arguments + [leaf])
    }

    @Test("pki init writes an empty CRL that openssl accepts: v2, signed by the root, CRL number 1, a week long")
    func initialCRL() throws {
        let (scratch, directory) = try initialized()
        defer { scratch.remove() }
        let shown = try OpenSSL.run(["crl", "-in", directory.crl, "-noout", "-text", "-CAfile", directory.layout.caCertificate])
        #expect(shown.succeeded, "\(shown.output)")
        #expect(shown.output.contains("verify OK"), "\(shown.output)")
        #expect(shown.output.contains("Version 2"), "\(shown.output)")
        #expect(shown.output.contains("No Revoked Certificates"), "\(shown.output)")
        #expect(shown.output.contains("CRL Number"), "\(shown.output)")
        let parsed = try #require(try directory.crls().first?.document)
        #expect(parsed.number == 1)
        #expect(abs(parsed.nextUpdate.timeIntervalSince(parsed.thisUpdate) - 7 * 86400) < 2)
        #expect(try verify(directory.layout.clientCertificate, bundle: directory.layout.caCertificate, crl: directory.crl).succeeded)
    }

    @Test("revoke lists the serial with its reason, keeps earlier entries, counts the CRL number up; openssl agrees")
    func revoke() throws {
        let (scratch, directory) = try initialized()
        defer { scratch.remove() }
        let client = try directory.leaf(.client)
        let server = try directory.leaf(.server)
        let first = try directory.revoke(client, reason: .keyCompromise)
        #expect(!first.alreadyListed)
        let again = try directory.revoke(client)
        #expect(again.alreadyListed)
        try directory.revoke(server, reason: .superseded, nextUpdateIn: 3600)
        let document = try #require(try directory.crls().first?.document)
        #expect(document.number == 4)
        #expect(again.serialHex == first.serialHex)
        #expect(document.entries.first?.serialHex == first.serialHex)
        #expect(document.entries.count == 2)
        #expect(document.entries.first?.reason == .keyCompromise)
        #expect(abs(document.nextUpdate.timeIntervalSince(document.thisUpdate) - 3600) < 2)

        let shown = try OpenSSL.run(["crl", "-in", directory.crl, "-noout", "-text", "-CAfile", directory.layout.caCertificate])
        #expect(shown.output.contains("verify OK"), "\(shown.output)")
        #expect(shown.output.contains("Serial Number: \(first.serialHex)"), "\(shown.output)")
        #expect(shown.output.contains("Key Compromise"), "\(shown.output)")
        #expect(shown.output.contains("Superseded"), "\(shown.output)")
        let refused = try verify(directory.layout.clientCertificate, bundle: directory.layout.caCertificate, crl: directory.crl)
        #expect(!refused.succeeded && refused.output.contains("certificate revoked"), "\(refused.output)")
    }

    @Test("renew: new key, same names, usage and issuer, the same lifetime (or --valid); key 0600; the old CRL entries stay valid")
    func renew() throws {
        let (scratch, directory) = try initialized()
        defer { scratch.remove() }
        let old = try directory.leaf(.server)
        let oldKey = try text(directory.keyPath(.server))
        let renewed = try directory.renew(.server)
        #expect(renewed.certificate.subject == old.subject)
        #expect(renewed.certificate.issuer == old.issuer)
        #expect(renewed.certificate.publicKey != old.publicKey)
        #expect(try text(directory.keyPath(.server)) != oldKey)
        #expect(try renewed.certificate.extensions.subjectAlternativeNames == (try old.extensions.subjectAlternativeNames))
        #expect(try renewed.certificate.extensions.extendedKeyUsage == (try old.extensions.extendedKeyUsage))
        #expect(abs(PKIDirectory.issuedLifetime(of: renewed.certificate) - PKIDirectory.issuedLifetime(of: old)) < 5)
        #expect(try mode(directory.keyPath(.server)) == 0o600)
        #expect(try verify(directory.certificatePath(.server), bundle: directory.layout.caCertificate).succeeded)

        let short = try directory.renew(.client, validFor: 90)
        #expect(abs(PKIDirectory.issuedLifetime(of: short.certificate) - 90) < 2)
        // A 90-second certificate renews as a 90-second one.
        let again = try directory.renew(.client)
        #expect(abs(PKIDirectory.issuedLifetime(of: again.certificate) - 90) < 2)
    }

    @Test("With an intermediate: renewals and revocations go to the intermediate, whose CRL openssl checks")
    func intermediate() throws {
        let (scratch, directory) = try initialized(intermediate: true)
        defer { scratch.remove() }
        let renewed = try directory.renew(.client)
        #expect(renewed.certificate.issuer.description.contains("Intermediate"))
        #expect(try directory.crls().count == 2)
        try directory.revoke(renewed.certificate)
        let crls = try directory.crls()
        #expect(crls.count == 2)
        let listing = try #require(crls.first { !$0.document.entries.isEmpty }?.document)
        #expect(listing.issuer.description.contains("Intermediate"))
        let refused = try OpenSSL.run(["verify", "-crl_check_all", "-CAfile", directory.layout.caCertificate, "-untrusted",
                                       directory.layout.intermediateCertificate, "-CRLfile", directory.crl, directory.layout.clientCertificate])
        #expect(!refused.succeeded && refused.output.contains("certificate revoked"), "\(refused.output)")
        #expect(throws: PKIRotationError.self) { try directory.rotateBegin() }
    }

    @Test("Root rotation: begin, reissue, finish, in that order only; during the overlap the bundle accepts leaves of both roots")
    func rotation() throws {
        let (scratch, directory) = try initialized()
        defer { scratch.remove() }
        let oldRoot = try text(directory.layout.caCertificate)
        let oldClient = try scratch.write(try text(directory.layout.clientCertificate), to: "old-client.pem")
        #expect(try directory.rotationStage() == .none)
        #expect(throws: PKIRotationError.self) { try directory.rotateReissue() }
        #expect(throws: PKIRotationError.self) { try directory.rotateFinish() }

        let next = try directory.rotateBegin()
        #expect(next.commonName == "swift-mtls Root CA G2")
        #expect(try directory.rotationStage() == .begun)
        #expect(try text(directory.layout.caCertificate).components(separatedBy: "BEGIN CERTIFICATE").count - 1 == 2)
        #expect(try directory.crls().count == 2)
        #expect(try mode(directory.nextRootKey) == 0o600)
        let tooEarly = #expect(throws: PKIRotationError.self) { try directory.rotateFinish() }
        #expect(tooEarly?.description.contains("rotate reissue") == true)
        #expect(throws: PKIRotationError.self) { try directory.rotateBegin() }

        let (server, client) = try directory.rotateReissue()
        #expect(server.certificate.issuer == next.subject && client.certificate.issuer == next.subject)
        #expect(try directory.rotationStage() == .reissued)
        // The overlap: the bundle accepts the old root's leaf and the new root's, with the CRLs of both.
        for leaf in [oldClient, directory.layout.clientCertificate, directory.layout.serverCertificate] {
            let verified = try verify(leaf, bundle: directory.layout.caCertificate, crl: directory.crl)
            #expect(verified.succeeded, "\(leaf): \(verified.output)")
        }

        let retired = try directory.rotateFinish()
        #expect(try directory.rotationStage() == .none)
        #expect(try text(directory.layout.caCertificate) == next.certificatePEM)
        #expect(!FileManager.default.fileExists(atPath: directory.nextRootCertificate))
        #expect(retired.count == 3 && retired.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        #expect(try text(retired[0]) == oldRoot)
        #expect(try mode(retired[1]) == 0o600)
        #expect(try directory.crls().count == 1)
        #expect(try verify(directory.layout.clientCertificate, bundle: directory.layout.caCertificate, crl: directory.crl).succeeded)
        #expect(!(try verify(oldClient, bundle: directory.layout.caCertificate).succeeded), "the old root's leaf is still trusted")
        // The next rotation counts on: G3, signed with the key that ca.key now holds.
        #expect(try directory.rotateBegin().commonName == "swift-mtls Root CA G3")
        try directory.revoke(try directory.leaf(.client))
        let refused = try verify(directory.layout.clientCertificate, bundle: directory.layout.caCertificate, crl: directory.crl)
        #expect(!refused.succeeded && refused.output.contains("certificate revoked"), "\(refused.output)")
    }

    @Test("CRLs of every key type verify with openssl, and a revoked leaf is refused; a certificate of another CA cannot be revoked here",
          arguments: [KeyType.ecdsaP256, .rsa2048, .ed25519])
    func keyTypes(keyType: KeyType) throws {
        let (scratch, directory) = try initialized(keyType: keyType)
        defer { scratch.remove() }
        let revoked = try directory.revoke(try directory.leaf(.client), reason: .cessationOfOperation)
        let shown = try OpenSSL.run(["crl", "-in", directory.crl, "-noout", "-text", "-CAfile", directory.layout.caCertificate])
        #expect(shown.output.contains("verify OK"), "\(shown.output)")
        #expect(shown.output.contains("Serial Number: \(revoked.serialHex)"), "\(shown.output)")
        let refused = try verify(directory.layout.clientCertificate, bundle: directory.layout.caCertificate, crl: directory.crl)
        #expect(!refused.succeeded && refused.output.contains("certificate revoked"), "\(refused.output)")
        #expect(try verify(directory.layout.serverCertificate, bundle: directory.layout.caCertificate, crl: directory.crl).succeeded)

        let stranger = try CertificateAuthority.makeRoot(commonName: "stranger", keyType: keyType).issue(.client(name: "x"))
        let refusal = #expect(throws: PKIError.self) { try directory.revoke(stranger.certificate) }
        #expect(refusal?.description.contains("was not issued by a CA of") == true, "\(String(describing: refusal))")
    }
}
