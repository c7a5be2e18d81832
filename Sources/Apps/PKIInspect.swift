import ArgumentParser
import Foundation
import TLSContract

/// `mtls pki inspect FILE...`: every certificate (and CRL) in a file, as a person needs it before a
/// renewal: who, which names, issued by whom, which serial, valid when, and how long is left.
struct PKIInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show subject, SANs, issuer, serial, validity and time left of each certificate (or CRL) in a file.",
        discussion: """
            Takes PEM (a chain or a bundle: every CERTIFICATE and X509 CRL block) or DER (one certificate or one \
            CRL). "renew soon" marks a certificate with less than a third of its lifetime left, the point at which \
            servers start warning about it. Exit status 1 if a file cannot be read or holds nothing to show.
            """)

    @Argument(help: ArgumentHelp("Certificate, chain, bundle or CRL files.", valueName: "file"))
    var files: [String]

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("name at least one file") }
    }

    func run() throws {
        var failed = false
        let now = Date()
        for (number, file) in files.enumerated() {
            if number > 0 { print("") }
            do throws(TLSError) {
                try show(file, now: now)
            } catch {
                printError("mtls pki inspect: \(error.description)")
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }

    private func show(_ file: String, now: Date) throws(TLSError) {
        let bytes = try TLSConfiguration.Source.file(file).load()
        var certificates: [CertificateSummary] = []
        var crls: [CertificateRevocationList] = []
        if PEMBlocks.containsPEM(bytes) {
            guard let blocks = PEMBlocks.decode(bytes) else {
                throw TLSError(.configuration(file: file, problem: .invalidCertificate), detail: "a PEM block is cut short or not base64")
            }
            for block in blocks {
                switch block.label {
                case "CERTIFICATE", "TRUSTED CERTIFICATE":
                    do { certificates.append(try CertificateSummary(derEncoded: block.der)) } catch {
                        throw TLSError(.configuration(file: file, problem: .invalidCertificate), detail: error.detail)
                    }
                case "X509 CRL":
                    crls.append(try CertificateRevocationList(derEncoded: block.der, source: file))
                default:
                    continue  // keys and the like: not shown
                }
            }
        } else if let certificate = try? CertificateSummary(derEncoded: bytes) {
            certificates.append(certificate)
        } else if let crl = try? CertificateRevocationList(derEncoded: bytes, source: file) {
            crls.append(crl)
        }
        guard !certificates.isEmpty || !crls.isEmpty else {
            throw TLSError(.configuration(file: file, problem: .noCertificateInPEM), detail: "no certificate or CRL found")
        }
        for (index, certificate) in certificates.enumerated() {
            print("\(file): certificate \(index + 1) of \(certificates.count)\(certificate.isCertificateAuthority ? " (CA)" : "")")
            describe(certificate, now: now)
        }
        for (index, crl) in crls.enumerated() {
            print("\(file): CRL \(index + 1) of \(crls.count)")
            describe(crl, now: now)
        }
    }

    private func describe(_ certificate: CertificateSummary, now: Date) {
        let names = certificate.dnsNames.map { "DNS:\($0)" } + certificate.ipAddresses.map { "IP:\($0)" }
            + certificate.uris.map { "URI:\($0)" }
        let left = certificate.timeLeft(at: now)
        var state: String
        if now < certificate.notValidBefore {
            state = "not valid yet (starts in \(DurationText.format(certificate.notValidBefore.timeIntervalSince(now))))"
        } else if left <= 0 {
            state = "EXPIRED \(DurationText.format(-left)) ago"
        } else {
            let percent = Int((left / max(certificate.lifetime, 1) * 100).rounded())
            state = "\(DurationText.format(left)) (\(percent)% of its \(DurationText.format(certificate.lifetime)) lifetime)"
            if certificate.isDueForRenewal(at: now) { state += ": renew soon" }
        }
        print("  subject:   \(certificate.subject)")
        print("  SANs:      \(names.isEmpty ? "none" : names.joined(separator: ", "))")
        print("  issuer:    \(certificate.issuer)")
        print("  serial:    \(certificate.serialHex)")
        print("  validity:  \(DateText.format(certificate.notValidBefore)) to \(DateText.format(certificate.notValidAfter))")
        print("  time left: \(state)")
    }

    private func describe(_ crl: CertificateRevocationList, now: Date) {
        print("  issuer:      \(crl.issuer)")
        print("  this update: \(DateText.format(crl.thisUpdate))")
        if let next = crl.nextUpdate {
            let left = next.timeIntervalSince(now)
            print("  next update: \(DateText.format(next)) (\(left > 0 ? "in \(DurationText.format(left))" : "EXPIRED \(DurationText.format(-left)) ago"))")
        } else {
            print("  next update: none")
        }
        let serials = crl.revoked.keys.map { $0.map { String(format: "%02X", $0) }.joined() }.sorted()
        print("  revoked:     \(serials.isEmpty ? "none" : serials.joined(separator: ", "))")
    }
}
