import Foundation

/// Every error thrown by the PKI module. The description is a complete sentence fit for a CLI.
public enum PKIError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The validity period is empty or reversed.
    case invalidValidity(notValidBefore: Date, notValidAfter: Date)
    /// A string given as an IP address SAN is not an IPv4 or IPv6 literal.
    case invalidIPAddress(String)
    /// A DNS name SAN is empty or not ASCII (IDNs must be given in their punycode form).
    case invalidDNSName(String)
    /// A URI SAN has no scheme or is not ASCII.
    case invalidURI(String)
    /// A parameter outside what the PKI module accepts (the message says which and why).
    case invalidArgument(String)
    /// The issuing CA's basicConstraints path length does not allow another intermediate below it.
    case pathLengthExceeded(issuer: String)
    /// The CA certificate and private key given to `CertificateAuthority.init` do not belong together,
    /// or the certificate is not a CA certificate.
    case invalidCertificateAuthority(String)
    /// A key type that cannot be used (for example an RSA key of an unsupported size).
    case unsupportedKey(String)
    /// Key generation failed inside the crypto library.
    case keyGeneration(KeyType, String)
    /// Building, signing, encoding or parsing a certificate or key failed.
    case encoding(String)
    /// `PKIWriter` refuses to replace a file that already exists (pass `force` to overwrite).
    case fileExists(path: String)
    /// Creating a directory or writing a file failed.
    case fileSystem(path: String, reason: String)
    /// A file the operation needs is missing or cannot be read.
    case unreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case .invalidValidity(let notBefore, let notAfter):
            return "invalid validity period: notValidBefore (\(Self.format(notBefore))) must be earlier than notValidAfter (\(Self.format(notAfter)))"
        case .invalidIPAddress(let text):
            return "'\(text)' is not a valid IPv4 or IPv6 address"
        case .invalidDNSName(let text):
            return "'\(text)' is not a valid DNS name (it must be non-empty ASCII without spaces; use punycode for international names)"
        case .invalidURI(let text):
            return "'\(text)' is not a valid URI (it must be ASCII without spaces and have a scheme, such as spiffe://example.org/service)"
        case .invalidArgument(let message):
            return "invalid argument: \(message)"
        case .pathLengthExceeded(let issuer):
            return "CA '\(issuer)' has a path length constraint that does not allow another intermediate CA below it"
        case .invalidCertificateAuthority(let message):
            return "invalid certificate authority: \(message)"
        case .unsupportedKey(let message):
            return "unsupported key: \(message)"
        case .keyGeneration(let keyType, let message):
            return "cannot generate a \(keyType.rawValue) key: \(message)"
        case .encoding(let message):
            return "certificate encoding failed: \(message)"
        case .fileExists(let path):
            return "refusing to overwrite existing file '\(path)' (use force to replace it)"
        case .fileSystem(let path, let reason):
            return "cannot write '\(path)': \(reason)"
        case .unreadable(let path, let reason):
            return "cannot read '\(path)': \(reason)"
        }
    }

    private static func format(_ date: Date) -> String {
        date.ISO8601Format()
    }
}

/// Runs `body`, turning any error that is not already a `PKIError` into `.encoding` with `context`.
@inline(__always)
func wrapping<T>(_ context: @autoclosure () -> String, _ body: () throws -> T) throws(PKIError) -> T {
    do {
        return try body()
    } catch let error as PKIError {
        throw error
    } catch {
        throw .encoding("\(context()): \(error)")
    }
}
