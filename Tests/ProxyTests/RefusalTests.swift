import Foundation
import Loop
import PKI
import Proxy
import TLSContract
import Testing
import TestSupport

extension ProxySuite {
    @Suite("Refused clients never reach the target")
    struct RefusalTests {
        /// A TLS client straight to the proxy server: it sends a request as soon as it believes the
        /// handshake is done (a TLS 1.3 client believes so before the server has checked its
        /// certificate) and records what it gets back.
        final class Probe: ConnectionHandler, @unchecked Sendable {
            let done = DispatchSemaphore(value: 0)
            let received = Shared(0)
            let request = Array("GET / HTTP/1.1\r\nHost: target\r\n\r\n".utf8)

            func connectionDidEstablish(_ connection: Connection) {
                try? connection.write(request)
            }
            func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
                received.with { $0 += bytes.count }
                // The echo of the request: we were admitted.
                if received.current >= request.count { connection.close() }
            }
            func connectionDidClose(_ connection: Connection, error: ConnectionError?) { done.signal() }
        }

        /// Connects a probe with `identity` (nil: no certificate) to the chain's proxy server.
        func connectProbe(_ chain: ProxyChain, backend: any TLSBackend, identity: TLSConfiguration.Identity?) throws -> Probe {
            let pki = TestPKI.shared(.ecdsaP256)
            var configuration = TLSConfiguration.tlsClient(trustRoots: pki.trustRoots, serverName: "localhost")
            configuration.identity = identity
            let context = try backend.makeContext(configuration)
            let probe = Probe()
            TCPClient.connect(on: chain.group.next(), to: HostAndPort(host: "127.0.0.1", port: chain.serverPort), tls: context,
                              options: ConnectionOptions()) { probe }
            return probe
        }

        @Test("No certificate, an untrusted or expired one, or a name not allowed: no target connection",
              arguments: BackendPair.all)
        func refusedClients(backends: BackendPair) throws {
            let pki = TestPKI.shared(.ecdsaP256)
            let allowed = TestPKI.clientName
            let chain = try ProxyChain(backends, authorize: { $0?.dnsNames.contains(allowed) ?? false })
            defer { chain.shutdown() }
            let otherClient = try pki.root.issue(.client(name: "not-on-the-list.swift-mtls.test", keyType: .ecdsaP256))
            let refused: [(String, TLSConfiguration.Identity?)] = [
                ("no certificate", nil),
                ("a certificate from another CA", pki.identity(pki.rogueClient)),
                ("an expired certificate", pki.identity(pki.expiredClient)),
                ("a self-signed certificate", pki.identity(pki.selfSignedClient)),
                ("a valid certificate for a name not allowed", pki.identity(otherClient)),
            ]
            for (what, identity) in refused {
                let probe = try connectProbe(chain, backend: backends.client, identity: identity)
                try #require(waitFor(probe.done, "the refusal of \(what)"))
                // A TLS refusal ends with an alert (an error here); a client refused by the allow
                // list gets close_notify, so its close may look clean. Either way: not one byte.
                #expect(probe.received.current == 0, "\(what)")
            }
            #expect(chain.target.accepted.current == 0)
            #expect(chain.proxyServer.pairs.snapshot.targetConnectionsAttempted == 0)

            // The same proxy admits the allowed client, and that one does reach the target.
            let admitted = try connectProbe(chain, backend: backends.client, identity: pki.identity(pki.client))
            try #require(waitFor(admitted.done, "the allowed client's echo"))
            #expect(admitted.received.current == admitted.request.count)
            #expect(chain.target.accepted.current == 1)
        }
    }
}
