// Image decoding (libjpeg-turbo, libpng) and the torchvision-exact transforms.
import Foundation
import Testing
import TensorCore
import _TestSupport
@testable import ImageIO

@Suite struct DecodingTests {
    /// Every special-format fixture decodes to the pixels Pillow produces
    /// (exif_transpose + convert("RGB")): PNG exactly, JPEG within 1 (libjpeg-turbo versions).
    @Test func specialFormatsMatchPillow() throws {
        let fx = try ByteFixture("images_formats")
        #expect(fx.cases.count >= 18)
        for c in fx.cases {
            let file = try #require(fx.params(c)["file"] as? String)
            let expected = try #require(fx.tensors["\(c).rgb"])
            let image = try ImageDecoder.load(path: fixturePath(file))
            #expect([image.height, image.width, 3] == expected.shape, "\(c): \(image.width) x \(image.height) vs \(expected.shape)")
            guard [image.height, image.width, 3] == expected.shape else { continue }
            let worst = zip(image.pixels, expected.bytes).map { abs(Int($0) - Int($1)) }.max() ?? 0
            #expect(worst <= (file.hasSuffix(".jpg") ? 1 : 0), "\(c) (\(file)): max pixel difference \(worst)")
        }
    }

    /// Orientations 5–8 swap width and height, and each of the eight is a distinct transpose.
    @Test func exifOrientationsAreDistinct() throws {
        let images = try (1...8).map { try ImageDecoder.load(path: fixturePath("img_exif\($0).jpg")) }
        #expect(images.map(\.width) == [45, 45, 45, 45, 30, 30, 30, 30])
        #expect(Set(images.map(\.pixels)).count == 8)
        let plain = images[0]
        #expect(plain.oriented(6).oriented(8) == plain)
        #expect(plain.oriented(3).oriented(3) == plain)
    }

    /// The format comes from the magic bytes: a PNG named .jpg still decodes.
    @Test func formatByMagicBytes() throws {
        let bytes = try ImageDecoder.readFile(fixturePath("img_rgba.png"))
        let image = try ImageDecoder.decode(bytes, name: "actually_a_png.jpg")
        #expect(image.width == 45 && image.height == 30)
    }

    @Test func errorsNameTheFileAndTheProblem() throws {
        func failure(_ body: () throws -> RGBImage) -> ImageError? {
            do { _ = try body(); return nil } catch let e as ImageError { return e } catch { return nil }
        }
        let missing = failure { try ImageDecoder.load(path: "/nonexistent/cat.jpg") }
        #expect(missing?.kind == .unreadable)
        #expect(missing?.description == "/nonexistent/cat.jpg: cannot open: No such file or directory")
        #expect(failure { try ImageDecoder.load(path: fixturesDirectory.path) }?.kind == .unreadable)
        #expect(failure { try ImageDecoder.decode([], name: "empty.png") }?.description == "empty.png: empty file")
        let text = failure { try ImageDecoder.decode(Array("hello world".utf8), name: "notes.jpg") }
        #expect(text?.kind == .unknownFormat)
        #expect(text?.description == "notes.jpg: not a JPEG or PNG file (starts with 68 65 6C 6C 6F 20 77 6F)")

        var jpeg = try ImageDecoder.readFile(fixturePath("img_exif1.jpg"))
        let truncated = failure { try ImageDecoder.decode(Array(jpeg.prefix(jpeg.count / 2)), name: "half.jpg") }
        #expect(truncated?.kind == .corrupt)
        #expect(truncated?.description.hasPrefix("half.jpg: corrupt or truncated JPEG: ") == true, "\(String(describing: truncated))")
        var png = try ImageDecoder.readFile(fixturePath("img_rgba.png"))
        let truncatedPNG = failure { try ImageDecoder.decode(Array(png.prefix(png.count - 1)), name: "cut.png") }
        #expect(truncatedPNG?.kind == .corrupt)
        #expect(truncatedPNG?.description.hasPrefix("cut.png: corrupt or truncated PNG: ") == true, "\(String(describing: truncatedPNG))")

        // Decompression bombs: refused from the header, before any pixel is allocated.
        let sof = try #require(startOfFrame(jpeg))
        jpeg.replaceSubrange(sof + 5..<sof + 9, with: [0xEA, 0x60, 0xEA, 0x60])  // 60000 x 60000
        let jpegBomb = failure { try ImageDecoder.decode(jpeg, name: "bomb.jpg") }
        #expect(jpegBomb?.kind == .tooLarge)
        #expect(jpegBomb?.description == "bomb.jpg: 60000 x 60000 = 3600000000 pixels exceeds the limit of 268435456 (decompression bomb?)")
        setPNGSize(&png, width: 30000, height: 30000)
        let pngBomb = failure { try ImageDecoder.decode(png, name: "bomb.png") }
        #expect(pngBomb?.kind == .tooLarge)
        #expect(pngBomb?.description == "bomb.png: 30000 x 30000 = 900000000 pixels exceeds the limit of 268435456 (decompression bomb?)")
        let small = failure { try ImageDecoder.load(path: fixturePath("img_gray.jpg"), maxPixels: 1000) }
        #expect(small?.kind == .tooLarge)
        for e in [missing, text, truncated, truncatedPNG, jpegBomb, pngBomb, small] {
            #expect(e?.description.contains("\n") == false)
        }
    }

    @Test func cmykConversionIsPillows() {
        // Stored (inverted) CMYK → RGB, values from Pillow 13: Image.frombytes("CMYK", ...) with
        // raw mode "CMYK;I" then convert("RGB").
        let rgb = ImageDecoder.invertedCMYKToRGB([255, 255, 255, 255, 0, 0, 0, 0, 155, 205, 255, 200, 255, 255, 255, 0])
        #expect(rgb == [255, 255, 255, 0, 0, 0, 122, 161, 200, 0, 0, 0])
    }
}

/// The offset of the JPEG's first SOF0/SOF1/SOF2 marker.
func startOfFrame(_ jpeg: [UInt8]) -> Int? {
    var pos = 2
    while pos + 4 <= jpeg.count, jpeg[pos] == 0xFF {
        if (0xC0...0xC2).contains(jpeg[pos + 1]) { return pos }
        pos += 2 + (Int(jpeg[pos + 2]) << 8 | Int(jpeg[pos + 3]))
    }
    return nil
}

/// Rewrites the IHDR width and height (big-endian at bytes 16–23) and its CRC.
func setPNGSize(_ png: inout [UInt8], width: UInt32, height: UInt32) {
    for (i, v) in [width, height].enumerated() {
        for b in 0..<4 { png[16 + 4 * i + b] = UInt8(truncatingIfNeeded: v >> (24 - 8 * b)) }
    }
    let crc = crc32(png[12..<29])
    for b in 0..<4 { png[29 + b] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * b)) }
}

@Suite struct TransformTests {
    /// torchvision `Resize(size, antialias=True) → CenterCrop → ToTensor` on real photos, against
    /// the fixture: max |Δ| ≤ 2/255 per value and mean |Δ| far below it (measured: all equal).
    @Test func preprocessingMatchesTorchvision() throws {
        let fx = try ByteFixture("images_preprocess")
        #expect(fx.cases.count == 14)
        var stats: [String: (worst: Int, total: Int, count: Int, differing: Int)] = [:]
        for c in fx.cases {
            let p = fx.params(c)
            let file = try #require(p["file"] as? String)
            let resize = try #require(p["resize"] as? Int), crop = try #require(p["crop"] as? Int)
            let interpolation: Interpolation = p["interpolation"] as? String == "bicubic" ? .bicubic : .bilinear
            let expected = try #require(fx.tensors["\(c).pixels"])
            let image = try ImageDecoder.load(path: assetPath(file))
            let pipeline = Preprocessing(resize: resize, crop: crop, interpolation: interpolation, normalization: .none)
            let x = pipeline(image)
            #expect(x.shape == expected.shape, "\(c)")
            guard x.shape == expected.shape else { continue }
            let got = x.scalars
            var worst = 0, total = 0, differing = 0
            for (a, e) in zip(got, expected.bytes) {
                let d = abs(Int((a * 255).rounded()) - Int(e))
                worst = max(worst, d)
                total += d
                if d != 0 { differing += 1 }
            }
            let mean = Double(total) / Double(got.count)
            #expect(worst <= 2, "\(c): max |Δ| \(worst)/255")
            #expect(mean <= 0.1, "\(c): mean |Δ| \(mean)/255")
            let kind = file.hasSuffix(".jpg") ? "JPEG" : "PNG"
            let s = stats[kind] ?? (0, 0, 0, 0)
            stats[kind] = (max(s.worst, worst), s.total + total, s.count + got.count, s.differing + differing)
        }
        for (kind, s) in stats.sorted(by: { $0.key < $1.key }) {
            print("preprocessing parity \(kind): max |Δ| \(s.worst)/255, mean |Δ| \(Double(s.total) / Double(s.count))/255, \(s.differing) of \(s.count) values differ")
        }
    }

    @Test func resizeSizesFollowTorchvision() {
        let image = RGBImage(width: 451, height: 300, pixels: [UInt8](repeating: 7, count: 451 * 300 * 3))
        let r = image.resized(shorterSide: 256)
        #expect(r.width == 384 && r.height == 256)  // int(256 * 451 / 300) = 384
        #expect(r.pixels.allSatisfy { $0 == 7 })  // weights are normalised
        let tall = RGBImage(width: 3, height: 10, pixels: [UInt8](repeating: 0, count: 90)).resized(shorterSide: 7)
        #expect(tall.width == 7 && tall.height == 23)
    }

    /// Python's round-half-to-even offset, and zero padding for crops larger than the image.
    @Test func centerCropOffsets() {
        let row = RGBImage(width: 5, height: 1, pixels: (0..<15).map(UInt8.init))
        #expect(row.centerCropped(width: 2, height: 1).pixels == [6, 7, 8, 9, 10, 11])  // round(1.5) = 2
        #expect(row.centerCropped(width: 4, height: 1).pixels == Array(0..<12).map(UInt8.init))  // round(0.5) = 0
        let padded = row.centerCropped(width: 8, height: 2)
        #expect(padded.pixels.count == 8 * 2 * 3)
        #expect(Array(padded.pixels[0..<24]) == [0, 0, 0] + (0..<15).map(UInt8.init) + [0, 0, 0, 0, 0, 0])
        #expect(padded.pixels[24...].allSatisfy { $0 == 0 })
    }

    @Test func normalizations() {
        let image = RGBImage(width: 2, height: 1, pixels: [255, 128, 0, 10, 20, 30])
        let unit = image.tensor()
        #expect(unit.shape == [3, 1, 2])
        let bytes: [Float] = [255, 10, 128, 20, 0, 30]  // CHW
        #expect(unit.scalars == bytes.map { $0 / 255 })
        let imagenet = image.tensor(.imagenet)
        #expect(imagenet[0, 0, 0] == (Float(1) - 0.485) / 0.229)
        #expect(imagenet[1, 0, 1] == (Float(20) / 255 - 0.456) / 0.224)
        let caffe = image.tensor(.caffe)  // BGR, 0…255, mean subtraction only
        let bgr: [Float] = [0 - 104, 30 - 104, 128 - 117, 20 - 117, 255 - 123, 10 - 123]
        #expect(caffe.scalars == bgr)
        let batch = Preprocessing(resize: 4, crop: 2)(batch: [image, image, image])
        #expect(batch.shape == [3, 3, 2, 2])
        let single = Preprocessing(resize: 4, crop: 2)(image)
        #expect(Array(batch.scalars[12..<24]) == single.scalars)
    }
}
