import ArgumentParser
import Dispatch
import Foundation
import PKI
import TLSContract
import X509

/// `mtls pki renew`: a new key and certificate for the server or the client of a PKI directory.
struct PKIRenew: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "renew",
        abstract: "Renew the server or client certificate of a PKI directory: new key, same names, same issuer.",
        discussion: """
            Same subject, SANs, EKU and key type; signed by the CA of DIR that issued the current one (the \
            intermediate when `pki init --intermediate` made one; the new root after `rotate reissue`); valid \
            as long as the current one was issued for, unless --valid is given. Writes the key, then the \
            certificate, each to a temporary file renamed into place: servers and clients started with \
            --pki DIR pick the pair up through their file watch without dropping a connection.

            --watch keeps running and renews at two thirds of the certificate's lifetime (±10 % jitter, so a \
            fleet does not renew at once), like `step ca renew --daemon`; it logs each renewal and the next \
            one, and exits cleanly on SIGTERM or SIGINT.
            """)

    @Option(help: ArgumentHelp("The PKI directory (made by `mtls pki init`).", valueName: "dir"))
    var pki: String

    @Flag(exclusivity: .exclusive)
    var role: PKIIssue.Role

    @Option(help: ArgumentHelp("How long the renewed certificate is valid, from now: 90s, 15m, 1h, 30d or 2y (default: as long as the current one was issued for).",
                               valueName: "duration"),
            transform: LeafValidity.parse)
    var valid: TimeInterval?

    @Flag(help: "Keep running: renew at 2/3 of each certificate's lifetime (±10 % jitter) until SIGTERM or SIGINT.")
    var watch = false

    var leafRole: PKIDirectory.LeafRole { role == .server ? .server : .client }

    func run() throws {
        try PKIArguments.reportingErrors("pki renew") {
            let directory = PKIDirectory(pki)
            if watch {
                try RenewalDaemon(directory: directory, role: leafRole, validFor: valid).run()
            } else {
                let issued = try directory.renew(leafRole, validFor: valid)
                print(Self.describe(issued, role: leafRole, directory: directory))
            }
        }
    }

    static func describe(_ issued: IssuedCertificate, role: PKIDirectory.LeafRole, directory: PKIDirectory) -> String {
        let certificate = issued.certificate
        return "renewed \(directory.certificatePath(role)) and \(directory.keyPath(role)): serial \(hex(certificate.serialNumber)), "
            + "issued by \(certificate.issuer.commonName ?? "\(certificate.issuer)"), valid until \(DateText.format(certificate.notValidAfter))"
    }

    static func hex(_ serial: Certificate.SerialNumber) -> String {
        CertificateRevocationListDocument.Entry(serial: Array(serial.bytes), revocationDate: Date(), reason: nil).serialHex
    }
}

/// The loop behind `pki renew --watch`.
struct RenewalDaemon {
    let directory: PKIDirectory
    let role: PKIDirectory.LeafRole
    let validFor: TimeInterval?

    /// Two thirds of the lifetime, ±10 % of that, from when the certificate was issued.
    static func renewalTime(of certificate: Certificate, now: Date = Date(),
                            jitter: Double = Double.random(in: -0.1...0.1)) -> Date {
        let lifetime = PKIDirectory.issuedLifetime(of: certificate)
        return PKIDirectory.issuedAt(certificate, now: now).addingTimeInterval(lifetime * 2 / 3 * (1 + jitter))
    }

    func run() throws {
        let stop = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        defer { sources.forEach { $0.cancel() } }
        // The renewal time of each certificate is drawn once (its jitter too), and kept until the
        // file holds another certificate (ours, or one renewed by someone else meanwhile).
        var plan: (serial: Certificate.SerialNumber, due: Date)?
        while true {
            let current = try directory.leaf(role)
            if plan?.serial != current.serialNumber {
                plan = (current.serialNumber, Self.renewalTime(of: current))
                say("next renewal of \(directory.certificatePath(role)) at \(DateText.format(plan!.due)) (in \(Self.text(max(0, plan!.due.timeIntervalSinceNow))))")
            }
            if plan!.due <= Date() {
                let issued = try directory.renew(role, validFor: validFor)
                say(PKIRenew.describe(issued, role: role, directory: directory))
                continue
            }
            if stop.wait(timeout: .now() + plan!.due.timeIntervalSinceNow) == .success {
                say("stopping (signal): \(directory.certificatePath(role)) stays as it is")
                return
            }
        }
    }

    private func say(_ line: String) {
        FileHandle.standardOutput.write(Data("\(DateText.format(Date())) \(line)\n".utf8))
    }

    static func text(_ seconds: TimeInterval) -> String {
        if seconds < 120 { return String(format: "%.0f s", seconds) }
        if seconds < 7200 { return String(format: "%.0f min", seconds / 60) }
        if seconds < 172_800 { return String(format: "%.1f h", seconds / 3600) }
        return String(format: "%.1f days", seconds / 86400)
    }
}

/// `mtls pki revoke`: lists a certificate in DIR/crl.pem.
struct PKIRevoke: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke a certificate: add its serial to DIR/crl.pem, signed by the CA that issued it.",
        discussion: """
            crl.pem holds one CRL per CA of the directory (the root, the intermediate, and during a root \
            rotation the new root). The certificate's serial goes into the CRL of its issuer (created when \
            missing); entries already listed stay; the CRL number counts up; thisUpdate is now and \
            nextUpdate --next-update from now. Servers started with --crl DIR/crl.pem reload it through \
            their file watch and refuse the certificate from the next handshake on ("revoked", with its \
            serial); sessions resumed from tickets issued before are refused too.

            A CRL past its nextUpdate makes servers refuse every certificate it covers: without --cert, \
            this command only signs the CRLs again with new dates (run it before --next-update runs out, \
            e.g. daily from cron).
            """)

    @Option(help: ArgumentHelp("The PKI directory (made by `mtls pki init`).", valueName: "dir"))
    var pki: String

    @Option(help: ArgumentHelp("The certificate to revoke (PEM; the first certificate of the file). Without it, the CRLs are only re-signed.",
                               valueName: "file"))
    var cert: String?

    @Option(help: ArgumentHelp("Why: \(RevocationReason.allCases.map(\.description).joined(separator: ", ")) (default: none given).",
                               valueName: "reason"),
            transform: { text in
                guard let reason = RevocationReason(name: text) else {
                    throw ValidationError("unknown --reason '\(text)': choose \(RevocationReason.allCases.map(\.description).joined(separator: ", "))")
                }
                return reason
            })
    var reason: RevocationReason?

    @Option(name: .customLong("next-update"),
            help: ArgumentHelp("How long the CRL is current: 1h, 7d... (default: 7d).", valueName: "duration"),
            transform: { try LeafValidity.duration($0, option: "--next-update") })
    var nextUpdate: TimeInterval = PKIDirectory.defaultCRLValidity

    func run() throws {
        try PKIArguments.reportingErrors("pki revoke") {
            let directory = PKIDirectory(pki)
            guard let cert else {
                try directory.refreshCRLs(nextUpdateIn: nextUpdate)
                for block in try directory.crls() {
                    print("signed the CRL of \(block.document.issuer.commonName ?? "\(block.document.issuer)") again: number \(block.document.number), \(block.document.entries.count) revoked, next update \(DateText.format(block.document.nextUpdate))")
                }
                return
            }
            let certificate = try PKIArguments.pemCertificates(try PKIArguments.readText(cert)).first.map {
                try Certificate(pemEncoded: $0)
            }
            guard let certificate else { throw PKIArguments.Failure("\(cert): no certificate found in the PEM file") }
            let result = try directory.revoke(certificate, reason: reason, nextUpdateIn: nextUpdate)
            let issuer = try directory.crls().first { $0.document.lists(serial: Array(certificate.serialNumber.bytes)) }
            let subject = certificate.subject.commonName ?? "\(certificate.subject)"
            if result.alreadyListed {
                print("serial \(result.serialHex) (\(subject)) was already revoked; \(directory.crl) re-signed")
            } else {
                print("revoked serial \(result.serialHex) (\(subject))\(reason.map { ", reason \($0)" } ?? "")")
            }
            if let issuer {
                print("\(directory.crl): CRL of \(issuer.document.issuer.commonName ?? "\(issuer.document.issuer)") number \(issuer.document.number), \(issuer.document.entries.count) revoked, next update \(DateText.format(issuer.document.nextUpdate))")
            }
        }
    }
}

/// `mtls pki rotate begin|reissue|finish`: a staged root rotation.
struct PKIRotate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Replace the root CA in three stages, each safe to deploy everywhere before the next: begin, reissue, finish.",
        discussion: """
            1. begin: a new root (ca-next.pem, ca-next.key) and ca.pem becomes the bundle old + new root. \
            Leaves are unchanged. Wait until every server and client has reloaded ca.pem (file watch or SIGHUP): \
            from then on everyone trusts both roots.
            2. reissue: the server and client certificates are renewed under the new root. Peers accept them \
            because they already trust the new root (stage 1). Wait until every peer serves its new leaf.
            3. finish: ca.pem holds the new root only, ca.key is its key; the old root's certificate, key and CRL \
            move to DIR/retired/ (never deleted). Safe once no certificate from the old root is in use.
            Run out of order, a stage refuses (exit 1) and says which stage comes first.
            """,
        subcommands: [Begin.self, Reissue.self, Finish.self])

    struct Options: ParsableArguments {
        @Option(help: ArgumentHelp("The PKI directory (made by `mtls pki init`).", valueName: "dir"))
        var pki: String

        /// Runs one stage on the directory; a failure (an out-of-order stage too) is one line and exit 1.
        func perform(_ stage: String, _ body: (PKIDirectory) throws -> Void) throws {
            try PKIArguments.reportingErrors("pki rotate \(stage)") { try body(PKIDirectory(pki)) }
        }
    }

    struct Begin: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stage 1: make a new root and put old + new root in ca.pem (deploy it everywhere before reissue).")
        @OptionGroup var options: Options

        func run() throws {
            try options.perform("begin") { directory in
                let next = try directory.rotateBegin()
                print("new root \(next.commonName ?? "") (serial \(PKIRenew.hex(next.certificate.serialNumber))): wrote \(directory.nextRootCertificate), \(directory.nextRootKey)")
                print("\(directory.layout.caCertificate) now holds the old and the new root; \(directory.crl) holds a CRL of each")
                print("next: let every server and client reload ca.pem, then run `mtls pki rotate reissue --pki \(PKIArguments.shellQuoted(options.pki))`")
            }
        }
    }

    struct Reissue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stage 2: renew the server and client certificates under the new root (after begin has reached every peer).")
        @OptionGroup var options: Options

        func run() throws {
            try options.perform("reissue") { directory in
                let (server, client) = try directory.rotateReissue()
                print(PKIRenew.describe(server, role: .server, directory: directory))
                print(PKIRenew.describe(client, role: .client, directory: directory))
                print("next: once every peer serves its new certificate, run `mtls pki rotate finish --pki \(PKIArguments.shellQuoted(options.pki))`")
            }
        }
    }

    struct Finish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stage 3: drop the old root from ca.pem; its files move to DIR/retired/ (after reissue has reached every peer).")
        @OptionGroup var options: Options

        func run() throws {
            try options.perform("finish") { directory in
                let retired = try directory.rotateFinish()
                print("\(directory.layout.caCertificate) now holds the new root only; \(directory.layout.caKey) is its key")
                for file in retired { print("retired \(file)") }
            }
        }
    }
}

extension DistinguishedName {
    var commonName: String? {
        lazy.flatMap { $0 }.first { $0.type == .RDNAttributeType.commonName }.map { String(describing: $0.value) }
    }
}
