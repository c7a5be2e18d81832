internal import COpenSSL
import TLSContract

/// Writes PKCS#12 bundles (for `mtls pki pkcs12`), with OpenSSL 3's default algorithms:
/// AES-256-CBC with PBKDF2 (HMAC-SHA-256) for the key and the certificates, and an HMAC-SHA-256
/// MAC, 2048 iterations each. GnuTLS 3.7, OpenSSL 3 and current browsers and keychains read them.
public enum PKCS12Export {
    /// A DER PKCS#12 bundle holding the private key, the leaf (the first certificate of `chainPEM`)
    /// and the rest of the chain as CA certificates. `friendlyName` labels the key and leaf.
    /// `chainName` and `keyName` name the inputs in errors (a path, usually).
    ///
    /// Throws `.configuration` errors: `.noCertificateInPEM` / `.invalidCertificate` for the chain,
    /// `.noPrivateKeyInPEM` / `.invalidPrivateKey` (encrypted keys included) for the key,
    /// `.keyDoesNotMatchCertificate`, or `.invalidPKCS12` if OpenSSL cannot build the bundle.
    public static func export(
        chainPEM: [UInt8],
        privateKeyPEM: [UInt8],
        password: String,
        friendlyName: String?,
        chainName: String = "certificate chain",
        keyName: String = "private key"
    ) throws(TLSError) -> [UInt8] {
        let chain = try TLSConfiguration.Source.bytes(chainPEM, label: chainName).loadCertificatesPEM()
        let keyPEM = try TLSConfiguration.Source.bytes(privateKeyPEM, label: keyName).loadPrivateKeyPEM()

        let certificates = try OpenSSLPEM.certificates(chain.bytes, name: chainName)
        defer { certificates.forEach { X509_free($0) } }
        guard let key = OpenSSLPEM.privateKey(keyPEM.bytes) else {
            throw OpenSSLErrors.collect(.configuration(file: keyName, problem: .invalidPrivateKey))
        }
        defer { EVP_PKEY_free(key) }
        let leaf = certificates[0]
        guard X509_check_private_key(leaf, key) == 1 else {
            throw OpenSSLErrors.collect(.configuration(file: keyName, problem: .keyDoesNotMatchCertificate))
        }

        // A stack that only borrows the certificates: OPENSSL_sk_free frees the stack, not them.
        guard let authorities = OPENSSL_sk_new_null() else {
            throw OpenSSLErrors.collect(.internalError)
        }
        defer { OPENSSL_sk_free(authorities) }
        for certificate in certificates.dropFirst() {
            guard OPENSSL_sk_push(authorities, UnsafeRawPointer(certificate)) > 0 else {
                throw OpenSSLErrors.collect(.internalError)
            }
        }

        ERR_clear_error()
        let iterations = Int32(PKCS5_DEFAULT_ITER)
        // nid 0: the library's defaults (AES-256-CBC with PBKDF2 in OpenSSL 3).
        let bundle = PKCS12_create(password, friendlyName, key, leaf, authorities, 0, 0, iterations, iterations, 0)
        guard let bundle else {
            throw OpenSSLErrors.collect(.configuration(file: chainName, problem: .invalidPKCS12))
        }
        defer { PKCS12_free(bundle) }

        guard let bio = BIO_new(BIO_s_mem()) else { throw OpenSSLErrors.collect(.internalError) }
        defer { BIO_free(bio) }
        guard i2d_PKCS12_bio(bio, bundle) == 1 else {
            throw OpenSSLErrors.collect(.configuration(file: chainName, problem: .invalidPKCS12))
        }
        let length = Int(BIO_ctrl_pending(bio))
        var der = [UInt8](repeating: 0, count: length)
        let read = der.withUnsafeMutableBytes { raw in
            BIO_read(bio, raw.baseAddress, Int32(raw.count))
        }
        guard read == Int32(length) else {
            throw OpenSSLErrors.collect(.internalError)
        }
        return der
    }
}
