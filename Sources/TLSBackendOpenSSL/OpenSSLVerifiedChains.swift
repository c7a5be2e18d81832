internal import COpenSSL
import TLSContract

/// OpenSSL's chain verification, through the context's `VerifiedChainCache` (the contract's; see
/// there for why a hit is as strict as a full verification). OpenSSL calls this in place of
/// X509_verify_cert, with the store context it set up exactly as for X509_verify_cert (trust store,
/// flags, purpose, security level, our verify callback).
///
/// - Hit: the chain the library verified earlier is put back as the verified chain, so that
///   SSL_get0_verified_chain reports it as after a full verification, and the session gets the
///   identity the contract's check returned then. No chain is built and no certificate signature
///   checked; the peer's CertificateVerify is still checked by OpenSSL after this returns.
/// - Miss: X509_verify_cert, which runs `verifyCallback` and so the contract's rules as before; a
///   chain that passed both is stored.
let verifyChainCallback: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { store, _ in
    guard let store else { return 0 }
    guard let ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()),
          let pointer = mtls_SSL_get_app_data(OpaquePointer(ssl))
    else { return X509_verify_cert(store) }
    let owner = Unmanaged<OpenSSLSession>.fromOpaque(pointer).takeUnretainedValue()
    guard let cache = owner.context.verifiedChains, let presented = presentedChain(store) else {
        return X509_verify_cert(store)
    }
    let probe = cache.probe(presentedChainDER: presented.map(\.der), peerRole: owner.role == .server ? .client : .server,
                            expectedName: owner.expectedServerName, pinnedPublicKey: owner.pinnedServerPublicKey)
    if let hit = probe.hit, restoreVerifiedChain(hit.verifiedChainDER, presented: presented, store: store) {
        owner.verifiedIdentity = hit.identity
        return 1
    }
    let result = X509_verify_cert(store)
    if result == 1, owner.policyRefusal == nil, let identity = owner.verifiedIdentity,
       let built = X509_STORE_CTX_get0_chain(store).flatMap(certificatesDER) {
        cache.insert(probe, identity: identity, verifiedChainDER: built)
    }
    return result
}

/// The chain as the peer sent it, leaf first (OpenSSL passes it whole as the untrusted certificates).
private func presentedChain(_ store: OpaquePointer) -> [(certificate: OpaquePointer, der: [UInt8])]? {
    guard let leaf = X509_STORE_CTX_get0_cert(store) else { return nil }
    var chain: [(certificate: OpaquePointer, der: [UInt8])] = []
    if let untrusted = X509_STORE_CTX_get0_untrusted(store) {
        for index in 0..<mtls_sk_X509_num(untrusted) {
            guard let certificate = mtls_sk_X509_value(untrusted, index), let der = OpenSSLPEM.der(certificate) else {
                return nil
            }
            chain.append((certificate, der))
        }
    }
    if chain.first?.certificate != leaf {
        guard let der = OpenSSLPEM.der(leaf) else { return nil }
        chain.insert((leaf, der), at: 0)
    }
    return chain
}

private func certificatesDER(_ stack: OpaquePointer) -> [[UInt8]]? {
    var chain: [[UInt8]] = []
    for index in 0..<mtls_sk_X509_num(stack) {
        guard let certificate = mtls_sk_X509_value(stack, index), let der = OpenSSLPEM.der(certificate) else { return nil }
        chain.append(der)
    }
    return chain
}

/// Sets the store context's verified chain to `chainDER`, made of the certificates the peer sent
/// and, for the rest (the trust root), the trust store's certificates of the same DER. False, with
/// nothing set, if one cannot be found (the caller then verifies in full).
private func restoreVerifiedChain(_ chainDER: [[UInt8]], presented: [(certificate: OpaquePointer, der: [UInt8])],
                                  store: OpaquePointer) -> Bool {
    guard let stack = OPENSSL_sk_new_null() else { return false }
    var previous: OpaquePointer?
    for der in chainDER {
        var found = presented.first { $0.der == der }?.certificate
        if found == nil, let previous, let candidates = X509_STORE_CTX_get1_certs(store, X509_get_issuer_name(previous)) {
            found = (0..<mtls_sk_X509_num(candidates)).lazy.compactMap { mtls_sk_X509_value(candidates, $0) }
                .first { OpenSSLPEM.der($0) == der }
            // The stack's references go with it; `found` gets its own below, before they do.
            if let found { X509_up_ref(found) }
            mtls_sk_X509_pop_free(candidates)
        } else if let found {
            X509_up_ref(found)
        }
        guard let found, OPENSSL_sk_push(stack, UnsafeRawPointer(found)) > 0 else {
            if let found { X509_free(found) }
            mtls_sk_X509_pop_free(stack)
            return false
        }
        previous = found
    }
    X509_STORE_CTX_set0_verified_chain(store, stack)
    return true
}
