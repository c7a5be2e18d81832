// The same per-handshake cryptography as Benchmarks/library-floor/floor.c (one ECDSA P-256 signature,
// one verification, one X25519 key pair and shared secret), done by swift-crypto, which on Linux is
// BoringSSL's code: the library SwiftNIO's NIOSSL handshakes with. Same key file, same 130-byte message.
// Usage: crypto-floor KEY.pem [ROUNDS] [ITERATIONS]; prints the median and range per operation, in µs.
import Crypto
import Foundation

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: crypto-floor KEY.pem [ROUNDS] [ITERATIONS]\n".utf8))
    exit(64)
}
let rounds = arguments.count > 2 ? Int(arguments[2]) ?? 7 : 7
let iterations = arguments.count > 3 ? Int(arguments[3]) ?? 500 : 500
let key = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOfFile: arguments[1], encoding: .utf8))
let message = Data(repeating: 0x20, count: 130)
let signature = try key.signature(for: message)
let peer = Curve25519.KeyAgreement.PrivateKey().publicKey

let names = ["swift-crypto (BoringSSL) ECDSA P-256 sign", "swift-crypto (BoringSSL) ECDSA P-256 verify",
             "swift-crypto (BoringSSL) X25519 key pair + shared secret"]
var samples = Array(repeating: [Double](), count: names.count)
for _ in 0..<rounds {
    for operation in names.indices {
        let start = ContinuousClock.now
        for _ in 0..<iterations {
            switch operation {
            case 0:
                _ = try key.signature(for: message)
            case 1:
                guard key.publicKey.isValidSignature(signature, for: message) else { fatalError("verification failed") }
            default:
                _ = try Curve25519.KeyAgreement.PrivateKey().sharedSecretFromKeyAgreement(with: peer)
            }
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        samples[operation].append(seconds / Double(iterations) * 1e6)
    }
}
for (name, values) in zip(names, samples) {
    let sorted = values.sorted()
    let line = name.padding(toLength: 58, withPad: " ", startingAt: 0)
    print(line + String(format: "%7.1f µs (%.1f-%.1f)", sorted[sorted.count / 2], sorted.first!, sorted.last!))
}
