// Helpers of the Datasets tests: the real assets (fetched by `make assets`), Fashion-MNIST
// (installed by `make deps`), temporary folders, and small synthetic datasets.

import Foundation
import Testing
import _TestSupport
@testable import Datasets
import ImageIO
import TensorCore

/// <repo>/.assets/foolbox, where `make assets` puts the CIFAR, ImageNet and MNIST sample images.
let foolboxDirectory = fixturesDirectory.deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent(".assets/foolbox").path

/// The foolbox images whose names start with `prefix` (`cifar10_`, `cifar100_`, `imagenet_`,
/// `fashionMNIST_`), sorted, as (path, label from the name `<prefix><i>_<label>.<ext>`). Fails
/// the test when the assets are missing.
func foolboxImages(_ prefix: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [(path: String, label: Int)] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: foolboxDirectory)) ?? []
    let matching = names.filter { $0.hasPrefix(prefix) }.sorted()
    try #require(matching.count >= 10, "missing test images \(foolboxDirectory)/\(prefix)*: run `make assets`",
                 sourceLocation: sourceLocation)
    return try matching.map { name in
        let stem = (name as NSString).deletingPathExtension
        let label = try #require(Int(stem.split(separator: "_").last ?? ""), "no label in \(name)", sourceLocation: sourceLocation)
        return ((foolboxDirectory as NSString).appendingPathComponent(name), label)
    }
}

/// Fashion-MNIST as Debian's dataset-fashion-mnist installs it; fails the test when absent.
func requireFashionMNIST(sourceLocation: SourceLocation = #_sourceLocation) throws {
    let file = fashionMNISTDirectory + "/train-images-idx3-ubyte.gz"
    try #require(FileManager.default.fileExists(atPath: file),
                 "Fashion-MNIST is missing (\(file)): run `make deps` (installs Debian's dataset-fashion-mnist)",
                 sourceLocation: sourceLocation)
}

/// The training split, read once for all tests.
let fashionTrain = Result { try IDXDataset(directory: fashionMNISTDirectory, train: true) }

/// A fresh empty folder under the system temporary directory, removed by `cleanup`.
final class TemporaryDirectory {
    let path: String
    init(_ tag: String = "datasets") throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("\(tag)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ relative: String) -> String { (path as NSString).appendingPathComponent(relative) }

    /// Writes `bytes` to `relative`, creating folders.
    @discardableResult
    func write(_ relative: String, _ bytes: [UInt8]) throws -> String {
        let p = file(relative)
        try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }
}

/// Runs `gzip -kf path` (Debian's gzip), leaving path.gz beside it.
func gzipFile(_ path: String) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", "gzip -kf -n \"$0\"", path]
    try p.run()
    p.waitUntilExit()
    try #require(p.terminationStatus == 0, "gzip failed on \(path)")
}

/// Big-endian 32-bit.
func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }

/// An IDX file: magic 00 00 08 <dims>, sizes, data.
func idxBytes(sizes: [Int], data: [UInt8]) -> [UInt8] {
    [0, 0, 8, UInt8(sizes.count)] + sizes.flatMap(be32) + data
}

/// `n` random images of width × height × channels with labels cycling through `classes`.
func randomDataset(count n: Int, width: Int, height: Int, channels: Int, classes: Int, seed: UInt64) -> ArrayDataset {
    var g = SeededGenerator(seed: seed)
    let images = (0..<n).map { _ in
        Image8(width: width, height: height, channels: channels,
               pixels: (0..<width * height * channels).map { _ in UInt8(truncatingIfNeeded: g.next()) })
    }
    return ArrayDataset(images: images, labels: (0..<n).map { $0 % classes },
                        classNames: (0..<classes).map(String.init), name: "random")
}

/// Every batch a stream yields.
func drain(_ stream: BatchStream) throws -> [Batch] {
    var out: [Batch] = []
    while let b = try stream.next() { out.append(b) }
    return out
}

/// Bit-exact equality of batches.
func sameBatches(_ a: [Batch], _ b: [Batch]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { x, y in
        x.labels == y.labels && x.indices == y.indices && x.images.shape == y.images.shape
            && x.images.scalars.map(\.bitPattern) == y.images.scalars.map(\.bitPattern)
    }
}
