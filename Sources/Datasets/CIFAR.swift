// The "binary version" of CIFAR-10 and CIFAR-100 (Krizhevsky 2009,
// https://www.cs.toronto.edu/~kriz/cifar.html). Each record is the label byte(s) then a 32×32
// colour image as three 1024-byte planes, red, green, blue, each row-major.
//
//   CIFAR-10:  data_batch_1.bin … data_batch_5.bin (train), test_batch.bin;
//              records of 1 + 3072 bytes: <label 0…9>; names in batches.meta.txt.
//   CIFAR-100: train.bin, test.bin; records of 2 + 3072 bytes: <coarse 0…19><fine 0…99>;
//              fine names in fine_label_names.txt. The fine label is used.

import Foundation

/// A CIFAR-10 or CIFAR-100 binary dataset held in memory (3-channel 32 × 32 images).
public struct CIFARDataset: Dataset {
    /// Which of the two datasets.
    public enum Variant: String, Sendable {
        /// 10 classes, one label byte per record.
        case cifar10
        /// 100 fine classes (20 coarse), two label bytes per record.
        case cifar100

        /// Bytes in front of the pixels in each record.
        public var labelBytes: Int { self == .cifar10 ? 1 : 2 }
        /// Number of (fine) classes.
        public var classCount: Int { self == .cifar10 ? 10 : 100 }
        /// The data files of a split, in reading order.
        public func files(train: Bool) -> [String] {
            switch self {
            case .cifar10: return train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
            case .cifar100: return [train ? "train.bin" : "test.bin"]
            }
        }
        /// The class-name file (one name a line), when the release ships one.
        public var namesFile: String { self == .cifar10 ? "batches.meta.txt" : "fine_label_names.txt" }
        /// The folder the official tarball unpacks to.
        var tarballFolder: String { self == .cifar10 ? "cifar-10-batches-bin" : "cifar-100-binary" }
    }

    /// Side of every image.
    public static let side = 32
    /// Pixel bytes per record (3 planes of 32 × 32).
    public static let imageBytes = 3 * 32 * 32

    public let count: Int
    public let classNames: [String]
    public let labels: [Int]
    public let channels = 3
    public let name: String
    /// CIFAR-100's coarse (superclass) labels; empty for CIFAR-10.
    public let coarseLabels: [Int]
    /// Planar pixels, `count × 3072` bytes, as stored in the files.
    let planes: [UInt8]

    /// Reads the split from `directory` (or from the tarball's folder inside it). Class names come
    /// from `batches.meta.txt` / `fine_label_names.txt` when present, else "0", "1", ….
    /// File lengths must be whole records and every label in range; errors name the file.
    public init(directory: String, variant: Variant, train: Bool) throws {
        let fm = FileManager.default
        var root = directory
        let firstFile = variant.files(train: train)[0]
        let nested = (directory as NSString).appendingPathComponent(variant.tarballFolder)
        if !fm.fileExists(atPath: (root as NSString).appendingPathComponent(firstFile)),
           fm.fileExists(atPath: (nested as NSString).appendingPathComponent(firstFile)) {
            root = nested
        }
        let recordBytes = variant.labelBytes + Self.imageBytes
        var labels: [Int] = [], coarse: [Int] = [], planes: [UInt8] = []
        for file in variant.files(train: train) {
            let path = (root as NSString).appendingPathComponent(file)
            guard fm.fileExists(atPath: path) else {
                throw DatasetError("\(variant.rawValue):\(directory): missing \(file)")
            }
            guard let data = fm.contents(atPath: path) else { throw DatasetError("\(path): cannot read") }
            guard !data.isEmpty, data.count % recordBytes == 0 else {
                throw DatasetError("\(path): \(data.count) bytes is not a whole number of \(recordBytes)-byte \(variant.rawValue) records")
            }
            let n = data.count / recordBytes
            planes.reserveCapacity(planes.count + n * Self.imageBytes)
            try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                let bytes = raw.bindMemory(to: UInt8.self)
                for r in 0..<n {
                    let record = r * recordBytes
                    let fine = Int(bytes[record + variant.labelBytes - 1])
                    guard fine < variant.classCount else {
                        throw DatasetError("\(path): label \(fine) of record \(r) is out of range 0..<\(variant.classCount)")
                    }
                    if variant == .cifar100 {
                        let c = Int(bytes[record])
                        guard c < 20 else { throw DatasetError("\(path): coarse label \(c) of record \(r) is out of range 0..<20") }
                        coarse.append(c)
                    }
                    labels.append(fine)
                    let start = record + variant.labelBytes
                    planes.append(contentsOf: bytes[start..<start + Self.imageBytes])
                }
            }
        }
        var names = (0..<variant.classCount).map(String.init)
        let namesPath = (root as NSString).appendingPathComponent(variant.namesFile)
        if fm.fileExists(atPath: namesPath) {
            guard let text = try? String(contentsOfFile: namesPath, encoding: .utf8) else {
                throw DatasetError("\(namesPath): cannot read as UTF-8 text")
            }
            let lines = text.split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard lines.count == variant.classCount else {
                throw DatasetError("\(namesPath): \(lines.count) class names, expected \(variant.classCount)")
            }
            names = lines
        }
        self.count = labels.count
        self.labels = labels
        self.coarseLabels = coarse
        self.planes = planes
        self.classNames = names
        self.name = "\(variant.rawValue):\(directory) (\(train ? "train" : "test"))"
    }

    /// The image at `index`, converted from the file's planes to interleaved RGB.
    public func image(at index: Int) throws -> Image8 {
        precondition(index >= 0 && index < count, "CIFARDataset: index \(index) out of range 0..<\(count)")
        let plane = Self.side * Self.side
        let base = index * Self.imageBytes
        let pixels = [UInt8](unsafeUninitializedCapacity: Self.imageBytes) { out, written in
            planes.withUnsafeBufferPointer { src in
                for i in 0..<plane {
                    out[3 * i] = src[base + i]
                    out[3 * i + 1] = src[base + plane + i]
                    out[3 * i + 2] = src[base + 2 * plane + i]
                }
            }
            written = Self.imageBytes
        }
        return Image8(width: Self.side, height: Self.side, channels: 3, pixels: pixels)
    }
}
