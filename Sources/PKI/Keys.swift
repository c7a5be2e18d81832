import Crypto
import Foundation
import SwiftASN1
import X509
import _CryptoExtras

/// The key algorithms the PKI can generate. Each CA signs with the algorithm matching its own key:
/// ECDSA P-256 with SHA-256, RSA PKCS#1 v1.5 with SHA-256, or Ed25519.
public enum KeyType: String, CaseIterable, Sendable, CustomStringConvertible {
    case ecdsaP256 = "ecdsa-p256"
    case rsa2048 = "rsa-2048"
    case rsa3072 = "rsa-3072"
    case ed25519 = "ed25519"

    public var description: String { rawValue }

    /// Whether the key is an RSA key (leaves then also get keyUsage keyEncipherment).
    public var isRSA: Bool {
        switch self {
        case .rsa2048, .rsa3072: return true
        case .ecdsaP256, .ed25519: return false
        }
    }

    /// The signature algorithm a CA holding a key of this type signs with.
    var signatureAlgorithm: Certificate.SignatureAlgorithm {
        switch self {
        case .ecdsaP256: return .ecdsaWithSHA256
        case .rsa2048, .rsa3072: return .sha256WithRSAEncryption
        case .ed25519: return .ed25519
        }
    }
}

/// What a key is for: the entries of the extended key usage extension of a leaf.
public enum KeyPurpose: Sendable, Hashable, CaseIterable {
    case serverAuth
    case clientAuth
    /// anyExtendedKeyUsage: for test fixtures (verifiers refuse it alone in a TLS leaf).
    case anyExtendedKeyUsage

    var usage: ExtendedKeyUsage.Usage {
        switch self {
        case .serverAuth: return .serverAuth
        case .clientAuth: return .clientAuth
        case .anyExtendedKeyUsage: return .any
        }
    }
}

/// A private key with its type and its PKCS#8 PEM encoding.
struct KeyPair: Sendable {
    let keyType: KeyType
    let privateKey: Certificate.PrivateKey
    /// PKCS#8 ("-----BEGIN PRIVATE KEY-----"), ending with a newline.
    let pkcs8PEM: String

    var publicKey: Certificate.PublicKey { privateKey.publicKey }

    static func generate(_ keyType: KeyType) throws(PKIError) -> KeyPair {
        do {
            switch keyType {
            case .ecdsaP256:
                let key = P256.Signing.PrivateKey()
                return KeyPair(keyType: keyType, privateKey: Certificate.PrivateKey(key),
                               pkcs8PEM: normalizedPEM(key.pemRepresentation))
            case .rsa2048, .rsa3072:
                let key = try _RSA.Signing.PrivateKey(keySize: keyType == .rsa2048 ? .bits2048 : .bits3072)
                return KeyPair(keyType: keyType, privateKey: Certificate.PrivateKey(key),
                               pkcs8PEM: normalizedPEM(key.pkcs8PEMRepresentation))
            case .ed25519:
                let key = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
                // X509 serializes Ed25519 keys as PKCS#8.
                return KeyPair(keyType: keyType, privateKey: key,
                               pkcs8PEM: normalizedPEM(try key.serializeAsPEM().pemString))
            }
        } catch {
            throw .keyGeneration(keyType, "\(error)")
        }
    }

    /// Parses a PEM private key (PKCS#8, SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY") of one
    /// of the supported types; `pkcs8PEM` is always re-encoded as PKCS#8.
    static func parse(pem: String) throws(PKIError) -> KeyPair {
        let key: Certificate.PrivateKey
        do {
            key = try Certificate.PrivateKey(pemEncoded: pem)
        } catch {
            throw .unsupportedKey("cannot parse the private key: \(error)")
        }
        let keyType = try KeyType(of: key.publicKey)
        do {
            switch keyType {
            case .ecdsaP256:
                let typed = try P256.Signing.PrivateKey(pemRepresentation: pem)
                return KeyPair(keyType: keyType, privateKey: key, pkcs8PEM: normalizedPEM(typed.pemRepresentation))
            case .rsa2048, .rsa3072:
                let typed = try _RSA.Signing.PrivateKey(pemRepresentation: pem)
                return KeyPair(keyType: keyType, privateKey: key, pkcs8PEM: normalizedPEM(typed.pkcs8PEMRepresentation))
            case .ed25519:
                return KeyPair(keyType: keyType, privateKey: key,
                               pkcs8PEM: normalizedPEM(try key.serializeAsPEM().pemString))
            }
        } catch {
            throw .unsupportedKey("cannot re-encode the \(keyType) private key as PKCS#8: \(error)")
        }
    }
}

extension KeyType {
    /// The key type of a certificate's public key; throws for algorithms and sizes the PKI does not make.
    init(of publicKey: Certificate.PublicKey) throws(PKIError) {
        if P256.Signing.PublicKey(publicKey) != nil {
            self = .ecdsaP256
        } else if Curve25519.Signing.PublicKey(publicKey) != nil {
            self = .ed25519
        } else if let rsa = _RSA.Signing.PublicKey(publicKey) {
            switch rsa.keySizeInBits {
            case 2048: self = .rsa2048
            case 3072: self = .rsa3072
            default: throw .unsupportedKey("RSA keys of \(rsa.keySizeInBits) bits are not supported (use 2048 or 3072)")
            }
        } else {
            throw .unsupportedKey("\(publicKey) is not one of \(KeyType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }
}

/// PEM text with exactly one trailing newline, so documents can be concatenated.
func normalizedPEM(_ text: String) -> String {
    var trimmed = Substring(text)
    while let last = trimmed.last, last.isNewline || last == " " { trimmed = trimmed.dropLast() }
    return String(trimmed) + "\n"
}

func pemString(_ certificate: Certificate) throws(PKIError) -> String {
    try wrapping("cannot PEM-encode certificate \(certificate.subject)") {
        normalizedPEM(try certificate.serializeAsPEM().pemString)
    }
}

func derBytes(_ certificate: Certificate) throws(PKIError) -> [UInt8] {
    try wrapping("cannot DER-encode certificate \(certificate.subject)") {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }
}
