// Transforms checked by hand: flip, pad + random crop, RandomResizedCrop's box and pixels,
// normalisation, and the evaluation resize against ImageIO's torchvision-exact pipeline.

import Foundation
import Testing
@testable import Datasets
import ImageIO
import TensorCore

@Suite struct TransformTests {
    /// A seed whose generator's first uniform decides the flip as `flip` says.
    func seed(flipping flip: Bool, after draws: (inout SeededGenerator) -> Void = { _ in }) -> UInt64 {
        for s in UInt64(0)... {
            var g = SeededGenerator(seed: s)
            draws(&g)
            if (g.nextUniform() < 0.5) == flip { return s }
        }
        fatalError()
    }

    @Test func flipIsExact() {
        // 3 × 2 RGB, pixel (x, y) = (10x + y, 100 + x, 200 + y).
        var pixels: [UInt8] = []
        for y in 0..<2 {
            for x in 0..<3 { pixels += [UInt8(10 * x + y), UInt8(100 + x), UInt8(200 + y)] }
        }
        let img = Image8(width: 3, height: 2, channels: 3, pixels: pixels)
        let t = Transform.flipOnly(mean: [0], std: nil)
        var g = SeededGenerator(seed: seed(flipping: true))
        let flipped = t(img, rng: &g)
        #expect(flipped.shape == [3, 2, 3])
        // Channel 0, row 0 mirrored: 20, 10, 0; row 1: 21, 11, 1. Channel 1 row 0: 102, 101, 100.
        let expected: [Float] = [20, 10, 0, 21, 11, 1, 102, 101, 100, 102, 101, 100, 200, 200, 200, 201, 201, 201]
        #expect(flipped.scalars == expected.map { $0 / 255 })
        var h = SeededGenerator(seed: seed(flipping: false))
        let unflipped: [Float] = [0, 10, 20, 1, 11, 21, 100, 101, 102, 100, 101, 102, 200, 200, 200, 201, 201, 201]
        #expect(t(img, rng: &h).scalars == unflipped.map { $0 / 255 })
    }

    @Test func normalisationByHand() {
        let img = Image8(width: 3, height: 1, channels: 1, pixels: [0, 51, 255])
        var g = SeededGenerator(seed: 0)
        let stats = ChannelStatistics.fashionMNIST
        let y = Transform.evaluation(resize: nil, crop: nil, mean: stats.mean, std: stats.std)(img, rng: &g)
        // (0 − 0.286) / 0.353, (0.2 − 0.286) / 0.353, (1 − 0.286) / 0.353.
        let expected: [Float] = [-0.810198300, -0.243626062, 2.022662890]
        for (a, e) in zip(y.scalars, expected) { #expect(abs(a - e) < 1e-6, "\(a) vs \(e)") }
        // Mean subtraction only, per channel (the paper's recipe).
        let rgb = Image8(width: 1, height: 1, channels: 3, pixels: [255, 51, 0])
        let z = Transform.evaluation(resize: nil, crop: nil, mean: [0.5, 0.25, 0.125], std: nil)(rgb, rng: &g)
        #expect(z.shape == [3, 1, 1])
        for (a, e) in zip(z.scalars, [Float(0.5), -0.05, -0.125]) { #expect(abs(a - e) < 1e-7) }
    }

    /// Padding 2 then a 4×4 crop at offset (top 0, left 4): the window starts 2 rows above and
    /// 2 columns right of the original's corner.
    @Test func padCropByHand() {
        let img = Image8(width: 4, height: 4, channels: 1, pixels: (1...16).map(UInt8.init))
        let t = Transform.cifarTraining(padding: 2, mean: [0], std: nil)
        var found = false
        for s in UInt64(0)..<500 {
            var g = SeededGenerator(seed: s)
            let (top, left) = (g.nextInt(below: 5), g.nextInt(below: 5))
            let flip = g.nextUniform() < 0.5
            guard top == 0 && left == 4 && !flip else { continue }
            var h = SeededGenerator(seed: s)
            let y = t(img, rng: &h)
            let expected: [Float] = [0, 0, 0, 0,
                                     0, 0, 0, 0,
                                     3, 4, 0, 0,
                                     7, 8, 0, 0]
            #expect(y.scalars == expected.map { $0 / 255 })
            found = true
            break
        }
        #expect(found)
        // Every output keeps the input's size and is a shifted (maybe mirrored) window.
        for s in UInt64(0)..<50 {
            var g = SeededGenerator(seed: s)
            let out = t.augmented(img, rng: &g)
            #expect(out.width == 4 && out.height == 4)
            #expect(out.pixels.filter { $0 != 0 }.count >= 4)
        }
    }

    @Test func randomResizedCropBounds() {
        var g = SeededGenerator(seed: 42)
        let (w, h) = (500, 375)
        var fallbacks = 0
        for _ in 0..<5000 {
            let b = Transform.randomResizedCropBox(width: w, height: h, scale: 0.08...1, ratio: (3.0 / 4)...(4.0 / 3), rng: &g)
            #expect(b.left >= 0 && b.top >= 0 && b.left + b.width <= w && b.top + b.height <= h && b.width > 0 && b.height > 0)
            // w and h are rounded, so area and ratio hold up to half a pixel per side.
            let area = Double(w * h)
            let isFallback = b == CropBox(left: 0, top: 0, width: w, height: h)
            if isFallback { fallbacks += 1; continue }
            #expect((Double(b.width) + 0.5) * (Double(b.height) + 0.5) >= 0.08 * area)
            #expect((Double(b.width) - 0.5) * (Double(b.height) - 0.5) <= area)
            #expect((Double(b.width) + 0.5) / (Double(b.height) - 0.5) >= 0.75)
            #expect((Double(b.width) - 0.5) / (Double(b.height) + 0.5) <= 4.0 / 3)
        }
        #expect(fallbacks < 50)
        // No try can fit (any ratio ≥ 2 needs w = √(10000·r) > 100): the fallback is the central
        // crop with the ratio clamped to 2, w = 100, h = round(100 / 2) = 50, top (100 − 50) / 2.
        let box = Transform.randomResizedCropBox(width: 100, height: 100, scale: 1...1, ratio: 2...3, rng: &g)
        #expect(box == CropBox(left: 0, top: 25, width: 100, height: 50))
        // A wide image with a tall ratio range: h = 60, w = round(60 · 0.5) = 30, left (200 − 30) / 2.
        let tall = Transform.randomResizedCropBox(width: 200, height: 60, scale: 1...1, ratio: 0.25...0.5, rng: &g)
        #expect(tall == CropBox(left: 85, top: 0, width: 30, height: 60))
    }

    /// The crop box recomputed by hand from the generator's draws (first try fits), the pixels
    /// through ImageIO's crop + resize, and the flip by hand.
    @Test func randomResizedCropPixelsByHand() {
        let (W, H) = (64, 48)
        var pg = SeededGenerator(seed: 5)
        let rgb = RGBImage(width: W, height: H, pixels: (0..<W * H * 3).map { _ in UInt8(truncatingIfNeeded: pg.next()) })
        let img = Image8(width: W, height: H, channels: 3, pixels: rgb.pixels)
        let t = Transform.imagenetTraining(size: 32, mean: [0, 0, 0], std: nil)
        var checked = 0
        for s in UInt64(0)..<40 {
            var g = SeededGenerator(seed: s)
            let u1 = Double(g.next() >> 11) * 0x1p-53, u2 = Double(g.next() >> 11) * 0x1p-53
            let area = Double(W * H) * (0.08 + 0.92 * u1)
            let ratio = exp(log(0.75) + (log(4.0 / 3) - log(0.75)) * u2)
            let w = Int((area * ratio).squareRoot().rounded(.toNearestOrEven))
            let h = Int((area / ratio).squareRoot().rounded(.toNearestOrEven))
            guard w <= W && h <= H else { continue }
            let top = Int(g.next().multipliedFullWidth(by: UInt64(H - h + 1)).high)
            let left = Int(g.next().multipliedFullWidth(by: UInt64(W - w + 1)).high)
            let flip = Double(g.next() >> 11) * 0x1p-53 < 0.5
            var crop: [UInt8] = []
            for y in top..<top + h { crop += rgb.pixels[(y * W + left) * 3..<(y * W + left + w) * 3] }
            var out = RGBImage(width: w, height: h, pixels: crop).resized(width: 32, height: 32)
            if flip {
                var mirrored: [UInt8] = []
                for y in 0..<32 {
                    for x in 0..<32 {
                        let s = (y * 32 + 31 - x) * 3
                        mirrored += out.pixels[s..<s + 3]
                    }
                }
                out = RGBImage(width: 32, height: 32, pixels: mirrored)
            }
            var h2 = SeededGenerator(seed: s)
            #expect(t(img, rng: &h2).scalars == out.tensor(.none).scalars, "seed \(s)")
            checked += 1
        }
        #expect(checked >= 20)
    }

    /// `evaluation(256, 224)` on a real JPEG equals ImageIO's torchvision-exact `Preprocessing`;
    /// a gray image resizes as its RGB replica's first channel.
    @Test func evaluationMatchesImageIO() throws {
        let jpeg = try foolboxImages("imagenet_")[4].path
        let rgb = try ImageDecoder.load(path: jpeg)
        let stats = ChannelStatistics.imagenet
        var g = SeededGenerator(seed: 0)
        let ours = Transform.evaluation(resize: 256, crop: 224, mean: stats.mean, std: stats.std)(
            Image8(width: rgb.width, height: rgb.height, channels: 3, pixels: rgb.pixels), rng: &g)
        #expect(ours.scalars == Preprocessing()(rgb).scalars)

        let png = try foolboxImages("fashionMNIST_")[0].path
        let grayRGB = try ImageDecoder.load(path: png)
        let gray = Image8(width: 28, height: 28, channels: 1, pixels: stride(from: 0, to: grayRGB.pixels.count, by: 3).map { grayRGB.pixels[$0] })
        let y = Transform.evaluation(resize: 40, crop: 36, mean: [0], std: nil)(gray, rng: &g)
        let reference = grayRGB.resized(shorterSide: 40).centerCropped(width: 36, height: 36).tensor(.none)
        #expect(y.shape == [1, 36, 36])
        #expect(y.scalars == Array(reference.scalars.prefix(36 * 36)))
    }
}
