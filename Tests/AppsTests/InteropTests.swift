import Foundation
import Testing
import TestSupport

/// Our servers and clients against each other and against independent TLS implementations.
@Suite("Interop", .serialized)
struct InteropTests {
    static let backends = ["openssl", "gnutls"]

    private func helloServer(_ backend: String, _ pki: PKIFixture, extra: [String] = []) throws -> ServerProcess {
        try ServerProcess(try mtlsExecutable(), ["hello-server", "--backend", backend, "--pki", pki.path,
                                             "--listen", "127.0.0.1:0", "--loops", "1"] + extra)
    }

    // Outside clients and servers reaching ours, in both roles, every version and key type: see
    // OutsidePeerMatrixTests. What stays here is what the matrix does not cover.

    @Test("Without a certificate, or with one from another CA, every client is refused at the TLS layer",
          arguments: backends)
    func externalClientsRefused(backend: String) throws {
        let pki = try PKIFixture()
        let stranger = try PKIFixture()
        let server = try helloServer(backend, pki)
        defer { server.stop() }
        let port = server.port
        for (label, certificate, key) in [("no certificate", nil, nil) as (String, String?, String?),
                                          ("another CA", stranger.file("client.pem"), stranger.file("client.key"))] {
            var curlArguments = ["-sS", "--cacert", pki.file("ca.pem"), "--resolve", "localhost:\(port):127.0.0.1",
                                 "https://localhost:\(port)/hello"]
            if let certificate, let key { curlArguments += ["--cert", certificate, "--key", key] }
            let curl = try runTool("/usr/bin/curl", curlArguments)
            #expect(curl.status != 0 && !curl.output.contains("hello"), "curl, \(label): \(curl.output)")

            var sClientArguments = ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", pki.file("ca.pem"), "-quiet"]
            if let certificate, let key { sClientArguments += ["-cert", certificate, "-key", key] }
            let sClient = try runTool("/usr/bin/openssl", sClientArguments, input: helloRequest)
            #expect(!sClient.output.contains("hello"), "s_client, \(label): \(sClient.output)")
            #expect(sClient.output.contains("alert") || sClient.output.contains("error"), "s_client, \(label): \(sClient.output)")

            var gnutlsArguments = ["--x509cafile", pki.file("ca.pem"), "-p", "\(port)", "127.0.0.1"]
            if let certificate, let key { gnutlsArguments += ["--x509certfile", certificate, "--x509keyfile", key] }
            let gnutlsCLI = try runTool("/usr/bin/gnutls-cli", gnutlsArguments, input: helloRequest)
            #expect(!gnutlsCLI.output.contains("hello"), "gnutls-cli, \(label): \(gnutlsCLI.output)")

            let python = try runTool("/usr/bin/env", ["python3", "-c", PythonClient.script, pki.file("ca.pem"),
                                                      certificate ?? "", key ?? "", "\(port)"])
            #expect(python.status != 0 && !python.output.contains("hello"), "python, \(label): \(python.output)")
        }
    }

    @Test("Echo: our client and server on every backend pair, and socat's OpenSSL echo, 16 MiB byte-exact")
    func echo() throws {
        let pki = try PKIFixture()
        for serverBackend in Self.backends {
            let server = try ServerProcess(try mtlsExecutable(), ["echo-server", "--backend", serverBackend, "--pki", pki.path,
                                                              "--listen", "127.0.0.1:0", "--loops", "1"])
            defer { server.stop() }
            for clientBackend in Self.backends {
                let run = try runTool(try mtlsExecutable(), ["echo-client", "--backend", clientBackend, "--pki", pki.path,
                                                         "--connect", "127.0.0.1:\(server.port)", "--server-name", "localhost",
                                                         "--bytes", "\(16 << 20)"])
                #expect(run.status == 0 && run.output.contains("intact"), "\(clientBackend) → \(serverBackend): \(run.output)")
            }
        }
        let socatPort = freePort()
        let socat = try ServerProcess("/usr/bin/socat", [
            "OPENSSL-LISTEN:\(socatPort),reuseaddr,fork,cert=\(pki.file("server.pem")),key=\(pki.file("server.key")),cafile=\(pki.file("ca.pem")),verify=1",
            "EXEC:cat"], port: socatPort)
        defer { socat.stop() }
        for clientBackend in Self.backends {
            let run = try runTool(try mtlsExecutable(), ["echo-client", "--backend", clientBackend, "--pki", pki.path,
                                                     "--connect", "127.0.0.1:\(socatPort)", "--server-name", "localhost",
                                                     "--bytes", "\(1 << 20)"])
            #expect(run.status == 0 && run.output.contains("intact"), "\(clientBackend) → socat: \(run.output)")
        }
    }

    @Test("Every pki init key type works for all four hello pairs, and openssl verify accepts its leaves",
          arguments: ["ecdsa-p256", "rsa-2048", "ed25519"], [false, true])
    func keyTypes(keyType: String, intermediate: Bool) throws {
        let pki = try PKIFixture(keyType: keyType, intermediate: intermediate)
        for leaf in ["server.pem", "client.pem"] {
            var arguments = ["verify", "-CAfile", pki.file("ca.pem")]
            if intermediate { arguments += ["-untrusted", pki.file("intermediate.pem")] }
            let verify = try runTool("/usr/bin/openssl", arguments + [pki.file(leaf)])
            #expect(verify.status == 0 && verify.output.contains("OK"), "\(leaf): \(verify.output)")
        }
        for serverBackend in Self.backends {
            let server = try helloServer(serverBackend, pki)
            defer { server.stop() }
            for clientBackend in Self.backends {
                let run = try runTool(try mtlsExecutable(), ["hello-client", "--backend", clientBackend, "--pki", pki.path,
                                                         "--url", "https://127.0.0.1:\(server.port)/hello"])
                #expect(run.status == 0 && run.output.contains("hello, client"), "\(clientBackend) → \(serverBackend): \(run.output)")
            }
        }
    }

    @Test("mtls demo exits 0 and names all four pairs")
    func demo() throws {
        let run = try runTool(try mtlsExecutable(), ["demo"])
        #expect(run.status == 0, "\(run.output)")
        for pair in ["openssl → openssl", "openssl → gnutls", "gnutls → openssl", "gnutls → gnutls"] {
            #expect(run.output.contains(pair), "\(pair) missing")
        }
    }

    @Test("--allow-cn refuses other clients before any HTTP byte", arguments: backends)
    func allowList(backend: String) throws {
        let pki = try PKIFixture()
        let server = try helloServer(backend, pki, extra: ["--allow-cn", "someone-else"])
        defer { server.stop() }
        let curl = try runTool("/usr/bin/curl", ["-sS", "--cacert", pki.file("ca.pem"), "--cert", pki.file("client.pem"),
                                                 "--key", pki.file("client.key"), "--resolve", "localhost:\(server.port):127.0.0.1",
                                                 "https://localhost:\(server.port)/hello"])
        #expect(curl.status != 0 && !curl.output.contains("hello"), "\(curl.output)")
    }

    @Test("Out of descriptors, the server survives and serves again once they free up")
    func descriptorExhaustion() throws {
        let server = try ServerProcess("ulimit -n 48; exec", [try mtlsExecutable(), "echo-server", "--mode", "plain",
                                                              "--listen", "127.0.0.1:0", "--loops", "1"], shell: true)
        defer { server.stop() }
        var hogs: [Int32] = []
        for _ in 0..<80 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(server.port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            hogs.append(fd)
        }
        usleep(300_000)
        #expect(server.isRunning, "the server died when it ran out of descriptors: \(server.log)")
        hogs.forEach { close($0) }
        var served = false
        for _ in 0..<50 where !served {
            let run = try runTool(try mtlsExecutable(), ["echo-client", "--plain", "--connect", "127.0.0.1:\(server.port)",
                                                     "--bytes", "1000"])
            served = run.status == 0
            if !served { usleep(100_000) }
        }
        #expect(served, "the server did not serve again: \(server.log)")
        #expect(server.isRunning)
    }
}

enum PythonClient {
    /// argv: ca, cert (may be empty), key (may be empty), port. Prints the response; exits 1 on a TLS error.
    static let script = """
    import socket, ssl, sys
    ca, cert, key, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /hello HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
                data = b""
                while True:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        if not data:
            print("no response")
            sys.exit(1)
        print(data.decode())
    except (ssl.SSLError, OSError) as error:
        print("refused:", error)
        sys.exit(1)
    """
}
