import TLSContract

/// Every file a configuration reads (certificate chain, key, PKCS#12, each trust root, each CRL),
/// read once, together, into memory. A reload builds its context from the snapshot, never from the
/// files again, so what it compares, builds and reports is one and the same set of bytes even if a
/// writer is busy with the files meanwhile.
struct CredentialSnapshot: Equatable {
    /// The configuration with every `.file(path)` replaced by `.bytes(contents, label: path)`: errors
    /// still name the file.
    let configuration: TLSConfiguration
    /// Path and contents of each file, in configuration order.
    let files: [File]

    struct File: Equatable {
        let path: String
        let contents: [UInt8]
    }

    static func == (lhs: CredentialSnapshot, rhs: CredentialSnapshot) -> Bool { lhs.files == rhs.files }

    /// The paths `configuration` reads, in order: what a file watch watches.
    static func paths(of configuration: TLSConfiguration) -> [String] {
        sources(of: configuration).compactMap { source in
            if case .file(let path) = source { return path }
            return nil
        }
    }

    /// Reads every file; a missing or unreadable one throws the contract's error naming it.
    static func read(_ configuration: TLSConfiguration) throws(TLSError) -> CredentialSnapshot {
        var files: [File] = []
        func snapshot(_ source: TLSConfiguration.Source) throws(TLSError) -> TLSConfiguration.Source {
            guard case .file(let path) = source else { return source }
            let contents = try source.load()
            files.append(File(path: path, contents: contents))
            return .bytes(contents, label: path)
        }
        var copy = configuration
        switch configuration.identity {
        case .pem(let chain, let key)?:
            copy.identity = .pem(certificateChain: try snapshot(chain), privateKey: try snapshot(key))
        case .pkcs12(let bundle, let password)?:
            copy.identity = .pkcs12(try snapshot(bundle), password: password)
        case nil:
            break
        }
        var roots: [TLSConfiguration.Source] = []
        for root in configuration.trustRoots { roots.append(try snapshot(root)) }
        copy.trustRoots = roots
        var crls: [TLSConfiguration.Source] = []
        for crl in configuration.crls { crls.append(try snapshot(crl)) }
        copy.crls = crls
        return CredentialSnapshot(configuration: copy, files: files)
    }

    /// The trust roots' bytes, in order: what decides whether session tickets may outlive a reload.
    var trustRootContents: [[UInt8]] {
        configuration.trustRoots.map { (try? $0.load()) ?? [] }
    }

    /// Where our certificate comes from (the chain file or the PKCS#12 bundle), for messages.
    static func identityName(of configuration: TLSConfiguration) -> String? {
        switch configuration.identity {
        case .pem(let chain, _)?: return chain.name
        case .pkcs12(let bundle, _)?: return bundle.name
        case nil: return nil
        }
    }

    private static func sources(of configuration: TLSConfiguration) -> [TLSConfiguration.Source] {
        var sources: [TLSConfiguration.Source] = []
        switch configuration.identity {
        case .pem(let chain, let key)?: sources += [chain, key]
        case .pkcs12(let bundle, _)?: sources.append(bundle)
        case nil: break
        }
        return sources + configuration.trustRoots + configuration.crls
    }
}
