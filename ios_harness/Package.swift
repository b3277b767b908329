// swift-tools-version:5.9
// The pure-Swift harness core (no runtime dependency) and its XCTest suite: `swift test` on macOS.
// The app target that links LibTorch-Lite, ExecuTorch and Core ML lives in App/ (see README).
import PackageDescription

let package = Package(
    name: "ALiSNetHarness",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "ALiSNetCore", targets: ["ALiSNetCore"]),
    ],
    targets: [
        .target(name: "ALiSNetCore"),
        .testTarget(name: "ALiSNetCoreTests", dependencies: ["ALiSNetCore"]),
    ]
)
