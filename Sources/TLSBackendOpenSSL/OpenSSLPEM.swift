internal import COpenSSL
import TLSContract

/// Parsing of credentials. Every returned pointer is owned by the caller, who frees it.
enum OpenSSLPEM {
    /// All certificates in a PEM blob, in order. Throws if none parses.
    static func certificates(_ pem: [UInt8], name: String) throws(TLSError) -> [OpaquePointer] {
        ERR_clear_error()
        var result: [OpaquePointer] = []
        pem.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return }
            defer { BIO_free(bio) }
            while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
                result.append(certificate)
            }
        }
        // The loop ends on "no start line" at the end of the data; that is not an error.
        ERR_clear_error()
        guard !result.isEmpty else {
            throw TLSError(.configuration(file: name, problem: .invalidCertificate))
        }
        return result
    }

    static func privateKey(_ pem: [UInt8]) -> OpaquePointer? {
        ERR_clear_error()
        return pem.withUnsafeBytes { raw -> OpaquePointer? in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
    }

    struct PKCS12Bundle {
        let leaf: OpaquePointer
        let key: OpaquePointer
        let chain: [OpaquePointer]
    }

    static func pkcs12(_ der: [UInt8], password: String, name: String) throws(TLSError) -> PKCS12Bundle {
        ERR_clear_error()
        let parsed: OpaquePointer? = der.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return d2i_PKCS12_bio(bio, nil)
        }
        guard let p12 = parsed else {
            throw OpenSSLErrors.collect(.configuration(file: name, problem: .invalidPKCS12))
        }
        defer { PKCS12_free(p12) }
        guard PKCS12_verify_mac(p12, password, -1) == 1 else {
            throw OpenSSLErrors.collect(.configuration(file: name, problem: .wrongPKCS12Password))
        }
        var key: OpaquePointer?
        var leaf: OpaquePointer?
        var chain: OpaquePointer?
        guard PKCS12_parse(p12, password, &key, &leaf, &chain) == 1, let key, let leaf else {
            throw OpenSSLErrors.collect(.configuration(file: name, problem: .invalidPKCS12))
        }
        var intermediates: [OpaquePointer] = []
        if let chain {
            for index in 0..<mtls_sk_X509_num(chain) {
                if let certificate = mtls_sk_X509_value(chain, index), X509_up_ref(certificate) == 1 {
                    intermediates.append(certificate)
                }
            }
            mtls_sk_X509_pop_free(chain)
        }
        return PKCS12Bundle(leaf: leaf, key: key, chain: intermediates)
    }

    /// Encoded straight into the array (a parsed certificate keeps its encoding, so both calls copy it).
    static func der(_ certificate: OpaquePointer) -> [UInt8]? {
        let length = Int(i2d_X509(certificate, nil))
        guard length > 0 else { return nil }
        let der = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            var cursor = buffer.baseAddress
            count = max(0, Int(i2d_X509(certificate, &cursor)))
        }
        return der.count == length ? der : nil
    }
}
