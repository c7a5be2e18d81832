// swift-tools-version: 6.1
import PackageDescription

// Dependencies point down only: Apps -> Proxy -> Loop -> TLSContract <- backends <- C modules.
// Each backend imports only its own C module; nothing above the backends sees a C type.
let package = Package(
    name: "swift-mtls",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mtls", targets: ["Apps"]),
        .library(name: "TLSContract", targets: ["TLSContract"]),
        .library(name: "TLSBackends", targets: ["TLSBackends"]),
        .library(name: "PKI", targets: ["PKI"]),
        .library(name: "Loop", targets: ["Loop"]),
        .library(name: "Proxy", targets: ["Proxy"]),
        .library(name: "Service", targets: ["Service"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // System libraries, found through pkg-config. Their headers also carry the small
        // static-inline shims for macros Swift cannot call (see each shim.h).
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CGnuTLS", pkgConfig: "gnutls",
            providers: [.apt(["libgnutls28-dev"])]),
        .systemLibrary(
            name: "CLibUV", pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]),

        .target(
            name: "TLSContract",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]),
        .target(name: "TLSBackendOpenSSL", dependencies: ["TLSContract", "COpenSSL"]),
        .target(name: "TLSBackendGnuTLS", dependencies: ["TLSContract", "CGnuTLS"]),
        .target(
            name: "Loop",
            dependencies: ["TLSContract", "CLibUV", .product(name: "Logging", package: "swift-log")]),
        .target(name: "TLSBackends", dependencies: ["TLSContract", "TLSBackendOpenSSL", "TLSBackendGnuTLS"]),
        .target(
            name: "PKI",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]),
        .target(name: "HTTPHello", dependencies: ["TLSContract"]),
        .target(
            name: "Proxy",
            dependencies: ["Loop", "TLSContract", .product(name: "Logging", package: "swift-log")]),
        // What every server and long-lived client shares: credentials that reload (files, SIGHUP,
        // an interval) into a context provider the Loop asks per connection; expiry warnings.
        // Status and metrics too: counted through the swift-metrics API with a factory the app passes
        // in (the Prometheus exporter is wired in Apps only).
        .target(
            name: "Service",
            dependencies: ["Loop", "TLSContract", "TLSBackends", "HTTPHello",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "Metrics", package: "swift-metrics")]),
        .executableTarget(
            name: "Apps",
            dependencies: [
                "TLSContract", "TLSBackends", "TLSBackendOpenSSL", "PKI", "Loop", "HTTPHello", "Proxy", "Service",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),

        .target(name: "TestSupport", dependencies: ["TLSContract", "PKI"], path: "Tests/TestSupport"),
        // The GnuTLS backend directly too: its test hook sends the warning alerts OpenSSL cannot.
        .testTarget(name: "ConformanceTests",
                    dependencies: ["TestSupport", "TLSContract", "TLSBackends", "TLSBackendGnuTLS", "PKI"]),
        .testTarget(name: "LoopTests", dependencies: ["Loop", "TLSBackends", "TLSContract", "TestSupport"]),
        .testTarget(name: "HTTPHelloTests", dependencies: ["HTTPHello"]),
        .testTarget(
            name: "ServiceTests",
            dependencies: ["Service", "Loop", "TLSBackends", "TLSContract", "TestSupport", "PKI",
                           .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "TLSContractTests",
            dependencies: [
                "TLSContract", "PKI",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]),
        .testTarget(
            name: "ProxyTests",
            dependencies: [
                "Proxy", "Loop", "TLSBackends", "TLSContract", "PKI", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "AppsTests", dependencies: ["TestSupport", "TLSContract"]),
        .testTarget(name: "PKITests", dependencies: ["PKI", "TestSupport"]),
        .testTarget(name: "TLSBackendOpenSSLTests", dependencies: ["TLSBackendOpenSSL", "TestSupport", "COpenSSL"]),
        .testTarget(name: "TLSBackendGnuTLSTests", dependencies: ["TLSBackendGnuTLS", "TestSupport", "CGnuTLS"]),
    ],
    swiftLanguageModes: [.v6]
)
