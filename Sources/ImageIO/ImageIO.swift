// Image decoding (libjpeg-turbo, libpng) and the torchvision-exact transforms.
//
// Decoding reproduces what a PyTorch data pipeline sees from Pillow:
// `ImageOps.exif_transpose(Image.open(path)).convert("RGB")`. The transforms reproduce
// torchvision's PIL path (`Resize` → `CenterCrop` → `ToTensor` → `Normalize`), pixel for pixel.

import Foundation

/// An 8-bit RGB image: `height` rows of `width` pixels, each pixel three bytes R, G, B
/// (HWC, interleaved, row-major — the layout of `numpy.asarray(pil_image)`).
public struct RGBImage: Sendable, Equatable {
    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// `height × width × 3` bytes: pixel (x, y) channel c sits at `(y * width + x) * 3 + c`.
    public let pixels: [UInt8]

    /// An image over `pixels`, which must hold `width × height × 3` bytes.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width) x \(height) x 3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Why an image could not be decoded. `description` is one line naming the file and the problem,
/// e.g. `photo.jpg: corrupt or truncated JPEG: Premature end of JPEG file`.
public struct ImageError: Error, CustomStringConvertible, Equatable {
    /// The broad cause, for callers that treat them differently (a loader may skip corrupt files but
    /// stop on unreadable ones).
    public enum Kind: Sendable, Equatable {
        /// The file could not be read (missing, a directory, no permission).
        case unreadable
        /// The bytes are neither JPEG nor PNG.
        case unknownFormat
        /// The header declares more pixels than the decoder's limit.
        case tooLarge
        /// The data is truncated or damaged, or the decoder reported a warning about it.
        case corrupt
    }

    /// The cause.
    public let kind: Kind
    /// The file path or caller-supplied name the bytes came from.
    public let name: String
    /// What went wrong, in one line.
    public let problem: String

    /// An error for `name`; line breaks in `problem` are folded into spaces.
    public init(_ kind: Kind, name: String, problem: String) {
        self.kind = kind
        self.name = name
        self.problem = problem.split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    /// `name: problem`.
    public var description: String { "\(name): \(problem)" }
}

/// Decodes JPEG and PNG files to `RGBImage`, as Pillow's
/// `ImageOps.exif_transpose(Image.open(f)).convert("RGB")` would:
///
/// * the format is chosen by magic bytes (`FF D8 FF` JPEG, `89 P N G \r \n 1A \n` PNG), never by
///   the file name;
/// * JPEG through libjpeg-turbo with the accurate integer IDCT and fancy upsampling (Pillow's
///   defaults); grayscale becomes R = G = B; CMYK and YCCK are read as Adobe-inverted CMYK, as Pillow
///   assumes for every 4-channel JPEG, then converted with Pillow's CMYK → RGB formula; the EXIF
///   orientation (tag 0x0112 of the first APP1 Exif segment) is applied;
/// * PNG through libpng: 16-bit samples keep their high byte, palette and 1/2/4-bit gray are
///   expanded, alpha and tRNS are dropped without compositing;
/// * an image of more than `maxPixels` pixels is refused before its pixels are allocated.
///
/// Every failure throws `ImageError`; decoder warnings (for JPEG, e.g. "Premature end of JPEG
/// file") are errors too, so a truncated file always throws.
public enum ImageDecoder {
    /// The default pixel limit, 2^28 (≈ 268 megapixels, 16384 × 16384).
    public static let defaultMaxPixels = 1 << 28

    /// Decodes a JPEG or PNG held in memory. `name` only labels errors.
    public static func decode(_ bytes: [UInt8], name: String, maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
        if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF {
            return try decodeJPEG(bytes, name: name, maxPixels: maxPixels)
        }
        if bytes.starts(with: pngSignature) {
            return try decodePNG(bytes, name: name, maxPixels: maxPixels)
        }
        if bytes.isEmpty { throw ImageError(.unknownFormat, name: name, problem: "empty file") }
        let head = bytes.prefix(8).map { String(format: "%02X", $0) }.joined(separator: " ")
        throw ImageError(.unknownFormat, name: name, problem: "not a JPEG or PNG file (starts with \(head))")
    }

    /// Reads and decodes the file at `path`; errors are labelled with the path.
    public static func load(path: String, maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
        try decode(readFile(path), name: path, maxPixels: maxPixels)
    }

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// The whole file, or `ImageError.unreadable` with the system's reason.
    static func readFile(_ path: String) throws -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            throw ImageError(.unreadable, name: path, problem: "cannot open: " + String(cString: strerror(errno)))
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            bytes.append(contentsOf: chunk[0..<n])
            if n < chunk.count { break }
        }
        if ferror(file) != 0 {
            throw ImageError(.unreadable, name: path, problem: "cannot read: " + String(cString: strerror(errno)))
        }
        return bytes
    }
}
