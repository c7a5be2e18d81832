import Foundation
import SwiftASN1
import X509

/// The issuer side of a signature: who signs, with what, and under which key identifier.
struct Signer: Sendable {
    let name: DistinguishedName
    let key: KeyPair
    let subjectKeyIdentifier: ArraySlice<UInt8>
}

enum CertificateFactory {
    static func distinguishedName(commonName: String, organization: String?) throws(PKIError) -> DistinguishedName {
        var attributes: [RelativeDistinguishedName.Attribute] = []
        if let organization, !organization.isEmpty {
            attributes.append(.init(type: .RDNAttributeType.organizationName, utf8String: organization))
        }
        if !commonName.isEmpty {
            attributes.append(.init(type: .RDNAttributeType.commonName, utf8String: commonName))
        }
        return DistinguishedName(attributes.map { RelativeDistinguishedName($0) })
    }

    static func checkValidity(_ notBefore: Date, _ notAfter: Date) throws(PKIError) {
        guard notBefore < notAfter else {
            throw .invalidValidity(notValidBefore: notBefore, notValidAfter: notAfter)
        }
    }

    /// Signs a certificate. `subjectKeyIdentifier` defaults to the SHA-1 hash of the subject public
    /// key (RFC 5280 method 1); the AKI is always the signer's SKI.
    static func sign(
        publicKey: Certificate.PublicKey,
        subject: DistinguishedName,
        subjectKeyIdentifier: ArraySlice<UInt8>? = nil,
        notValidBefore: Date,
        notValidAfter: Date,
        basicConstraints: BasicConstraints,
        keyUsage: KeyUsage,
        extendedKeyUsage: [ExtendedKeyUsage.Usage] = [],
        subjectAlternativeNames: [GeneralName] = [],
        signer: Signer
    ) throws(PKIError) -> Certificate {
        try checkValidity(notValidBefore, notValidAfter)
        let ski = subjectKeyIdentifier ?? SubjectKeyIdentifier(hash: publicKey).keyIdentifier
        return try wrapping("cannot issue a certificate for \(subject)") {
            var extensions = Certificate.Extensions()
            try extensions.append(Certificate.Extension(basicConstraints, critical: true))
            try extensions.append(Certificate.Extension(keyUsage, critical: true))
            if !extendedKeyUsage.isEmpty {
                try extensions.append(Certificate.Extension(try ExtendedKeyUsage(extendedKeyUsage), critical: false))
            }
            if !subjectAlternativeNames.isEmpty {
                // RFC 5280 4.2.1.6: critical when the subject is empty.
                try extensions.append(Certificate.Extension(SubjectAlternativeNames(subjectAlternativeNames),
                                                            critical: subject.isEmpty))
            }
            try extensions.append(Certificate.Extension(SubjectKeyIdentifier(keyIdentifier: ski), critical: false))
            try extensions.append(Certificate.Extension(
                AuthorityKeyIdentifier(keyIdentifier: signer.subjectKeyIdentifier), critical: false))
            return try Certificate(
                version: .v3,
                serialNumber: randomSerialNumber(),
                publicKey: publicKey,
                notValidBefore: notValidBefore,
                notValidAfter: notValidAfter,
                issuer: signer.name,
                subject: subject,
                signatureAlgorithm: signer.key.keyType.signatureAlgorithm,
                extensions: extensions,
                issuerPrivateKey: signer.key.privateKey)
        }
    }

    /// Signs an end-entity certificate for `request` with the key `key`.
    static func signLeaf(_ request: LeafRequest, key: KeyPair, signer: (DistinguishedName, ArraySlice<UInt8>) -> Signer) throws(PKIError) -> Certificate {
        var names: [GeneralName] = []
        for dns in request.dnsNames {
            try NameValidation.checkDNSName(dns)
            names.append(.dnsName(dns))
        }
        for ip in request.ipAddresses {
            let bytes = try NameValidation.ipAddress(ip)
            names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        for uri in request.uris {
            try NameValidation.checkURI(uri)
            names.append(.uniformResourceIdentifier(uri))
        }
        let subject = try distinguishedName(commonName: request.commonName, organization: request.organization)
        if subject.isEmpty && names.isEmpty {
            throw .invalidArgument("a certificate needs a common name or at least one subject alternative name")
        }
        let ski = SubjectKeyIdentifier(hash: key.publicKey).keyIdentifier
        // Stable order: serverAuth before clientAuth.
        let usages = KeyPurpose.allCases.filter { request.purposes.contains($0) }.map(\.usage)
        return try sign(
            publicKey: key.publicKey,
            subject: subject,
            subjectKeyIdentifier: ski,
            notValidBefore: request.notValidBefore,
            notValidAfter: request.notValidAfter,
            basicConstraints: .notCertificateAuthority,
            keyUsage: KeyUsage(digitalSignature: true, keyEncipherment: request.keyType.isRSA),
            extendedKeyUsage: usages,
            subjectAlternativeNames: names,
            signer: signer(subject, ski))
    }
}

/// 20 random bytes whose first byte is 0x01...0x7F: a positive INTEGER of exactly 20 content
/// octets (RFC 5280 4.1.2.2 allows no more). `Certificate.SerialNumber()` may need 21 octets, as a
/// leading zero byte is added when its first random byte has the high bit set.
func randomSerialNumber() -> Certificate.SerialNumber {
    var generator = SystemRandomNumberGenerator()
    var bytes = (0..<20).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    bytes[0] = UInt8.random(in: 0x01...0x7F, using: &generator)
    return Certificate.SerialNumber(bytes: bytes)
}

extension Certificate {
    /// The subject key identifier extension, or the RFC 5280 method 1 hash when the certificate has none.
    var keyIdentifier: ArraySlice<UInt8> {
        if let ski = try? extensions.subjectKeyIdentifier {
            return ski.keyIdentifier
        }
        return SubjectKeyIdentifier(hash: publicKey).keyIdentifier
    }

    var commonName: String? {
        subject.lazy.flatMap { $0 }
            .first { $0.type == .RDNAttributeType.commonName }
            .map { String(describing: $0.value) }
    }
}
