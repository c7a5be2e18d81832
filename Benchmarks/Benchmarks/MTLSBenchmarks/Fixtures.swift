import Foundation
import PKI
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TLSBackends
import TLSContract

/// Certificates for the benchmarks: one root CA per key type, and a server and a client leaf it
/// signed, all with keys of that type. Generated on first use (an RSA key takes a moment), never
/// inside a measured block.
struct BenchPKI: Sendable {
    static let serverName = "localhost"
    static let clientName = "client.swift-mtls.bench"

    let keyType: KeyType
    let trustRoots: [TLSConfiguration.Source]
    let serverIdentity: TLSConfiguration.Identity
    let clientIdentity: TLSConfiguration.Identity

    /// The key types every handshake benchmark runs with.
    static let keyTypes: [KeyType] = [.ecdsaP256, .rsa2048, .ed25519]

    static func shared(_ keyType: KeyType) -> BenchPKI {
        switch keyType {
        case .ecdsaP256: return p256
        case .rsa2048: return rsa2048
        case .rsa3072: return rsa3072
        case .ed25519: return ed25519
        }
    }

    // Swift's lazy `static let` generates each set once, on first use, thread-safely.
    private static let p256 = generate(.ecdsaP256)
    private static let rsa2048 = generate(.rsa2048)
    private static let rsa3072 = generate(.rsa3072)
    private static let ed25519 = generate(.ed25519)

    private static func generate(_ keyType: KeyType) -> BenchPKI {
        do {
            let root = try CertificateAuthority.makeRoot(commonName: "swift-mtls Benchmark Root", keyType: keyType)
            let server = try root.issue(.server(names: [serverName], keyType: keyType))
            let client = try root.issue(.client(name: clientName, keyType: keyType))
            func identity(_ certificate: IssuedCertificate, _ name: String) -> TLSConfiguration.Identity {
                .pem(certificateChain: .pem(certificate.chainPEM, label: "\(name)-\(keyType).pem"),
                     privateKey: .pem(certificate.privateKeyPEM, label: "\(name)-\(keyType).key"))
            }
            return BenchPKI(
                keyType: keyType,
                trustRoots: [.pem(root.certificatePEM, label: "bench-root-\(keyType).pem")],
                serverIdentity: identity(server, "server"),
                clientIdentity: identity(client, "client"))
        } catch {
            fatalError("cannot generate the \(keyType) benchmark PKI: \(error)")
        }
    }
}

/// A client context and a server context, built once per benchmark in its setup and shared by
/// every session the benchmark makes.
struct ContextPair: Sendable {
    let client: any TLSContext
    let server: any TLSContext
    let label: String

    /// mTLS: the server requires a client certificate from the benchmark root; the client verifies
    /// the server against the same root and `BenchPKI.serverName`.
    ///
    /// `clientTickets` false makes the client neither store nor offer tickets, so that every
    /// handshake is a full one even once the client context caches tickets. The server keeps its
    /// defaults (it issues tickets if the client asks, as a deployed server does).
    init(
        client clientBackend: any TLSBackend, server serverBackend: any TLSBackend,
        keyType: KeyType, version: TLSVersion, clientTickets: Bool
    ) throws(TLSError) {
        let pki = BenchPKI.shared(keyType)
        var server = TLSConfiguration.mtlsServer(identity: pki.serverIdentity, trustRoots: pki.trustRoots)
        server.minimumVersion = version
        server.maximumVersion = version
        var client = TLSConfiguration.mtlsClient(
            identity: pki.clientIdentity, trustRoots: pki.trustRoots, serverName: BenchPKI.serverName)
        client.minimumVersion = version
        client.maximumVersion = version
        client.sessionTicketsEnabled = clientTickets
        self.client = try clientBackend.makeContext(client)
        self.server = try serverBackend.makeContext(server)
        self.label = "\(clientBackend.name)->\(serverBackend.name) \(version) \(keyType)"
    }

    /// A new client session and a new server session, pumped in memory until both are quiet.
    /// Stops the process if the handshake fails: a benchmark of failures measures nothing.
    @inline(__always)
    func handshake() -> InMemoryPair {
        let pair: InMemoryPair
        do {
            pair = InMemoryPair(client: try client.makeSession(), server: try server.makeSession())
        } catch {
            fatalError("\(label): cannot make a session: \(error)")
        }
        guard pair.handshake() else {
            fatalError("\(label): handshake failed: client \(String(describing: pair.clientEvents.failure)), "
                + "server \(String(describing: pair.serverEvents.failure))")
        }
        return pair
    }
}

/// Moves application data one way through an established pair with reused buffers: the sender
/// encrypts 64 KiB at a time, its ciphertext goes to the receiver, and the receiver decrypts and
/// drains it. Nothing but the TLS sessions themselves allocates in steady state.
final class RecordPump {
    static let chunkSize = 64 * 1024
    static let bytesPerIteration = 1 << 20

    let pair: InMemoryPair
    let label: String
    private let chunk: [UInt8]
    private var ciphertext: [UInt8] = []
    private var plaintext: [UInt8] = []

    init(pair: InMemoryPair, label: String) {
        self.pair = pair
        self.label = label
        self.chunk = (0..<RecordPump.chunkSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        ciphertext.reserveCapacity(RecordPump.chunkSize * 2)
        plaintext.reserveCapacity(RecordPump.chunkSize * 2)
    }

    /// Encrypts `bytesPerIteration` on the client and decrypts it on the server. Returns the number
    /// of plaintext bytes the server delivered (always `bytesPerIteration`, or the process stops).
    @inline(__always)
    func transferOneMiB() -> Int {
        let sender = pair.client
        let receiver = pair.server
        var delivered = 0
        for _ in 0..<(RecordPump.bytesPerIteration / RecordPump.chunkSize) {
            do {
                try chunk.withUnsafeBytes { try sender.writePlaintext($0) }
            } catch {
                fatalError("\(label): writePlaintext failed: \(error)")
            }
            ciphertext.removeAll(keepingCapacity: true)
            sender.takeCiphertext(into: &ciphertext)
            ciphertext.withUnsafeBytes { receiver.receiveCiphertext($0) }
            delivered += drain(receiver)
        }
        guard delivered == RecordPump.bytesPerIteration else {
            fatalError("\(label): delivered \(delivered) bytes instead of \(RecordPump.bytesPerIteration)")
        }
        // Whatever the receiver wants to say back (nothing, normally) goes back to the sender.
        if receiver.pendingCiphertextCount > 0 {
            ciphertext.removeAll(keepingCapacity: true)
            receiver.takeCiphertext(into: &ciphertext)
            ciphertext.withUnsafeBytes { sender.receiveCiphertext($0) }
            _ = drain(sender)
        }
        return delivered
    }

    /// Calls `process()` until the session needs input, taking every decrypted byte.
    @inline(__always)
    private func drain(_ session: any TLSSession) -> Int {
        var taken = 0
        while true {
            switch session.process() {
            case .needsInput:
                return taken
            case .plaintextReady:
                plaintext.removeAll(keepingCapacity: true)
                session.takePlaintext(into: &plaintext, maxBytes: .max)
                taken += plaintext.count
            case .handshakeComplete:
                continue
            case .peerClosed:
                fatalError("\(label): the peer closed during the transfer")
            case .failed(let error):
                fatalError("\(label): the transfer failed: \(error)")
            }
        }
    }
}

/// Writes a line to standard error (the benchmark tool talks to this process over other pipes).
func warn(_ message: String) {
    FileHandle.standardError.write(Data("warning: \(message)\n".utf8))
}

/// CPU time consumed by the calling thread so far, in nanoseconds. Unlike the `cpuTotal` metric,
/// which comes from the process's tick counters (10 ms steps on Linux) and so reads 0 or 10 ms for a
/// 1 ms handshake, this has nanosecond resolution. Both sides of the in-memory connection run on
/// this one thread, so it is the CPU the handshake costs the client and the server together.
@inline(__always)
func threadCPUNanoseconds() -> Int {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Int(now.tv_sec) * 1_000_000_000 + Int(now.tv_nsec)
}
