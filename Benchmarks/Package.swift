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
    ],
    swiftLanguageModes: [.v6]
)
