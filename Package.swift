// swift-tools-version:6.0
// SENet in Swift — Squeeze-and-Excitation networks on a PyTorch-exact tensor core (oneDNN backend).
import PackageDescription

let package = Package(
    name: "SENet",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "SENet", targets: ["SENet"]),
        .executable(name: "senet", targets: ["senet"]),
        .executable(name: "senet-bench", targets: ["senet-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // oneDNN (Debian libdnnl-dev 2.6.x). No pkg-config file ships, so the module map links `dnnl`.
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        // Streaming (non-temporal) stores, which Swift cannot spell: inline C, inlined into Kernels.
        .target(name: "CStreamingStore", path: "Sources/CStreamingStore"),
        .target(name: "Kernels", dependencies: ["CDNNL", "CStreamingStore"]),
        .target(name: "TensorCore", dependencies: ["Kernels"]),
        .target(name: "NN", dependencies: ["TensorCore"]),
        .target(name: "Models", dependencies: ["NN", "TensorCore"]),
        // libjpeg-turbo (TurboJPEG API) and libpng; the PNG shim is C because libpng reports errors by longjmp.
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG", providers: [.apt(["libturbojpeg0-dev"])]),
        .target(name: "CPNG", path: "Sources/CPNG", linkerSettings: [.linkedLibrary("png16")]),
        .target(name: "ImageIO", dependencies: ["TensorCore", "CTurboJPEG", "CPNG"]),
        .target(name: "Checkpoints", dependencies: ["TensorCore", "NN", "Models"]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "Datasets", dependencies: ["TensorCore", "ImageIO", "CZlib"]),
        // Open MPI, loaded with dlopen only by processes mpirun starts: builds and runs without it installed.
        .target(name: "CMPIShim", path: "Sources/CMPIShim", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "Distributed", dependencies: ["CMPIShim"]),
        .target(name: "Training", dependencies: ["Kernels", "TensorCore", "NN", "Models", "Checkpoints", "Datasets", "Distributed"]),
        .target(name: "SENet", dependencies: ["Kernels", "TensorCore", "NN", "Models", "Checkpoints", "ImageIO", "Datasets", "Distributed", "Training"]),
        .executableTarget(name: "senet", dependencies: [
            "SENet", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "senet-bench", dependencies: [
            "SENet", "Kernels", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "_TestSupport", dependencies: ["TensorCore", "Kernels"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "_TestSupport"]),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "NN", "Kernels", "_TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Kernels", "Models", "NN", "TensorCore", "_TestSupport"]),
        .testTarget(name: "CheckpointsTests", dependencies: ["Checkpoints", "Models", "NN", "TensorCore", "_TestSupport"]),
        .testTarget(name: "ImageIOTests", dependencies: ["ImageIO", "TensorCore", "_TestSupport"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "ImageIO", "TensorCore", "_TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Datasets", "Models", "NN", "TensorCore", "Checkpoints", "_TestSupport"]),
        .testTarget(name: "DistributedTests", dependencies: ["senet", "Distributed", "Training", "Datasets", "Models", "NN", "TensorCore", "Kernels", "Checkpoints", "_TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["senet", "Checkpoints", "Datasets", "ImageIO", "Models", "NN", "TensorCore", "_TestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
