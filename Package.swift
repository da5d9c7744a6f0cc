// swift-tools-version:6.0
import PackageDescription

// One module per pipeline stage (see docs/architecture.md); data flows one way:
// FathomCapture → FathomWire → FathomFlows → FathomRecords, wired by FathomPipeline.
// Hot-path modules skip the run-time exclusivity check in release builds (debug builds and the
// tests keep it): each stage is single-threaded, and the check costs a few percent per packet.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
  name: "Fathom",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "fathom", targets: ["fathom"]),
    .library(name: "FathomPipeline", targets: ["FathomPipeline"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
  ],
  targets: [
    .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),
    .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
    // The live API's HTTPS client: a custom CA and client certificates, which URLSession on Linux lacks.
    // libcurl's headers only: the library is opened on first use (Sources/CCurl/include/ccurl.h).
    .target(name: "CCurl", linkerSettings: [.linkedLibrary("dl")]),
    .target(name: "CNetns"),
    // Allocator settings: glibc's mmap threshold for long analyses, huge pages for packet tables.
    .target(name: "CMemory"),
    .target(name: "FathomRecords", swiftSettings: hotPath),
    .target(name: "FathomCapture", dependencies: ["CPcap", "CZlib", "CNetns"], swiftSettings: hotPath),
    .target(name: "FathomWire", dependencies: ["FathomRecords"], swiftSettings: hotPath),
    .target(name: "FathomFlows", dependencies: ["CMemory", "FathomWire", "FathomRecords"], swiftSettings: hotPath),
    .target(
      name: "FathomProtocols", dependencies: ["CMemory", "FathomFlows", "FathomWire", "FathomRecords"],
      swiftSettings: hotPath),
    .target(
      name: "FathomPipeline",
      dependencies: ["FathomCapture", "FathomWire", "FathomFlows", "FathomProtocols", "FathomRecords"]),
    // Kubernetes context: objects (JSON/YAML), the cluster index over time, AutoTagging.
    // HTTP(S) through libcurl: private CAs and client certificates (API servers, ClickHouse).
    .target(name: "FathomHTTP", dependencies: ["CCurl"]),
    .target(
      name: "FathomKube", dependencies: ["FathomRecords", "FathomHTTP", .product(name: "Yams", package: "Yams")]),
    // Storage behind one protocol: SQLite (GRDB) embedded, SmartEncoding dictionaries.
    .target(
      name: "FathomStore",
      dependencies: [
        "FathomRecords", "FathomKube", "FathomHTTP", .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "GRDBSQLite", package: "GRDB.swift"),
      ], swiftSettings: hotPath),
    // AutoTracing: a request's spans across observation points, proxies and services.
    .target(name: "FathomTracing", dependencies: ["FathomStore"]),
    // The runbook: six steps over the store, objects and samples; a ranked verdict.
    .target(name: "FathomDiagnosis", dependencies: ["FathomStore", "FathomKube", "FathomTracing"]),
    // `fathom analyze`: pipeline → tagging → store → summary.
    .target(
      name: "FathomAnalyze",
      dependencies: [
        "FathomPipeline", "FathomKube", "FathomStore", "FathomTracing", "FathomDiagnosis", "FathomLab", "FathomRecords",
        "CMemory", .product(name: "Yams", package: "Yams"),
      ]),
    // The lab: a Kubernetes data plane from network namespaces (docs/lab.md). Not a pipeline stage;
    // it produces what the pipeline reads (captures, objects, samples, load truth).
    .target(
      name: "FathomLab",
      dependencies: ["FathomCapture", .product(name: "Yams", package: "Yams")]),
    .executableTarget(
      name: "fathom",
      dependencies: [
        "FathomPipeline",
        "FathomLab",
        "FathomAnalyze",
        "FathomStore",
        "FathomHTTP",
        "FathomTracing",
        "FathomDiagnosis",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    // libFuzzer entry point for the decoder; built only by `make fuzz` with -sanitize=fuzzer.
    .executableTarget(name: "FathomDecodeFuzz", dependencies: ["FathomWire", "FathomFlows", "FathomProtocols"]),
    // Frame and capture-file builders shared by the unit tests.
    .target(name: "FathomTestSupport", dependencies: ["FathomRecords"], path: "Tests/FathomTestSupport"),
    .testTarget(name: "FathomWireTests", dependencies: ["FathomWire", "FathomTestSupport"]),
    .testTarget(name: "FathomCaptureTests", dependencies: ["FathomCapture", "FathomPipeline", "FathomTestSupport"]),
    .testTarget(name: "FathomFlowsTests", dependencies: ["FathomFlows", "FathomWire", "FathomTestSupport"]),
    .testTarget(
      name: "FathomProtocolsTests",
      dependencies: ["FathomProtocols", "FathomFlows", "FathomWire", "FathomRecords", "FathomTestSupport"]),
    .testTarget(name: "FathomRecordsTests", dependencies: ["FathomRecords"]),
    .testTarget(
      name: "FathomLabTests",
      dependencies: ["FathomLab", "FathomAnalyze", "FathomStore", "FathomTracing", "FathomDiagnosis", "FathomKube"]),
    .testTarget(name: "FathomTracingTests", dependencies: ["FathomTracing", "FathomStore"]),
    .testTarget(name: "FathomAnalyzeTests", dependencies: ["FathomAnalyze", "FathomKube", "FathomRecords"]),
    .testTarget(
      name: "FathomDiagnosisTests", dependencies: ["FathomDiagnosis", "FathomStore", "FathomKube", "FathomRecords"]),
    .testTarget(name: "FathomKubeTests", dependencies: ["FathomKube", "FathomRecords", "FathomTestSupport"]),
    .testTarget(
      name: "FathomStoreTests",
      dependencies: ["FathomStore", "FathomKube", "FathomHTTP", "FathomRecords", "FathomTestSupport"]),
    .testTarget(
      name: "OracleTests", dependencies: ["FathomPipeline", "FathomCapture", "FathomWire", "FathomFlows"],
      exclude: ["Fixtures"]),
  ],
  swiftLanguageModes: [.v6]
)
