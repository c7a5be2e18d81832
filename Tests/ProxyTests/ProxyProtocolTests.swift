import Foundation
import Loop
import Proxy
import TLSContract
import Testing
import TestSupport

extension ProxySuite {
    /// `--proxy-protocol v2`: the proxy server tells the target who the client is, before any byte
    /// of the client's. Parsed here from the spec (haproxy's proxy-protocol.txt, 2.2), and by nginx.
    @Suite("PROXY protocol v2 towards the target")
    struct ProxyProtocolTests {
        @Test("The target reads a v2 header with the client's addresses and verified identity, then the client's bytes",
              arguments: BackendPair.all)
        func headerThenPayload(backends: BackendPair) throws {
            let chain = try ProxyChain(backends, proxyProtocol: .v2)
            defer { chain.shutdown() }
            let message = Array("who am I?".utf8)
            let client = StreamClient(payload: message, ending: .halfCloseAfterSending)
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the echo through the chain"))
            let received = client.outcome.current.received
            let header = try #require(ParsedProxyHeader(received), "no valid PROXY v2 header in \(received.prefix(64))")
            #expect(Array(received[header.length...]) == message, "the client's bytes must follow the header intact")

            #expect(header.sourceAddress == "127.0.0.1")
            #expect(header.destinationAddress == "127.0.0.1")
            #expect(header.destinationPort == chain.serverPort, "the destination is the address the client reached")
            #expect(header.sourcePort != 0 && header.sourcePort != chain.serverPort)

            let ssl = try #require(header.ssl, "no PP2_TYPE_SSL TLV")
            #expect(ssl.client == 0x03, "SSL and a certificate on this connection")
            #expect(ssl.verify == 0, "verify 0: the proxy connects only for verified clients")
            #expect(ssl.version == "TLSv1.3")
            #expect(ssl.commonName == TestPKI.clientName)
            #expect(ssl.cipher?.hasPrefix("TLS_") == true)
            #expect(header.tlvs(0xE0) == [TestPKI.clientURI], "URI SANs")
            #expect(header.tlvs(0xE1) == [TestPKI.clientName], "DNS SANs")
            let pki = TestPKI.shared(.ecdsaP256)
            let clientIdentity = try PeerIdentity(certificateChainDER: [pki.client.certificateDER])
            #expect(header.rawTLVs(0xE2) == [clientIdentity.spkiSHA256], "the SPKI SHA-256 --allow-spki matches")
        }

        @Test("Without the option the target sees only the client's bytes")
        func offByDefault() throws {
            let chain = try ProxyChain(.single)
            defer { chain.shutdown() }
            let message = Array("plain".utf8)
            let client = StreamClient(payload: message, ending: .halfCloseAfterSending)
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "the echo through the chain"))
            #expect(client.outcome.current.received == message)
        }

        @Test("nginx, listening with proxy_protocol, reads the client's and the proxy's addresses from our header",
              .enabled(if: Nginx.executable != nil, "nginx is not installed (scripts/install-deps installs it)"))
        func nginxReadsTheHeader() throws {
            let scratch = try TemporaryDirectory(prefix: "mtls-proxy-nginx")
            let nginx = try NginxProxyProtocolTarget(scratch: scratch)
            defer { nginx.stop() }
            let chain = try ProxyChain(.single, targetPort: nginx.port, proxyProtocol: .v2)
            defer { chain.shutdown() }
            let request = Array("GET / HTTP/1.0\r\nHost: target\r\n\r\n".utf8)
            let client = StreamClient(payload: request, ending: .halfCloseAfterSending)
            client.start(group: chain.group, port: chain.clientPort)
            try #require(waitFor(client.done, "nginx's answer through the chain"))
            let answer = String(decoding: client.outcome.current.received, as: UTF8.self)
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)\(nginx.errorLog)")
            #expect(answer.contains("server=127.0.0.1:\(chain.serverPort)"), "\(answer)")
            let reported = try #require(answer.firstMatch(of: /client=127\.0\.0\.1:(\d+)/), "\(answer)")
            #expect(Int(reported.1) != chain.serverPort)
        }
    }
}

/// A PROXY v2 header parsed strictly from the spec, independently of `ProxyProtocolHeader`.
struct ParsedProxyHeader {
    struct SSL {
        var client: UInt8
        var verify: UInt32
        var version: String?
        var commonName: String?
        var cipher: String?
    }

    let length: Int
    let sourceAddress: String
    let destinationAddress: String
    let sourcePort: Int
    let destinationPort: Int
    private(set) var entries: [(type: UInt8, value: [UInt8])] = []
    private(set) var ssl: SSL?

    init?(_ bytes: [UInt8]) {
        let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
        guard bytes.count >= 16, Array(bytes[0..<12]) == signature, bytes[12] == 0x21, bytes[13] == 0x11 else { return nil }
        let bodyLength = Int(bytes[14]) << 8 | Int(bytes[15])
        guard bytes.count >= 16 + bodyLength, bodyLength >= 12 else { return nil }
        length = 16 + bodyLength
        func ipv4(_ at: Int) -> String { bytes[at..<at + 4].map(String.init).joined(separator: ".") }
        sourceAddress = ipv4(16)
        destinationAddress = ipv4(20)
        sourcePort = Int(bytes[24]) << 8 | Int(bytes[25])
        destinationPort = Int(bytes[26]) << 8 | Int(bytes[27])
        guard let entries = Self.tlvs(Array(bytes[28..<length])) else { return nil }
        self.entries = entries
        if let value = entries.first(where: { $0.type == 0x20 })?.value {
            guard value.count >= 5, let sub = Self.tlvs(Array(value[5...])) else { return nil }
            func text(_ type: UInt8) -> String? { sub.first { $0.type == type }.map { String(decoding: $0.value, as: UTF8.self) } }
            ssl = SSL(client: value[0], verify: value[1...4].reduce(0) { $0 << 8 | UInt32($1) },
                      version: text(0x21), commonName: text(0x22), cipher: text(0x23))
        }
    }

    func rawTLVs(_ type: UInt8) -> [[UInt8]] { entries.filter { $0.type == type }.map(\.value) }
    func tlvs(_ type: UInt8) -> [String] { rawTLVs(type).map { String(decoding: $0, as: UTF8.self) } }

    /// Type, 16-bit length, value, repeated to the very end: anything left over is malformed.
    private static func tlvs(_ bytes: [UInt8]) -> [(type: UInt8, value: [UInt8])]? {
        var result: [(type: UInt8, value: [UInt8])] = []
        var at = 0
        while at < bytes.count {
            guard at + 3 <= bytes.count else { return nil }
            let count = Int(bytes[at + 1]) << 8 | Int(bytes[at + 2])
            guard at + 3 + count <= bytes.count else { return nil }
            result.append((bytes[at], Array(bytes[at + 3..<at + 3 + count])))
            at += 3 + count
        }
        return result
    }
}

/// nginx as a plain HTTP target that requires a PROXY protocol header and answers with what it read.
final class NginxProxyProtocolTarget {
    let port: Int
    private let process: ChildProcess
    private let scratch: TemporaryDirectory

    init(scratch: TemporaryDirectory) throws {
        self.scratch = scratch
        guard let executable = Nginx.executable else { throw ProxyTestFailure("nginx is not installed") }
        // nginx cannot pick its own port: take one the kernel hands out and free it just before nginx binds it.
        port = try ClosedPort().port
        let config = try Nginx.writeConfiguration(scratch: scratch, server: """
                server {
                    listen 127.0.0.1:\(port) proxy_protocol;
                    location / {
                        default_type text/plain;
                        return 200 "client=$proxy_protocol_addr:$proxy_protocol_port server=$proxy_protocol_server_addr:$proxy_protocol_server_port\\n";
                    }
                }
            """)
        process = try ChildProcess(executable, Nginx.arguments(configuration: config, scratch: scratch))
        guard waitUntilAccepting(port: port) else {
            process.terminate()
            throw ProxyTestFailure("nginx did not start\(errorLog)")
        }
    }

    var errorLog: String { Nginx.errorLog(scratch) }

    func stop() { process.terminate() }
}
