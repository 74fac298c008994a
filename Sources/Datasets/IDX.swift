// The IDX format of MNIST and Fashion-MNIST (LeCun et al.; Xiao et al. 2017): a big-endian
// header — two zero bytes, a type byte (0x08 = unsigned byte), a dimension count — then one
// 32-bit size per dimension, then the data in C order. Images are idx3 [N, rows, cols], labels
// idx1 [N].

import Foundation

/// An MNIST-format dataset held in memory: `train-images-idx3-ubyte` + `train-labels-idx1-ubyte`
/// (or the `t10k-` pair for the test split), each optionally gzip-compressed (`.gz`), as
/// torchvision's `MNIST` / `FashionMNIST` read them. Images are 1-channel, rows × cols bytes
/// (28 × 28 for both datasets; 0 = background).
public struct IDXDataset: Dataset {
    /// torchvision's `FashionMNIST.classes`.
    public static let fashionMNISTClassNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]
    /// Digits "0" … "9" (MNIST).
    public static let digitClassNames = (0..<10).map(String.init)

    public let count: Int
    public let classNames: [String]
    public let labels: [Int]
    public let channels = 1
    public let name: String
    /// Image height (rows).
    public let height: Int
    /// Image width (columns).
    public let width: Int
    /// All images, `count × height × width` bytes.
    let pixels: [UInt8]

    /// Reads the split from `directory`. The files may be raw or gzip (`NAME` is tried before
    /// `NAME.gz`). Class names are `classNames` when given, else Fashion-MNIST's when the directory
    /// path contains "fashion" (any case), else the digits. Every header field, the image/label
    /// counts, the file lengths and every label (< number of classes) are checked; the error names
    /// the file.
    public init(directory: String, train: Bool, classNames: [String]? = nil) throws {
        let prefix = train ? "train" : "t10k"
        let imagesPath = try Self.locate(directory, "\(prefix)-images-idx3-ubyte")
        let labelsPath = try Self.locate(directory, "\(prefix)-labels-idx1-ubyte")
        let names = classNames
            ?? (directory.lowercased().contains("fashion") ? Self.fashionMNISTClassNames : Self.digitClassNames)
        guard !names.isEmpty else { throw DatasetError("idx:\(directory): empty class name list") }

        let images = try Self.readIDX(imagesPath, dimensions: 3)
        let labelFile = try Self.readIDX(labelsPath, dimensions: 1)
        let (n, rows, cols) = (images.sizes[0], images.sizes[1], images.sizes[2])
        guard rows > 0, cols > 0 else { throw DatasetError("\(imagesPath): image size \(rows)×\(cols) is empty") }
        guard labelFile.sizes[0] == n else {
            throw DatasetError("\(labelsPath): \(labelFile.sizes[0]) labels, but \(imagesPath) holds \(n) images")
        }
        var labels = [Int](repeating: 0, count: n)
        for i in 0..<n {
            let label = Int(labelFile.data[i])
            guard label < names.count else {
                throw DatasetError("\(labelsPath): label \(label) of sample \(i) is out of range 0..<\(names.count)")
            }
            labels[i] = label
        }
        self.count = n
        self.height = rows
        self.width = cols
        self.pixels = images.data
        self.labels = labels
        self.classNames = names
        self.name = "idx:\(directory) (\(train ? "train" : "test"))"
    }

    public func image(at index: Int) throws -> Image8 {
        precondition(index >= 0 && index < count, "IDXDataset: index \(index) out of range 0..<\(count)")
        let size = height * width
        return Image8(width: width, height: height, channels: 1,
                      pixels: Array(pixels[index * size..<(index + 1) * size]))
    }

    /// `directory/name`, else `directory/name.gz`.
    static func locate(_ directory: String, _ name: String) throws -> String {
        let base = (directory as NSString).appendingPathComponent(name)
        for candidate in [base, base + ".gz"] where FileManager.default.fileExists(atPath: candidate) {
            return candidate
        }
        throw DatasetError("idx:\(directory): missing \(name) (or \(name).gz)")
    }

    /// Largest payload accepted (1 GiB): the announced size is checked before allocating.
    static let maxPayload = 1 << 30

    /// An unsigned-byte IDX file with `dimensions` dimensions: its sizes and its data.
    static func readIDX(_ path: String, dimensions: Int) throws -> (sizes: [Int], data: [UInt8]) {
        let source = try openByteSource(path)
        let magic = try source.readExactly(4, what: "the magic number")
        let expected = String(format: "00 00 08 %02X", dimensions)
        guard magic[0] == 0, magic[1] == 0, magic[2] == 0x08, Int(magic[3]) == dimensions else {
            let found = magic.map { String(format: "%02X", $0) }.joined(separator: " ")
            throw DatasetError("\(path): bad IDX magic number \(found), expected \(expected) (unsigned bytes, \(dimensions) dimension\(dimensions == 1 ? "" : "s"))")
        }
        let header = try source.readExactly(4 * dimensions, what: "the dimension sizes")
        var sizes: [Int] = []
        for d in 0..<dimensions {
            let b = header[4 * d..<4 * d + 4].map(Int.init)
            sizes.append(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3])
        }
        var total = 1
        for s in sizes {
            let (product, overflow) = total.multipliedReportingOverflow(by: s)
            guard !overflow, product <= maxPayload else {
                throw DatasetError("\(path): dimensions \(sizes) announce more than \(maxPayload) bytes")
            }
            total = product
        }
        let data = try source.readExactly(total, what: "data of shape \(sizes)")
        guard try source.atEnd() else {
            throw DatasetError("\(path): trailing bytes after the \(total) data bytes of shape \(sizes)")
        }
        return (sizes, data)
    }
}
