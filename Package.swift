// swift-tools-version:6.0
import PackageDescription

// One module per pipeline stage (see docs/architecture.md); data flows one way:
// FathomCapture → FathomWire → FathomFlows → FathomRecords, wired by FathomPipeline.
let package = Package(
  name: "Fathom",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "fathom", targets: ["fathom"]),
    .library(name: "FathomPipeline", targets: ["FathomPipeline"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
  ],
  targets: [
    .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),
    .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
    .target(name: "CNetns"),
    .target(name: "FathomRecords"),
    .target(name: "FathomCapture", dependencies: ["CPcap", "CZlib", "CNetns"]),
    .target(name: "FathomWire", dependencies: ["FathomRecords"]),
    .target(name: "FathomFlows", dependencies: ["FathomWire", "FathomRecords"]),
    .target(name: "FathomProtocols", dependencies: ["FathomFlows", "FathomWire", "FathomRecords"]),
    .target(
      name: "FathomPipeline",
      dependencies: ["FathomCapture", "FathomWire", "FathomFlows", "FathomProtocols", "FathomRecords"]),
    .executableTarget(
      name: "fathom",
      dependencies: [
        "FathomPipeline",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    // libFuzzer entry point for the decoder; built only by `make fuzz` with -sanitize=fuzzer.
    .executableTarget(name: "FathomDecodeFuzz", dependencies: ["FathomWire", "FathomFlows"]),
    // Frame and capture-file builders shared by the unit tests.
    .target(name: "FathomTestSupport", dependencies: ["FathomRecords"], path: "Tests/FathomTestSupport"),
    .testTarget(name: "FathomWireTests", dependencies: ["FathomWire", "FathomTestSupport"]),
    .testTarget(name: "FathomCaptureTests", dependencies: ["FathomCapture", "FathomPipeline", "FathomTestSupport"]),
    .testTarget(name: "FathomFlowsTests", dependencies: ["FathomFlows", "FathomWire", "FathomTestSupport"]),
    .testTarget(
      name: "OracleTests", dependencies: ["FathomPipeline", "FathomCapture", "FathomWire", "FathomFlows"],
      exclude: ["Fixtures"]),
  ],
  swiftLanguageModes: [.v6]
)
