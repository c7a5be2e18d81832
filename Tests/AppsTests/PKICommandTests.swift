import Foundation
import Testing
import TestSupport

let openssl = "/usr/bin/openssl"

func fileMode(_ path: String) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
}

func contents(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

/// `openssl verify` of the first certificate in `certificate` against `ca`, for a TLS purpose.
func opensslVerify(ca: String, untrusted: String? = nil, purpose: String, _ certificate: String) throws -> ToolResult {
    var arguments = ["verify", "-CAfile", ca, "-purpose", purpose]
    if let untrusted { arguments += ["-untrusted", untrusted] }
    return try runTool(openssl, arguments + [certificate])
}

func certificateCount(_ path: String) -> Int {
    String(decoding: contents(path) ?? Data(), as: UTF8.self).components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1
}

@Suite("mtls pki")
struct PKICommandTests {
    static let keyTypes = ["ecdsa-p256", "rsa-2048", "rsa-3072", "ed25519"]

    @Test("pki init writes a PKI that openssl verifies, keys mode 0600", arguments: keyTypes, [false, true])
    func initialize(keyType: String, intermediate: Bool) throws {
        let temp = try TemporaryDirectory()
        let dir = temp.file("pki")
        var arguments = ["pki", "init", "--out", dir, "--key-type", keyType, "--client-name", "alice"]
        if intermediate { arguments.append("--intermediate") }
        let result = try runTool(try mtlsExecutable(), arguments)
        try #require(result.status == 0, "\(result.output)")

        var files = ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"]
        if intermediate { files += ["intermediate.pem", "intermediate.key"] }
        for file in files {
            #expect(result.output.contains("\(dir)/\(file)"), "the output does not list \(file): \(result.output)")
            let mode = try fileMode("\(dir)/\(file)")
            #expect(mode == (file.hasSuffix(".key") ? 0o600 : 0o644), "\(file) has mode \(String(mode, radix: 8))")
        }
        #expect(result.output.contains("hello-server"), "no hint how to start a server: \(result.output)")

        let untrusted = intermediate ? "\(dir)/intermediate.pem" : nil
        let server = try opensslVerify(ca: "\(dir)/ca.pem", untrusted: untrusted, purpose: "sslserver", "\(dir)/server.pem")
        #expect(server.status == 0 && server.output.contains("server.pem: OK"), "\(server.output)")
        let client = try opensslVerify(ca: "\(dir)/ca.pem", untrusted: untrusted, purpose: "sslclient", "\(dir)/client.pem")
        #expect(client.status == 0 && client.output.contains("client.pem: OK"), "\(client.output)")
        // The leaves' chain files carry the intermediate, so a peer can send the whole chain.
        #expect(certificateCount("\(dir)/server.pem") == (intermediate ? 2 : 1))
        #expect(certificateCount("\(dir)/client.pem") == (intermediate ? 2 : 1))
        if intermediate {
            let withoutIntermediate = try opensslVerify(ca: "\(dir)/ca.pem", purpose: "sslserver", "\(dir)/server.pem")
            #expect(withoutIntermediate.status != 0, "verified without the intermediate: \(withoutIntermediate.output)")
        }
        let names = try runTool(openssl, ["x509", "-noout", "-ext", "subjectAltName", "-in", "\(dir)/server.pem"])
        #expect(names.output.contains("DNS:localhost") && names.output.contains("IP Address:127.0.0.1")
            && names.output.contains("IP Address:0:0:0:0:0:0:0:1"), "\(names.output)")
        let clientNames = try runTool(openssl, ["x509", "-noout", "-subject", "-in", "\(dir)/client.pem"])
        #expect(clientNames.output.contains("CN = alice"), "\(clientNames.output)")
    }

    @Test("a second pki init without --force exits 1 and changes nothing; with --force it replaces the files")
    func noOverwrite() throws {
        let temp = try TemporaryDirectory()
        let dir = temp.file("pki")
        try #require(try mtls("pki", "init", "--out", dir).status == 0)
        let files = ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"]
        let before = files.map { contents("\(dir)/\($0)") }

        let again = try mtls("pki", "init", "--out", dir, "--intermediate")
        #expect(again.status == 1)
        #expect(again.output.contains("already exists") && again.output.contains("--force"), "\(again.output)")
        #expect(again.output.split(separator: "\n").count == 1, "not one line: \(again.output)")
        #expect(files.map { contents("\(dir)/\($0)") } == before)
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/intermediate.pem"))

        // A single existing file is enough to refuse.
        let other = temp.file("other")
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        try temp.write("other/client.key", "mine")
        #expect(try mtls("pki", "init", "--out", other).status == 1)
        #expect(contents("\(other)/client.key") == Data("mine".utf8))
        #expect(!FileManager.default.fileExists(atPath: "\(other)/ca.pem"))

        let forced = try mtls("pki", "init", "--out", dir, "--force")
        #expect(forced.status == 0, "\(forced.output)")
        #expect(files.map { contents("\(dir)/\($0)") } != before)
        #expect(try fileMode("\(dir)/ca.key") == 0o600)
    }

    @Test("pki issue signs server and client certificates from a CA directory", arguments: [false, true])
    func issue(intermediate: Bool) throws {
        let temp = try TemporaryDirectory()
        let dir = temp.file("pki")
        var initArguments = ["pki", "init", "--out", dir]
        if intermediate { initArguments.append("--intermediate") }
        try #require(try runTool(try mtlsExecutable(), initArguments).status == 0)

        let server = try mtls("pki", "issue", "--ca-dir", dir, "--server", "--name", "api.example", "10.0.0.7",
                              "--name", "spiffe://example.org/api", "--out", temp.file("out/api"), "--key-type", "rsa-2048",
                              "--days", "30")
        try #require(server.status == 0, "\(server.output)")
        #expect(try fileMode(temp.file("out/api.key")) == 0o600)
        #expect(certificateCount(temp.file("out/api.pem")) == (intermediate ? 2 : 1))
        // The chain file alone (as -untrusted) is enough to reach the root.
        let verified = try opensslVerify(ca: "\(dir)/ca.pem", untrusted: temp.file("out/api.pem"), purpose: "sslserver",
                                         temp.file("out/api.pem"))
        #expect(verified.status == 0 && verified.output.contains("api.pem: OK"), "\(verified.output)")
        let wrongPurpose = try opensslVerify(ca: "\(dir)/ca.pem", untrusted: temp.file("out/api.pem"), purpose: "sslclient",
                                             temp.file("out/api.pem"))
        #expect(wrongPurpose.status != 0, "a server certificate verified for client auth")
        let text = try runTool(openssl, ["x509", "-noout", "-ext", "subjectAltName", "-issuer", "-enddate", "-in", temp.file("out/api.pem")])
        #expect(text.output.contains("DNS:api.example") && text.output.contains("IP Address:10.0.0.7")
            && text.output.contains("URI:spiffe://example.org/api"), "\(text.output)")
        #expect(text.output.contains(intermediate ? "Intermediate CA" : "Root CA"), "\(text.output)")
        let endDate = try runTool(openssl, ["x509", "-noout", "-checkend", "\(31 * 86400)", "-in", temp.file("out/api.pem")])
        #expect(endDate.status != 0, "--days 30 gave a certificate valid for more than 31 days")

        let client = try mtls("pki", "issue", "--ca-dir", dir, "--client", "--name", "worker-7", "--out", temp.file("out/worker"))
        try #require(client.status == 0, "\(client.output)")
        let clientVerified = try opensslVerify(ca: "\(dir)/ca.pem", untrusted: temp.file("out/worker.pem"),
                                               purpose: "sslclient", temp.file("out/worker.pem"))
        #expect(clientVerified.status == 0, "\(clientVerified.output)")

        let before = contents(temp.file("out/worker.key"))
        let again = try mtls("pki", "issue", "--ca-dir", dir, "--client", "--name", "worker-8", "--out", temp.file("out/worker"))
        #expect(again.status == 1 && again.output.contains("already exists"), "\(again.output)")
        #expect(contents(temp.file("out/worker.key")) == before)
    }

    @Test("pki issue --valid: certificates from seconds to years, checked by openssl x509 -checkend", arguments: [
        ("90m", 85 * 60, 95 * 60), ("2h", 115 * 60, 125 * 60), ("30d", 29 * 86400, 31 * 86400),
    ])
    func issueValidFor(duration: String, atLeast: Int, atMost: Int) throws {
        let temp = try TemporaryDirectory()
        let dir = temp.file("pki")
        try #require(try runTool(try mtlsExecutable(), ["pki", "init", "--out", dir]).status == 0)
        let issued = try mtls("pki", "issue", "--ca-dir", dir, "--client", "--name", "short-lived", "--valid", duration,
                              "--out", temp.file("short"))
        try #require(issued.status == 0, "\(issued.output)")
        let stillValid = try runTool(openssl, ["x509", "-noout", "-checkend", "\(atLeast)", "-in", temp.file("short.pem")])
        #expect(stillValid.status == 0, "--valid \(duration) ends before \(atLeast) s from now")
        let expired = try runTool(openssl, ["x509", "-noout", "-checkend", "\(atMost)", "-in", temp.file("short.pem")])
        #expect(expired.status != 0, "--valid \(duration) lasts beyond \(atMost) s from now")
    }

    @Test("pki issue --valid refuses what is not a duration", arguments: ["1w", "0h", "h", "-5m", "200y"])
    func issueValidRefused(duration: String) throws {
        let temp = try TemporaryDirectory()
        let run = try mtls("pki", "issue", "--ca-dir", temp.path, "--client", "--name", "x", "--valid", duration,
                           "--out", temp.file("x"))
        #expect(run.status == 64 && run.output.contains("--valid"), "\(run.output)")
    }

    @Test("pki issue refuses a missing CA, no role, or no name")
    func issueErrors() throws {
        let temp = try TemporaryDirectory()
        let missing = try mtls("pki", "issue", "--ca-dir", temp.file("nothing"), "--client", "--name", "x", "--out", temp.file("x"))
        #expect(missing.status == 1 && missing.output.contains("ca.pem"), "\(missing.output)")
        #expect(!FileManager.default.fileExists(atPath: temp.file("x.key")))
        #expect(try mtls("pki", "issue", "--ca-dir", temp.path, "--name", "x", "--out", temp.file("x")).status != 0)
        #expect(try mtls("pki", "issue", "--ca-dir", temp.path, "--server", "--out", temp.file("x")).status != 0)
        #expect(try mtls("pki", "init", "--out", temp.file("p"), "--key-type", "dsa-1024").status != 0)
    }

    @Test("pki self-signed: one certificate with both serverAuth and clientAuth, its own trust anchor")
    func selfSigned() throws {
        let temp = try TemporaryDirectory()
        let prefix = temp.file("self/peer")
        let result = try mtls("pki", "self-signed", "--name", "peer.example,127.0.0.1", "--out", prefix, "--key-type", "ed25519")
        try #require(result.status == 0, "\(result.output)")
        #expect(try fileMode("\(prefix).key") == 0o600)
        let usage = try runTool(openssl, ["x509", "-noout", "-ext", "extendedKeyUsage", "-in", "\(prefix).pem"])
        #expect(usage.status == 0)
        #expect(usage.output.contains("TLS Web Server Authentication"), "\(usage.output)")
        #expect(usage.output.contains("TLS Web Client Authentication"), "\(usage.output)")
        let subject = try runTool(openssl, ["x509", "-noout", "-subject", "-issuer", "-ext", "subjectAltName", "-in", "\(prefix).pem"])
        #expect(subject.output.contains("subject=O = swift-mtls, CN = peer.example"), "\(subject.output)")
        #expect(subject.output.contains("issuer=O = swift-mtls, CN = peer.example"), "\(subject.output)")
        #expect(subject.output.contains("IP Address:127.0.0.1"), "\(subject.output)")
        for purpose in ["sslserver", "sslclient"] {
            let verified = try opensslVerify(ca: "\(prefix).pem", purpose: purpose, "\(prefix).pem")
            #expect(verified.status == 0, "\(purpose): \(verified.output)")
        }
    }

    @Test("pki pkcs12 writes a bundle openssl opens with the password and not without", arguments: ["ecdsa-p256", "rsa-2048", "ed25519"])
    func pkcs12(keyType: String) throws {
        let temp = try TemporaryDirectory()
        let dir = temp.file("pki")
        try #require(try mtls("pki", "init", "--out", dir, "--intermediate", "--key-type", keyType).status == 0)
        let bundle = temp.file("bundles/client.p12")
        let result = try mtls("pki", "pkcs12", "--cert", "\(dir)/client.pem", "--key", "\(dir)/client.key",
                              "--out", bundle, "--password", "P4ss word")
        try #require(result.status == 0, "\(result.output)")
        #expect(try fileMode(bundle) == 0o600)

        let info = try runTool(openssl, ["pkcs12", "-info", "-noout", "-in", bundle, "-passin", "pass:P4ss word"])
        #expect(info.status == 0, "\(info.output)")
        #expect(info.output.contains("AES-256-CBC") && info.output.contains("PBKDF2"), "\(info.output)")
        let wrong = try runTool(openssl, ["pkcs12", "-info", "-noout", "-in", bundle, "-passin", "pass:wrong"])
        #expect(wrong.status != 0, "the wrong password opened the bundle: \(wrong.output)")

        // The bundle holds the key, the leaf and the intermediate, named after the file.
        let dump = try runTool(openssl, ["pkcs12", "-in", bundle, "-passin", "pass:P4ss word", "-nodes"])
        #expect(dump.output.components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1 == 2, "\(dump.output)")
        #expect(dump.output.contains("-----BEGIN PRIVATE KEY-----"))
        #expect(dump.output.contains("friendlyName: client"), "\(dump.output)")
        #expect(dump.output.contains("subject=O = swift-mtls, CN = client"), "\(dump.output)")

        // GnuTLS reads it too, when its tools are installed.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/certtool") {
            let gnutls = try runTool("/usr/bin/certtool", ["--p12-info", "--inder", "--password", "P4ss word", "--infile", bundle])
            #expect(gnutls.status == 0, "\(gnutls.output)")
            let gnutlsWrong = try runTool("/usr/bin/certtool", ["--p12-info", "--inder", "--password", "nope", "--infile", bundle])
            #expect(gnutlsWrong.status != 0)
        }
    }

    @Test("pki pkcs12 refuses a key that does not match, a missing file, and an existing bundle")
    func pkcs12Errors() throws {
        let temp = try TemporaryDirectory()
        let dir = temp.file("pki")
        try #require(try mtls("pki", "init", "--out", dir).status == 0)
        let mismatch = try mtls("pki", "pkcs12", "--cert", "\(dir)/server.pem", "--key", "\(dir)/client.key",
                                "--out", temp.file("bad.p12"), "--password", "x")
        #expect(mismatch.status == 1 && mismatch.output.contains("does not match"), "\(mismatch.output)")
        #expect(!FileManager.default.fileExists(atPath: temp.file("bad.p12")))

        let missing = try mtls("pki", "pkcs12", "--cert", "\(dir)/nothing.pem", "--key", "\(dir)/client.key",
                               "--out", temp.file("bad.p12"), "--password", "x")
        #expect(missing.status == 1 && missing.output.contains("nothing.pem"), "\(missing.output)")

        try temp.write("existing.p12", "keep me")
        let existing = try mtls("pki", "pkcs12", "--cert", "\(dir)/server.pem", "--key", "\(dir)/server.key",
                                "--out", temp.file("existing.p12"), "--password", "x")
        #expect(existing.status == 1 && existing.output.contains("--force"), "\(existing.output)")
        #expect(contents(temp.file("existing.p12")) == Data("keep me".utf8))
    }
}
