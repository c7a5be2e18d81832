import Foundation
import Loop
import Proxy
import Testing
import TestSupport

extension ProxySuite {
    /// `--target unix:PATH`: a proxy server in front of a service that listens on a UNIX-domain socket.
    /// The service here is socat (`UNIX-LISTEN` … `EXEC:cat`, an echo), an implementation not ours.
    @Suite("UNIX-domain socket targets")
    struct UnixTargetTests {
        @Test("1 MiB byte-exact through the chain to a UNIX-socket echo, the client's half-close carried to it")
        func echoThroughUnixSocket() throws {
            let echo = try UnixSocketEcho()
            defer { echo.stop() }
            let chain = try ProxyChain(.single, targetEndpoint: .unix(path: echo.path))
            defer { chain.shutdown() }
            let data = payload(1 << 20, seed: 41)
            // cat answers everything only once it sees the end of its input: the half-close must reach it.
            let client = StreamClient(payload: data, ending: .halfCloseAfterSending)
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the echo through the UNIX socket"))
            expectSameBytes(client.outcome.current.received, data)
            #expect(client.outcome.current.sawPeerEnd)
            #expect(chain.waitUntilIdle())
        }

        @Test("A UNIX socket nobody listens on closes the client, like a refused TCP target")
        func missingSocket() throws {
            let scratch = try TemporaryDirectory(prefix: "mtls-unix")
            let chain = try ProxyChain(.single, targetEndpoint: .unix(path: scratch.path + "/nobody.sock"))
            defer { chain.shutdown() }
            let client = StreamClient(payload: Array("anyone?".utf8))
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the client's close"))
            #expect(client.outcome.current.received.isEmpty)
            #expect(chain.waitUntilIdle())
            #expect(chain.proxyServer.pairs.snapshot.targetConnectionsAttempted == 1)
        }

        @Test("mtls proxy server --target unix:PATH serves socat's own mTLS client, on both backends",
              arguments: ["openssl", "gnutls"])
        func commandLine(backend: String) throws {
            let echo = try UnixSocketEcho()
            defer { echo.stop() }
            let mtls = try builtExecutable("mtls")
            let pki = try CommandLineTests.PKIFiles()
            let server = try CommandLineTests().startListening(
                mtls, ["proxy", "server", "--pki", pki.path, "--backend", backend, "--listen", "127.0.0.1:0",
                       "--target", "unix:" + echo.path, "--loops", "1"])
            defer { server.process.terminate() }
            let marker = "through-a-unix-socket-\(UUID().uuidString)"
            let socat = try ChildProcess("/usr/bin/socat", [
                "-t", "5", "-",
                "OPENSSL:localhost:\(server.port),cert=\(pki.file("client.pem")),key=\(pki.file("client.key")),cafile=\(pki.file("ca.pem"))",
            ], input: marker)
            #expect(socat.wait(seconds: 30) == 0, "\(socat.output)\n--- proxy server:\n\(server.process.output)")
            #expect(socat.output == marker, "\(socat.output)")
        }

        @Test("unix: targets that cannot work are usage errors")
        func usageErrors() throws {
            let mtls = try builtExecutable("mtls")
            let pki = try CommandLineTests.PKIFiles()
            let noName = try ChildProcess(mtls, ["proxy", "client", "--pki", pki.path, "--listen", "127.0.0.1:0",
                                                 "--target", "unix:/run/service.sock"])
            #expect(noName.wait() == 64)
            #expect(noName.output.contains("give --server-name"), "\(noName.output)")
            let tooLong = try ChildProcess(mtls, ["proxy", "server", "--pki", pki.path, "--listen", "127.0.0.1:0",
                                                  "--target", "unix:/" + String(repeating: "x", count: 120)])
            #expect(tooLong.wait() == 64)
            #expect(tooLong.output.contains("a path of 1 to 107 bytes"), "\(tooLong.output)")
        }
    }
}

/// socat listening on a UNIX-domain socket in a scratch folder, echoing each connection through cat.
final class UnixSocketEcho {
    let path: String
    private let scratch: TemporaryDirectory
    private let process: ChildProcess

    init() throws {
        scratch = try TemporaryDirectory(prefix: "mtls-unix-echo")
        path = scratch.path + "/echo.sock"
        process = try ChildProcess("/usr/bin/socat", ["UNIX-LISTEN:\(path),fork", "EXEC:cat"])
        guard eventually(seconds: 10, { FileManager.default.fileExists(atPath: path) }) else {
            process.terminate()
            throw ProxyTestFailure("socat did not create \(path): \(process.output)")
        }
    }

    func stop() { process.terminate() }
}
