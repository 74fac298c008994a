// Dataset specs as the command line writes them, and an in-memory dataset for tests and tools.

import Foundation

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
public let fashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

/// Opens the split (`train` true: training, false: test/validation) named by `spec`:
///
/// | spec               | reader                                                          |
/// |--------------------|-----------------------------------------------------------------|
/// | `idx:DIR`          | `IDXDataset` (MNIST format, raw or `.gz`)                       |
/// | `fashion-mnist`    | `idx:/usr/share/datasets/fashion-mnist`                         |
/// | `cifar10:DIR`      | `CIFARDataset`, CIFAR-10 binary                                 |
/// | `cifar100:DIR`     | `CIFARDataset`, CIFAR-100 binary (fine labels)                  |
/// | `folder:DIR`       | `ImageFolderDataset` on `DIR/train` or `DIR/val`                |
///
/// A malformed spec, a missing directory or files of the wrong format throw a one-line
/// `DatasetError`.
public func openDataset(_ spec: String, train: Bool) throws -> Dataset {
    let kinds = "idx:DIR, cifar10:DIR, cifar100:DIR, folder:DIR or fashion-mnist"
    if spec == "fashion-mnist" {
        return try openDataset("idx:" + fashionMNISTDirectory, train: train)
    }
    guard let colon = spec.firstIndex(of: ":") else {
        throw DatasetError("dataset '\(spec)': expected \(kinds)")
    }
    let kind = String(spec[..<colon]), directory = String(spec[spec.index(after: colon)...])
    guard ["idx", "cifar10", "cifar100", "folder"].contains(kind) else {
        throw DatasetError("dataset '\(spec)': unknown kind '\(kind)', expected \(kinds)")
    }
    guard !directory.isEmpty else { throw DatasetError("dataset '\(spec)': no directory after '\(kind):'") }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
        if directory == fashionMNISTDirectory {
            throw DatasetError("\(spec): no such directory (install Debian's dataset-fashion-mnist: make deps)")
        }
        throw DatasetError("\(spec): no such directory")
    }
    guard isDirectory.boolValue else { throw DatasetError("\(spec): not a directory") }
    switch kind {
    case "idx": return try IDXDataset(directory: directory, train: train)
    case "cifar10": return try CIFARDataset(directory: directory, variant: .cifar10, train: train)
    case "cifar100": return try CIFARDataset(directory: directory, variant: .cifar100, train: train)
    default: return try ImageFolderDataset(root: directory, split: train ? "train" : "val")
    }
}

/// Images and labels held in arrays: for tests, benchmarks and small generated sets.
public struct ArrayDataset: Dataset {
    /// The images, in dataset order.
    public let images: [Image8]
    public let labels: [Int]
    public let classNames: [String]
    public let name: String
    public var count: Int { images.count }
    public var channels: Int { images.first?.channels ?? 3 }

    /// A dataset over `images` with `labels` (each < `classNames.count`); all images must have the
    /// same channel count.
    public init(images: [Image8], labels: [Int], classNames: [String], name: String = "array") {
        precondition(images.count == labels.count, "ArrayDataset: \(images.count) images, \(labels.count) labels")
        precondition(labels.allSatisfy { $0 >= 0 && $0 < classNames.count }, "ArrayDataset: label out of range")
        precondition(Set(images.map(\.channels)).count <= 1, "ArrayDataset: mixed channel counts")
        (self.images, self.labels, self.classNames, self.name) = (images, labels, classNames, name)
    }

    public func image(at index: Int) throws -> Image8 { images[index] }
}
