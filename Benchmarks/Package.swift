// swift-tools-version: 6.1
import PackageDescription

// The benchmarks live in their own package so that ordo-one/benchmark (and its build time) stays
// out of the main package. Run them from this directory: `swift package benchmark` (see README.md).
let package = Package(
    name: "swift-mtls-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "swift-mtls", path: ".."),
        // The MallocInterposer trait gives malloc counts on Swift 6.3 without jemalloc. Naming the
        // traits explicitly also leaves out the default RuntimeInterposer trait (ARC counters), whose
        // package is not available here.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        // SwiftNIO + NIOSSL, for the same-run comparison server (compare-servers.sh builds it with -c release).
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // BoringSSL's cryptography on its own, for library-floor.sh (the main package already depends on it).
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .executableTarget(
            name: "MTLSBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "TLSContract", package: "swift-mtls"),
                .product(name: "TLSBackends", package: "swift-mtls"),
                .product(name: "PKI", package: "swift-mtls"),
            ],
            path: "Benchmarks/MTLSBenchmarks",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]),
        .executableTarget(
            name: "nio-hello-server",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/NIOHelloServer"),
        .executableTarget(
            name: "crypto-floor",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            path: "Benchmarks/CryptoFloor"),
    ],
    swiftLanguageModes: [.v6]
)
