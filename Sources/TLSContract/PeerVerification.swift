import Foundation

/// The rules for accepting a peer's certificate that do not depend on a TLS library, written once.
///
/// Division of labour: the backend's library builds and verifies the chain (signatures, validity
/// periods, basic constraints, a trust anchor, and the key-size and digest floors below); then the
/// backend hands the chain to `check`, from inside its verification callback, so that a refusal
/// still aborts the handshake (a client never sends its certificate to a server that fails here).
///
/// The rules, and why:
/// - **Server names: SANs only** (RFC 9525). A DNS name matches a dNSName SAN case-insensitively,
///   a `*.` wildcard standing for exactly one whole leftmost label; an IP literal matches an
///   iPAddress SAN. The subject CN never counts: a certificate whose name is only in its CN is refused.
/// - **A client names the server it expects** (`TLSConfiguration.serverName`), or explicitly pins
///   the server's key instead (`TLSConfiguration.pinnedServerPublicKey`); there is no silent "any name".
/// - **Extended key usage per role**: a server's leaf must allow serverAuth, a client's clientAuth.
///   A leaf without the extension is unrestricted (RFC 5280 §4.2.1.12) and accepted. A leaf whose
///   only relevant purpose is anyExtendedKeyUsage is refused: the CA/Browser Forum forbids it in
///   TLS leaves, and OpenSSL's verifier refuses it too.
/// - **Chain length**: at most `maximumChainLength` certificates from the leaf up to (not counting)
///   the root; both libraries' own limits are higher (OpenSSL 100, GnuTLS 16), so this one decides.
/// - **Trust anchors**: any certificate given as a trust root is an anchor, self-signed or not, so
///   that trusting one intermediate narrows trust to what it issued (OpenSSL maps this with
///   X509_V_FLAG_PARTIAL_CHAIN; GnuTLS does it by default).
/// - **Floors**: RSA keys of at least 2048 bits, no SHA-1 (or MD5) signatures, anywhere in the
///   chain. The libraries enforce these (OpenSSL security level 2; GnuTLS's medium verification
///   profile and its default refusal of SHA-1 in certificates); both report `.insecureAlgorithm`.
/// - **Revocation**: the context's CRLs (`RevocationList`, whose doc states the rule), checked here
///   for the certification path on every full handshake, before the rules below, whichever library
///   verified the chain (the libraries also check their own copy; they differ on CRL signatures and
///   nextUpdate, and this check makes both behave the same).
/// - **Resumption**: a resumed session carries the identity from its full handshake; it is accepted
///   only while the peer's certificate is still within its validity period, and is not revoked by
///   the current context's CRLs (`checkResumed`): a ticket issued before a CRL listed the peer, or
///   before that CRL expired, does not get it in.
public enum PeerVerification {
    public static let maximumChainLength = 10
    public static let minimumRSAKeyBits = 2048

    /// Applies the rules above to a chain the library has verified (leaf first; as verified or as
    /// sent). `peerRole` is the peer's role. A client passes the server name it expects and, if
    /// configured, the server key it pins (either may be nil, not both: see `TLSConfiguration.validate`).
    /// Returns the peer's identity.
    public static func check(chainDER chain: [[UInt8]], peerRole: TLSConfiguration.Role,
                             expectedName: String?, pinnedPublicKey: [UInt8]?,
                             revocation: RevocationList = .empty, now: Date = Date()) throws(TLSError) -> PeerIdentity {
        let identity = try PeerIdentity.parsingCached(certificateChainDER: chain)
        try revocation.check(path: identity.certificateChainDER, now: now)
        if identity.certificateChainDER.count > maximumChainLength {
            throw TLSError(.certificateRejected(.invalid),
                           detail: "the chain is longer than \(maximumChainLength) certificates")
        }
        let purpose: PeerIdentity.KeyPurpose = peerRole == .server ? .serverAuth : .clientAuth
        if let usage = identity.extendedKeyUsage, !usage.contains(purpose) {
            let allowed = usage.map { "\($0)" }.sorted().joined(separator: ", ")
            throw TLSError(.certificateRejected(.wrongUsage),
                           detail: "the certificate of \(identity.displayName) allows \(allowed), not \(purpose)")
        }
        if let name = expectedName, !matches(name, identity) {
            let names = (identity.dnsNames + identity.ipAddresses).joined(separator: ", ")
            throw TLSError(.certificateRejected(.wrongName),
                           detail: "expected '\(name)'; the certificate's DNS and IP names are: \(names.isEmpty ? "none" : names)")
        }
        if let pin = pinnedPublicKey, identity.spkiSHA256 != pin {
            throw TLSError(.certificateRejected(.notAuthorized),
                           detail: "the key of \(identity.displayName) (SHA-256 \(identity.spkiSHA256Hex)) is not the pinned one")
        }
        return identity
    }

    /// The identity a resumed session carries, accepted only while its certificate is still valid
    /// and not revoked by `revocation` (the CRLs of the context doing the resuming, now).
    public static func checkResumed(chainDER chain: [[UInt8]], revocation: RevocationList = .empty,
                                    now: Date = Date()) throws(TLSError) -> PeerIdentity {
        let identity = try PeerIdentity.parsingCached(certificateChainDER: chain)
        if now > identity.notValidAfter {
            throw TLSError(.certificateRejected(.expired), detail: "the resumed session's certificate has expired since")
        }
        if now < identity.notValidBefore {
            throw TLSError(.certificateRejected(.notYetValid))
        }
        do throws(TLSError) {
            try revocation.check(path: identity.certificateChainDER, now: now)
        } catch {
            var refusal = error
            refusal.detail = "resumed session: " + refusal.detail
            throw refusal
        }
        return identity
    }

    /// Whether `expected` (a DNS name or an IP literal) is one of the certificate's SANs.
    public static func matches(_ expected: String, _ identity: PeerIdentity) -> Bool {
        if let address = IPAddressText.parse(expected) {
            return identity.ipAddresses.contains { IPAddressText.parse($0) == address }
        }
        let name = normalized(expected)
        return identity.dnsNames.contains { dnsName(normalized($0), matches: name) }
    }

    private static func normalized(_ name: String) -> String {
        var lowered = name.lowercased()
        if lowered.hasSuffix(".") { lowered.removeLast() }
        return lowered
    }

    /// RFC 9525 §6.3: a wildcard is the whole leftmost label, stands for exactly one label, and
    /// needs at least two labels after it.
    private static func dnsName(_ pattern: String, matches name: String) -> Bool {
        guard pattern.hasPrefix("*.") else { return pattern == name }
        let suffix = pattern.dropFirst(2)
        guard suffix.split(separator: ".").count >= 2, !suffix.contains("*"),
              let dot = name.firstIndex(of: ".")
        else { return false }
        return name[name.index(after: dot)...] == suffix && name[..<dot].isEmpty == false
    }
}
