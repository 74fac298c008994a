// Mutated JPEG and PNG files must never crash, hang or read out of bounds: each either throws
// ImageError or yields a consistent image, and every truncated file throws. Seeded, deterministic.
import Foundation
import Testing
import _TestSupport
@testable import ImageIO

@Suite struct FuzzTests {
    static let seeds = ["img_exif1.jpg", "img_exif6.jpg", "img_gray.jpg", "img_cmyk.jpg", "img_cmyk_noadobe.jpg",
                        "img_progressive.jpg", "img_rgba.png", "img_la.png", "img_palette.png", "img_rgb16.png",
                        "img_gray16.png", "img_gray2.png", "img_interlaced.png"]

    @Test func mutatedFilesThrowOrDecode() throws {
        var rng = SplitMix64(state: 20_240_406)
        var cases = 0, decoded = 0
        var kinds: [String: Int] = [:]
        for seed in Self.seeds {
            let original = try ImageDecoder.readFile(fixturePath(seed))
            let isPNG = seed.hasSuffix(".png")
            for round in 0..<240 {
                var bytes = original
                let mustThrow: Bool
                switch round % 6 {
                case 0:  // truncation
                    let cut = round < 12 ? [0, 1, 2, 3, 7, 8, 20, 33, original.count - 1, original.count - 2, original.count - 4, original.count - 12][round]
                                         : Int.random(in: 0..<original.count, using: &rng)
                    bytes = Array(original.prefix(cut))
                    mustThrow = true
                case 1:  // flipped bits anywhere
                    for _ in 0..<Int.random(in: 1...8, using: &rng) {
                        bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                    }
                    mustThrow = false
                case 2:  // random bytes in the header
                    for _ in 0..<Int.random(in: 1...4, using: &rng) {
                        bytes[Int.random(in: 0..<min(bytes.count, 300), using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                    }
                    mustThrow = false
                case 3:  // huge, zero or odd dimension fields
                    let sizes: [UInt32] = [0, 1, 2, 15, 16385, 40000, 65535, 1 << 20, 1 << 31, UInt32.max]
                    let (w, h) = (sizes.randomElement(using: &rng)!, sizes.randomElement(using: &rng)!)
                    if isPNG {
                        setPNGSize(&bytes, width: w, height: h)
                        if Bool.random(using: &rng) { bytes[29] ^= 0x55 }  // and sometimes a bad CRC
                    } else if let sof = startOfFrame(bytes) {
                        bytes.replaceSubrange(sof + 5..<sof + 9, with: [UInt8(truncatingIfNeeded: h >> 8), UInt8(truncatingIfNeeded: h),
                                                                        UInt8(truncatingIfNeeded: w >> 8), UInt8(truncatingIfNeeded: w)])
                    }
                    mustThrow = false
                case 4:  // garbage after the signature, or a valid prefix with a garbage tail
                    let keep = Bool.random(using: &rng) ? (isPNG ? 8 : 3) : Int.random(in: 0..<original.count, using: &rng)
                    bytes = Array(original.prefix(keep)) + (0..<Int.random(in: 0...2000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                    mustThrow = false
                default:  // a range removed or repeated
                    let a = Int.random(in: 0..<bytes.count, using: &rng), b = Int.random(in: a...min(bytes.count, a + 200), using: &rng)
                    if Bool.random(using: &rng) { bytes.removeSubrange(a..<b) } else { bytes.insert(contentsOf: bytes[a..<b], at: a) }
                    mustThrow = false
                }
                cases += 1
                do {
                    let image = try ImageDecoder.decode(bytes, name: "\(seed)#\(round)")
                    decoded += 1
                    #expect(!mustThrow, "\(seed) truncated to \(bytes.count) of \(original.count) bytes decoded without error")
                    #expect(image.width > 0 && image.height > 0 && image.pixels.count == image.width * image.height * 3)
                } catch let error as ImageError {
                    kinds["\(error.kind)", default: 0] += 1
                    #expect(!error.description.contains("\n"))
                }
            }
        }
        print("fuzz: \(cases) mutated files, \(decoded) decoded, errors by kind \(kinds.sorted { $0.key < $1.key })")
        #expect(cases >= 3000)
    }
}
