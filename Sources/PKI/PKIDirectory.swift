import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The lifecycle of a PKI directory made by `PKIWriter.initialize` (`mtls pki init`): renewing
/// leaves, revoking certificates (DIR/crl.pem) and rotating the root in three stages. The `mtls pki
/// renew|revoke|rotate` commands are thin wrappers over this, and the tests drive it directly.
///
/// Every file is replaced atomically (`AtomicFile`). Which CA signs what is found from the
/// certificates, never remembered elsewhere: a leaf is renewed by the CA of the directory that issued
/// it (its issuer name and signature), a certificate is revoked in the CRL of the CA that issued it.
///
/// Root rotation, and why in three stages (each is safe to deploy everywhere before the next):
/// 1. `rotateBegin`: a new root (ca-next.pem, ca-next.key, a distinct name: "... G2") and ca.pem
///    becomes the bundle old + new, plus an empty CRL of the new root in crl.pem. Leaves are still
///    from the old root, so nothing changes for any handshake, but every peer that reloads its bundle
///    now also trusts the new root.
/// 2. `rotateReissue`: server and client leaves renewed under the new root. Peers that picked up the
///    bundle accept them; a peer still trusting only the old root would not, which is why stage 1 must
///    have reached everyone first.
/// 3. `rotateFinish`: ca.pem = the new root alone, ca.key = its key; the old root's certificate, key
///    and CRL go to DIR/retired/ (never deleted). Safe once no leaf of the old root is in use anywhere.
public struct PKIDirectory: Sendable {
    public enum LeafRole: String, Sendable, CaseIterable {
        case server, client
    }

    /// Where the three stages of a rotation stand, read from the files.
    public enum RotationStage: Sendable, Equatable, CustomStringConvertible {
        /// No ca-next.pem: no rotation in progress.
        case none
        /// ca-next.pem exists; the leaves are not all from it yet.
        case begun
        /// ca-next.pem exists and both leaves were issued by it.
        case reissued

        public var description: String {
            switch self {
            case .none: return "no rotation in progress"
            case .begun: return "rotation begun (bundle holds old and new root; leaves still from the old root)"
            case .reissued: return "leaves reissued under the new root (bundle still holds both roots)"
            }
        }
    }

    public static let crlFile = PKIDirectoryLayout.crlFile
    public static let nextRootCertificateFile = "ca-next.pem"
    public static let nextRootKeyFile = "ca-next.key"
    public static let retiredFolder = "retired"
    /// How long a CRL is current unless told otherwise: a week, like many public CAs' CRLs.
    public static let defaultCRLValidity: TimeInterval = 7 * 86400

    public let layout: PKIDirectoryLayout

    public init(_ directory: String) {
        layout = PKIDirectoryLayout(directory: directory)
    }

    public var crl: String { layout.path(Self.crlFile) }
    public var nextRootCertificate: String { layout.path(Self.nextRootCertificateFile) }
    public var nextRootKey: String { layout.path(Self.nextRootKeyFile) }
    public var retired: String { layout.path(Self.retiredFolder) }

    public func certificatePath(_ role: LeafRole) -> String {
        role == .server ? layout.serverCertificate : layout.clientCertificate
    }

    public func keyPath(_ role: LeafRole) -> String {
        role == .server ? layout.serverKey : layout.clientKey
    }

    // MARK: - Renewal

    /// A new key and certificate for `role`: same subject, SANs, EKU and key type, from the CA that
    /// issued the current one, valid for `validFor` (default: as long as the current one was issued
    /// for). Written key first, then certificate (see `install`).
    @discardableResult
    public func renew(_ role: LeafRole, validFor: TimeInterval? = nil, now: Date = Date()) throws -> IssuedCertificate {
        let current = try leaf(role)
        let issuer = try authority(thatIssued: current)
        return try renew(role, current: current, under: issuer, validFor: validFor, now: now)
    }

    /// The current certificate of `role` (its leaf).
    public func leaf(_ role: LeafRole) throws -> Certificate {
        let path = certificatePath(role)
        guard let first = try Self.certificates(in: try Self.read(path)).first else {
            throw PKIError.invalidArgument("\(path) holds no certificate")
        }
        return first
    }

    /// How long `certificate` was issued for: notAfter − notBefore, less the hour by which this PKI
    /// backdates notBefore against clock skew (when the period is longer than that hour).
    public static func issuedLifetime(of certificate: Certificate) -> TimeInterval {
        let total = certificate.notValidAfter.timeIntervalSince(certificate.notValidBefore)
        return total > PKIDefaults.clockSkewAllowance ? total - PKIDefaults.clockSkewAllowance : total
    }

    /// When `certificate` was issued (its notBefore plus the backdating, at most now).
    public static func issuedAt(_ certificate: Certificate, now: Date = Date()) -> Date {
        let lifetime = issuedLifetime(of: certificate)
        return min(now, certificate.notValidAfter.addingTimeInterval(-lifetime))
    }

    private func renew(_ role: LeafRole, current: Certificate, under issuer: CertificateAuthority,
                       validFor: TimeInterval?, now: Date) throws -> IssuedCertificate {
        let request = try Self.request(copying: current, validFor: validFor ?? Self.issuedLifetime(of: current), now: now)
        let issued = try issuer.issue(request)
        try install(issued, as: role)
        return issued
    }

    /// Key first, then certificate. A watcher keyed on the certificate file (the usual kind: Envoy,
    /// ghostunnel, ours too) then always finds the matching key in place when it sees the new
    /// certificate. One that wakes on the key sees a pair that does not match yet: our reload
    /// debounces (300 ms) so both renames land in one reload, and if it does not, that reload fails,
    /// keeps serving the old pair, and the certificate's rename triggers the next one.
    func install(_ issued: IssuedCertificate, as role: LeafRole) throws {
        try AtomicFile.write(issued.privateKeyPEM, to: keyPath(role), mode: 0o600, replace: true)
        try AtomicFile.write(issued.chainPEM, to: certificatePath(role), mode: 0o644, replace: true)
    }

    static func request(copying certificate: Certificate, validFor: TimeInterval, now: Date) throws -> LeafRequest {
        guard validFor >= 1 else { throw PKIError.invalidArgument("a certificate must be valid for at least one second") }
        let organization = certificate.subject.lazy.flatMap { $0 }
            .first { $0.type == .RDNAttributeType.organizationName }
            .map { String(describing: $0.value) }
        var request = LeafRequest(
            commonName: certificate.commonName ?? "", organization: organization,
            keyType: try KeyType(of: certificate.publicKey),
            notValidBefore: now.addingTimeInterval(-PKIDefaults.clockSkewAllowance),
            notValidAfter: now.addingTimeInterval(validFor))
        if let names = try certificate.extensions.subjectAlternativeNames {
            for name in names {
                switch name {
                case .dnsName(let dns): request.dnsNames.append(dns)
                case .uniformResourceIdentifier(let uri): request.uris.append(uri)
                case .ipAddress(let octets): request.ipAddresses.append(Self.ipText(Array(octets.bytes)))
                default: break
                }
            }
        }
        if let usages = try certificate.extensions.extendedKeyUsage {
            for purpose in KeyPurpose.allCases where usages.contains(purpose.usage) { request.purposes.insert(purpose) }
        }
        return request
    }

    private static func ipText(_ bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - CAs of the directory

    /// Every CA whose key the directory holds: the current root (first certificate of ca.pem, with
    /// ca.key), the next root during a rotation, and the intermediate when there is one.
    public func authorities() throws -> [CertificateAuthority] {
        var result: [CertificateAuthority] = []
        let rootPEM = try Self.read(layout.caCertificate)
        guard let rootDocument = try Self.pemCertificates(rootPEM).first else {
            throw PKIError.invalidArgument("\(layout.caCertificate) holds no certificate")
        }
        result.append(try loadAuthority(certificatePEM: rootDocument, keyPath: layout.caKey, certificatePath: layout.caCertificate))
        if FileManager.default.fileExists(atPath: nextRootCertificate) {
            result.append(try loadAuthority(certificatePEM: try Self.read(nextRootCertificate), keyPath: nextRootKey,
                                            certificatePath: nextRootCertificate))
        }
        if FileManager.default.fileExists(atPath: layout.intermediateCertificate) {
            let chain = try Self.pemCertificates(try Self.read(layout.intermediateCertificate))
            guard let first = chain.first else { throw PKIError.invalidArgument("\(layout.intermediateCertificate) holds no certificate") }
            result.append(try loadAuthority(certificatePEM: first, keyPath: layout.intermediateKey,
                                            certificatePath: layout.intermediateCertificate,
                                            above: chain.dropFirst().joined()))
        }
        return result
    }

    /// The CA of this directory that signed `certificate` (issuer name and signature both match).
    public func authority(thatIssued certificate: Certificate) throws -> CertificateAuthority {
        let candidates = try authorities()
        guard let issuer = candidates.first(where: {
            $0.subject == certificate.issuer && $0.certificate.publicKey.isValidSignature(certificate.signature, for: certificate)
        }) else {
            let known = candidates.map { $0.commonName ?? "\($0.subject)" }.joined(separator: ", ")
            throw PKIError.invalidArgument("the certificate of \(certificate.commonName ?? "\(certificate.subject)") was not issued by a CA of \(layout.directory) (it holds: \(known))")
        }
        return issuer
    }

    private func loadAuthority(certificatePEM: String, keyPath: String, certificatePath: String,
                               above: String = "") throws -> CertificateAuthority {
        do {
            return try CertificateAuthority(certificatePEM: certificatePEM, privateKeyPEM: try Self.read(keyPath),
                                            intermediatesAbovePEM: above)
        } catch let error as PKIError {
            throw PKIError.invalidCertificateAuthority("\(certificatePath) / \(keyPath): \(error)")
        }
    }

    // MARK: - Revocation

    /// Adds `certificate`'s serial to the CRL of the CA that issued it in DIR/crl.pem (creating the
    /// file or that CA's CRL when missing, keeping every other CRL and every entry already listed),
    /// with the CRL number counted up, thisUpdate now and nextUpdate `nextUpdateIn` from now.
    /// Returns the serial (upper-case hex) and whether it was listed already.
    @discardableResult
    public func revoke(_ certificate: Certificate, reason: RevocationReason? = nil,
                       nextUpdateIn: TimeInterval = defaultCRLValidity, now: Date = Date()) throws -> (serialHex: String, alreadyListed: Bool) {
        let issuer = try authority(thatIssued: certificate)
        let serial = Array(certificate.serialNumber.bytes)
        var alreadyListed = false
        try updateCRL(of: issuer, nextUpdateIn: nextUpdateIn, now: now) { document in
            if document.lists(serial: serial) {
                alreadyListed = true
            } else {
                document.entries.append(.init(serial: serial, revocationDate: now, reason: reason))
            }
        }
        return (CertificateRevocationListDocument.Entry(serial: serial, revocationDate: now, reason: nil).serialHex, alreadyListed)
    }

    /// Signs every CA's CRL again (same entries, next number, new dates): what a CRL needs before its
    /// nextUpdate passes, since servers refuse the certificates a CRL covers once it has.
    public func refreshCRLs(nextUpdateIn: TimeInterval = defaultCRLValidity, now: Date = Date()) throws {
        for authority in try authorities() {
            try updateCRL(of: authority, nextUpdateIn: nextUpdateIn, now: now) { _ in }
        }
    }

    /// The CRLs of crl.pem (none when the file does not exist).
    public func crls() throws -> [(document: CertificateRevocationListDocument, der: [UInt8])] {
        guard FileManager.default.fileExists(atPath: crl) else { return [] }
        return try CertificateRevocationListDocument.parseAll(pem: try Self.read(crl))
    }

    private func updateCRL(of authority: CertificateAuthority, nextUpdateIn: TimeInterval, now: Date,
                           _ change: (inout CertificateRevocationListDocument) -> Void) throws {
        guard nextUpdateIn >= 1 else { throw PKIError.invalidArgument("nextUpdate must lie in the future") }
        var blocks = try crls()
        let index = blocks.firstIndex {
            $0.document.issuer == authority.subject
                && CertificateRevocationListDocument.isSigned($0.der, by: authority.certificate)
        }
        var document = index.map { blocks[$0].document }
            ?? CertificateRevocationListDocument(issuer: authority.subject, thisUpdate: now, nextUpdate: now, number: 0)
        change(&document)
        document.number += 1
        document.thisUpdate = now
        document.nextUpdate = now.addingTimeInterval(nextUpdateIn)
        let der = try document.signed(by: authority)
        if let index { blocks[index] = (document, der) } else { blocks.append((document, der)) }
        try writeCRLs(blocks.map(\.der))
    }

    private func writeCRLs(_ ders: [[UInt8]]) throws {
        try AtomicFile.write(ders.map(CertificateRevocationListDocument.pem).joined(), to: crl, mode: 0o644, replace: true)
    }

    /// Empty CRLs of every CA (for `pki init`).
    func writeInitialCRLs(for authorities: [CertificateAuthority], now: Date = Date(), replace: Bool) throws {
        var ders: [[UInt8]] = []
        for authority in authorities {
            let document = CertificateRevocationListDocument(
                issuer: authority.subject, thisUpdate: now, nextUpdate: now.addingTimeInterval(Self.defaultCRLValidity), number: 1)
            ders.append(try document.signed(by: authority))
        }
        try AtomicFile.write(ders.map(CertificateRevocationListDocument.pem).joined(), to: crl, mode: 0o644, replace: replace)
    }

    // MARK: - Root rotation

    public func rotationStage() throws -> RotationStage {
        guard FileManager.default.fileExists(atPath: layout.caCertificate) else {
            throw PKIError.unreadable(path: layout.caCertificate, reason: "not found (is \(layout.directory) a directory made by `mtls pki init`?)")
        }
        guard FileManager.default.fileExists(atPath: nextRootCertificate) else { return .none }
        let next = try loadAuthority(certificatePEM: try Self.read(nextRootCertificate), keyPath: nextRootKey,
                                     certificatePath: nextRootCertificate)
        for role in LeafRole.allCases {
            let leaf = try leaf(role)
            guard leaf.issuer == next.subject, next.certificate.publicKey.isValidSignature(leaf.signature, for: leaf) else {
                return .begun
            }
        }
        return .reissued
    }

    /// Stage 1: a new root and the bundle old + new in ca.pem. Returns the new root.
    @discardableResult
    public func rotateBegin(now: Date = Date()) throws -> CertificateAuthority {
        guard try rotationStage() == .none else {
            throw PKIRotationError.outOfOrder("a rotation is already in progress (\(nextRootCertificate) exists): run `rotate reissue`, then `rotate finish`")
        }
        guard !FileManager.default.fileExists(atPath: layout.intermediateCertificate) else {
            throw PKIRotationError.unsupported("this directory issues from an intermediate CA; rotating its root is not supported yet (renew the intermediate's leaves with `pki renew`)")
        }
        let current = try authorities()[0]
        let next = try CertificateAuthority.makeRoot(
            subject: try Self.nextGenerationName(of: current.certificate),
            keyType: current.keyType,
            notValidBefore: now.addingTimeInterval(-PKIDefaults.clockSkewAllowance),
            notValidAfter: now.addingTimeInterval(max(PKIDefaults.rootValidity, Self.issuedLifetime(of: current.certificate))))
        // Key first: the pair is complete before anything names the new root.
        try AtomicFile.write(next.privateKeyPEM, to: nextRootKey, mode: 0o600, replace: false)
        try AtomicFile.write(next.certificatePEM, to: nextRootCertificate, mode: 0o644, replace: false)
        // The CRL of the new root first, so that by the time ca.pem names it, crl.pem already covers it.
        try updateCRL(of: next, nextUpdateIn: Self.defaultCRLValidity, now: now) { _ in }
        try AtomicFile.write(current.certificatePEM + next.certificatePEM, to: layout.caCertificate, mode: 0o644, replace: true)
        return next
    }

    /// Stage 2: server and client leaves renewed under the new root (same names, same lifetimes).
    @discardableResult
    public func rotateReissue(now: Date = Date()) throws -> (server: IssuedCertificate, client: IssuedCertificate) {
        guard try rotationStage() != .none else {
            throw PKIRotationError.outOfOrder("no rotation in progress: run `rotate begin` first (it makes the new root and the bundle every peer must load before leaves change)")
        }
        let next = try loadAuthority(certificatePEM: try Self.read(nextRootCertificate), keyPath: nextRootKey,
                                     certificatePath: nextRootCertificate)
        let server = try renew(.server, current: try leaf(.server), under: next, validFor: nil, now: now)
        let client = try renew(.client, current: try leaf(.client), under: next, validFor: nil, now: now)
        return (server, client)
    }

    /// Stage 3: ca.pem and ca.key = the new root alone; the old root's files and CRL to DIR/retired/.
    /// Returns the files written to retired/.
    @discardableResult
    public func rotateFinish(now: Date = Date()) throws -> [String] {
        switch try rotationStage() {
        case .none:
            throw PKIRotationError.outOfOrder("no rotation in progress: run `rotate begin` first, then `rotate reissue`, then `rotate finish`")
        case .begun:
            throw PKIRotationError.outOfOrder("the leaves are still issued by the old root: run `rotate reissue` first (finishing now would leave them untrusted)")
        case .reissued:
            break
        }
        let authorities = try authorities()
        let (old, next) = (authorities[0], authorities[1])
        let tag = Self.timestampTag(now)
        try FileManager.default.createDirectory(atPath: retired, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let retiredCertificate = (retired as NSString).appendingPathComponent("ca-\(tag).pem")
        let retiredKey = (retired as NSString).appendingPathComponent("ca-\(tag).key")
        let retiredCRL = (retired as NSString).appendingPathComponent("crl-\(tag).pem")
        // Copies into retired/ first: whatever happens next, the old root is never lost.
        try AtomicFile.write(old.certificatePEM, to: retiredCertificate, mode: 0o644, replace: false)
        try AtomicFile.write(old.privateKeyPEM, to: retiredKey, mode: 0o600, replace: false)
        let blocks = try crls()
        let isOld = { (block: (document: CertificateRevocationListDocument, der: [UInt8])) in
            block.document.issuer == old.subject && CertificateRevocationListDocument.isSigned(block.der, by: old.certificate)
        }
        try AtomicFile.write(blocks.filter(isOld).map { CertificateRevocationListDocument.pem($0.der) }.joined(),
                             to: retiredCRL, mode: 0o644, replace: false)
        // Then the new root takes the old one's names: key, certificate (the bundle shrinks), CRL.
        try AtomicFile.write(next.privateKeyPEM, to: layout.caKey, mode: 0o600, replace: true)
        try AtomicFile.write(next.certificatePEM, to: layout.caCertificate, mode: 0o644, replace: true)
        try writeCRLs(blocks.filter { !isOld($0) }.map(\.der))
        unlink(nextRootCertificate)
        unlink(nextRootKey)
        return [retiredCertificate, retiredKey, retiredCRL]
    }

    /// "swift-mtls Root CA" → "swift-mtls Root CA G2" → "… G3": a new root needs a name of its own,
    /// so that certificates, CRLs and bundles never confuse the two during the overlap.
    static func nextGenerationName(of certificate: Certificate) throws -> DistinguishedName {
        let commonName = certificate.commonName ?? "swift-mtls Root CA"
        var base = commonName
        var generation = 2
        if let range = commonName.range(of: #" G(\d+)$"#, options: .regularExpression),
           let number = Int(commonName[range].dropFirst(2)) {
            base = String(commonName[..<range.lowerBound])
            generation = number + 1
        }
        let organization = certificate.subject.lazy.flatMap { $0 }
            .first { $0.type == .RDNAttributeType.organizationName }
            .map { String(describing: $0.value) }
        return try CertificateFactory.distinguishedName(commonName: "\(base) G\(generation)", organization: organization)
    }

    private static func timestampTag(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.string(from: date)
    }

    // MARK: - Files

    static func read(_ path: String) throws -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let missing = !FileManager.default.fileExists(atPath: path)
            throw PKIError.unreadable(path: path, reason: missing ? "not found" : (error as NSError).localizedDescription)
        }
    }

    /// The CERTIFICATE blocks of PEM text, each re-encoded with a trailing newline.
    static func pemCertificates(_ text: String) throws -> [String] {
        try certificates(in: text).map { try pemString($0) }
    }

    static func certificates(in text: String) throws -> [Certificate] {
        try wrapping("cannot read the certificates") {
            try PEMDocument.parseMultiple(pemString: text)
                .filter { $0.discriminator == "CERTIFICATE" }
                .map { try Certificate(pemDocument: $0) }
        }
    }
}

/// A rotation stage run out of order, or on a directory it cannot handle. The message says which
/// stage comes first.
public enum PKIRotationError: Error, CustomStringConvertible, Sendable {
    case outOfOrder(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .outOfOrder(let message), .unsupported(let message): return message
        }
    }
}
