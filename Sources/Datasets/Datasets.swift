// Datasets: the interface the trainer and the data loader share. Readers (IDX, CIFAR binary,
// ImageFolder), transforms, samplers and the loader live in the other files of this module.

import TensorCore

/// A decoded 8-bit image, height × width × channels interleaved (channels 1 = gray, 3 = RGB).
public struct Image8: Sendable, Equatable {
    public var width: Int, height: Int, channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "Image8: \(pixels.count) bytes for \(width)×\(height)×\(channels)")
        (self.width, self.height, self.channels, self.pixels) = (width, height, channels, pixels)
    }
}

/// A labelled image collection. Reading one image may fail (a corrupt file in an ImageFolder).
public protocol Dataset: Sendable {
    /// Number of samples.
    var count: Int { get }
    /// Class names, index = label.
    var classNames: [String] { get }
    /// The label of every sample (samplers use these without decoding images).
    var labels: [Int] { get }
    /// Channels of every image (1 or 3).
    var channels: Int { get }
    /// Where the samples come from, for messages (`idx:/usr/share/datasets/fashion-mnist (train)`).
    var name: String { get }
    /// The decoded image at `index` (0 ..< count).
    func image(at index: Int) throws -> Image8
}

/// A batch as the trainer consumes it.
public struct Batch: Sendable {
    /// [N, C, H, W] float32, transformed and normalised.
    public var images: Tensor
    /// Class labels, N of them.
    public var labels: [Int]
    /// Dataset indices of the samples, in batch order.
    public var indices: [Int]

    public init(images: Tensor, labels: [Int], indices: [Int]) {
        (self.images, self.labels, self.indices) = (images, labels, indices)
    }
}

/// A dataset error in one line (missing path, wrong format, corrupt file).
public struct DatasetError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
