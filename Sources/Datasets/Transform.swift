// Training and evaluation transforms on `Image8` (1 or 3 channels), following torchvision's PIL
// path: `RandomResizedCrop`, `RandomCrop(padding)`, `RandomHorizontalFlip`, `Resize` +
// `CenterCrop`, then `ToTensor` + `Normalize`. Resizing is ImageIO's Pillow-exact antialiased
// resampler; random draws come from the caller's `SeededGenerator`, so a transform is a pure
// function of (image, generator state). The draws are not PyTorch's (its generator is not
// reproduced), only their distributions are.

import Foundation
import ImageIO
import TensorCore

/// Per-channel statistics on the 0…1 scale of `ToTensor`, for `Transform`'s normalisation.
public struct ChannelStatistics: Sendable, Equatable {
    /// Mean per channel.
    public var mean: [Float]
    /// Standard deviation per channel.
    public var std: [Float]

    /// Statistics with one value per channel.
    public init(mean: [Float], std: [Float]) { (self.mean, self.std) = (mean, std) }

    /// Fashion-MNIST training set, 1 channel: mean 0.2860, std 0.3530.
    public static let fashionMNIST = ChannelStatistics(mean: [0.2860], std: [0.3530])
    /// ImageNet (torchvision's constants), RGB: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    public static let imagenet = ChannelStatistics(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
}

/// A crop window in pixels: columns `left ..< left + width`, rows `top ..< top + height`.
public struct CropBox: Sendable, Equatable {
    public var left: Int, top: Int, width: Int, height: Int
    /// A box; `left`/`top` may be negative or the box reach past the image (zero padding).
    public init(left: Int, top: Int, width: Int, height: Int) {
        (self.left, self.top, self.width, self.height) = (left, top, width, height)
    }
}

/// An image → tensor pipeline: a geometric step, an optional random horizontal flip (p = 0.5),
/// then normalisation to a [C, H, W] float32 tensor with value
/// `(p / 255 − mean[c]) / std[c]` (or `p / 255 − mean[c]` when `std` is nil — the SENet paper's
/// mean subtraction). `mean` and `std` have one value per channel, or one value for all channels.
public struct Transform: Sendable {
    /// The geometric step.
    public enum Geometry: Sendable, Equatable {
        /// Keep the image as it is.
        case identity
        /// `Resize(resize)` of the shorter side (nil: no resize), then `CenterCrop(crop)` (nil: none).
        case resizeCenterCrop(resize: Int?, crop: Int?)
        /// `RandomResizedCrop(size, scale, ratio)`: a random box, resized to size × size.
        case randomResizedCrop(size: Int, scale: ClosedRange<Double>, ratio: ClosedRange<Double>)
        /// `RandomCrop(original size, padding)`: zero-pad every side by `padding`, crop back at a
        /// random offset.
        case padRandomCrop(padding: Int)
    }

    /// The crop / resize step.
    public var geometry: Geometry
    /// Whether to flip left–right with probability 0.5 after the geometric step.
    public var randomFlip: Bool
    /// Mean per channel (or one for all) on the 0…1 scale.
    public var mean: [Float]
    /// Standard deviation per channel (or one for all); nil = divide by nothing.
    public var std: [Float]?
    /// The resampling filter of resizes.
    public var interpolation: Interpolation

    /// A transform from its parts; the static constructors cover the usual recipes.
    public init(geometry: Geometry, randomFlip: Bool, mean: [Float], std: [Float]?,
                interpolation: Interpolation = .bilinear) {
        precondition(!mean.isEmpty && (std.map { $0.count == mean.count || $0.count == 1 } ?? true),
                     "Transform: mean needs ≥ 1 value and std as many (or one)")
        (self.geometry, self.randomFlip, self.mean, self.std, self.interpolation) = (geometry, randomFlip, mean, std, interpolation)
    }

    /// Deterministic evaluation: `Resize(resize)` (shorter side → `resize`, bilinear,
    /// antialiased) then `CenterCrop(crop)`, then normalisation. nil skips a step.
    public static func evaluation(resize: Int?, crop: Int?, mean: [Float], std: [Float]?) -> Transform {
        Transform(geometry: .resizeCenterCrop(resize: resize, crop: crop), randomFlip: false, mean: mean, std: std)
    }

    /// ImageNet training augmentation: torchvision's `RandomResizedCrop(size, scale, ratio)` —
    /// up to 10 tries of area fraction ~ U(scale) and aspect ratio w/h ~ exp(U(log ratio)),
    /// `w = round(√(area·ratio))`, `h = round(√(area/ratio))`, accepted when it fits, placed
    /// uniformly; else the central crop with the ratio clamped to `ratio` — resized to
    /// size × size, then `RandomHorizontalFlip()`.
    public static func imagenetTraining(size: Int = 224, scale: ClosedRange<Double> = 0.08...1,
                                        ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3),
                                        mean: [Float], std: [Float]?) -> Transform {
        Transform(geometry: .randomResizedCrop(size: size, scale: scale, ratio: ratio), randomFlip: true, mean: mean, std: std)
    }

    /// CIFAR training augmentation: `RandomCrop(size, padding)` with zero padding, then
    /// `RandomHorizontalFlip()` (He et al. 2016's recipe).
    public static func cifarTraining(padding: Int = 4, mean: [Float], std: [Float]?) -> Transform {
        Transform(geometry: .padRandomCrop(padding: padding), randomFlip: true, mean: mean, std: std)
    }

    /// `RandomHorizontalFlip()` alone.
    public static func flipOnly(mean: [Float], std: [Float]?) -> Transform {
        Transform(geometry: .identity, randomFlip: true, mean: mean, std: std)
    }

    /// The transformed, normalised [C, H, W] tensor.
    public func callAsFunction(_ image: Image8, rng: inout SeededGenerator) -> Tensor {
        let (out, flip) = geometric(image, rng: &rng)
        var t = Tensor(uninitializedShape: [out.channels, out.height, out.width])
        t.withUnsafeMutablePointer { normalize(out, flipped: flip, into: $0) }
        return t
    }

    /// The geometric step and the flip, before normalisation. Draw order: the crop's numbers,
    /// then one uniform for the flip (flip when < 0.5).
    public func augmented(_ image: Image8, rng: inout SeededGenerator) -> Image8 {
        let (out, flip) = geometric(image, rng: &rng)
        return flip ? out.horizontallyFlipped() : out
    }

    /// The geometric step, and whether to flip (left to the normalisation, which writes the
    /// columns in reverse instead of copying the image).
    func geometric(_ image: Image8, rng: inout SeededGenerator) -> (Image8, flip: Bool) {
        var out: Image8
        switch geometry {
        case .identity:
            out = image
        case let .resizeCenterCrop(resize, crop):
            out = image
            if let resize { out = out.resized(shorterSide: resize, interpolation: interpolation) }
            if let crop { out = out.centerCropped(width: crop, height: crop) }
        case let .randomResizedCrop(size, scale, ratio):
            let box = Self.randomResizedCropBox(width: image.width, height: image.height, scale: scale, ratio: ratio, rng: &rng)
            out = image.cropped(box).resized(width: size, height: size, interpolation: interpolation)
        case let .padRandomCrop(padding):
            // Pad by p then crop W × H at (j, i), i, j ∈ 0…2p: the window (j − p, i − p) of the
            // original with zeros outside.
            let top = rng.nextInt(below: 2 * padding + 1), left = rng.nextInt(below: 2 * padding + 1)
            out = image.cropped(CropBox(left: left - padding, top: top - padding, width: image.width, height: image.height))
        }
        let flip = randomFlip && rng.nextUniform() < 0.5
        return (out, flip)
    }

    /// torchvision's `RandomResizedCrop.get_params` on a width × height image. Draws per try: the
    /// scale s ~ U(scale), the log aspect ratio ~ U(log ratio); on success the top row
    /// ~ U{0 … height − h}, then the left column ~ U{0 … width − w}.
    public static func randomResizedCropBox(width: Int, height: Int, scale: ClosedRange<Double>,
                                            ratio: ClosedRange<Double>, rng: inout SeededGenerator) -> CropBox {
        let area = Double(width * height)
        let (logLow, logHigh) = (log(ratio.lowerBound), log(ratio.upperBound))
        for _ in 0..<10 {
            let targetArea = area * (scale.lowerBound + (scale.upperBound - scale.lowerBound) * rng.nextUniform())
            let aspect = exp(logLow + (logHigh - logLow) * rng.nextUniform())
            let w = Int((targetArea * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((targetArea / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && w <= width && h > 0 && h <= height {
                let top = rng.nextInt(below: height - h + 1)
                let left = rng.nextInt(below: width - w + 1)
                return CropBox(left: left, top: top, width: w, height: h)
            }
        }
        let inRatio = Double(width) / Double(height)
        var (w, h) = (width, height)
        if inRatio < ratio.lowerBound {
            h = Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven))
        } else if inRatio > ratio.upperBound {
            w = Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven))
        }
        return CropBox(left: (width - w) / 2, top: (height - h) / 2, width: w, height: h)
    }

    /// Writes `image` (mirrored left–right when `flipped`) as [C, H, W] floats
    /// `(p / 255 − mean[c]) / std[c]`, float32 operations in that order as `ToTensor` +
    /// `Normalize`; evaluated once per byte value into a 256-entry table per channel.
    func normalize(_ image: Image8, flipped: Bool = false, into dst: UnsafeMutablePointer<Float>) {
        let (c, w, h) = (image.channels, image.width, image.height)
        precondition(mean.count == 1 || mean.count == c, "Transform: \(mean.count) mean values for a \(c)-channel image")
        var table = [Float](repeating: 0, count: 256 * c)
        for ch in 0..<c {
            let m = mean.count == 1 ? mean[0] : mean[ch]
            let s = std.map { $0.count == 1 ? $0[0] : $0[ch] }
            for p in 0..<256 {
                let v = Float(p) / 255 - m
                table[ch * 256 + p] = s.map { v / $0 } ?? v
            }
        }
        table.withUnsafeBufferPointer { lut in
            image.pixels.withUnsafeBufferPointer { src in
                for ch in 0..<c {
                    let t = lut.baseAddress! + ch * 256
                    for y in 0..<h {
                        let row = src.baseAddress! + y * w * c + ch
                        let out = dst + (ch * h + y) * w
                        if flipped {
                            for x in 0..<w { out[w - 1 - x] = t[Int(row[x * c])] }
                        } else {
                            for x in 0..<w { out[x] = t[Int(row[x * c])] }
                        }
                    }
                }
            }
        }
    }
}

extension Image8 {
    /// The window `box`; pixels outside the image are 0 (so a box reaching past the edges is
    /// torchvision's zero padding followed by a crop).
    public func cropped(_ box: CropBox) -> Image8 {
        precondition(box.width > 0 && box.height > 0, "cropped: empty box \(box)")
        if box.left == 0 && box.top == 0 && box.width == width && box.height == height { return self }
        let c = channels
        var out = [UInt8](repeating: 0, count: box.width * box.height * c)
        let x0 = max(0, -box.left), x1 = min(box.width, width - box.left)
        let y0 = max(0, -box.top), y1 = min(box.height, height - box.top)
        if x0 < x1 && y0 < y1 {
            out.withUnsafeMutableBufferPointer { dst in
                pixels.withUnsafeBufferPointer { src in
                    for y in y0..<y1 {
                        let s = ((y + box.top) * width + x0 + box.left) * c
                        let d = (y * box.width + x0) * c
                        (dst.baseAddress! + d).update(from: src.baseAddress! + s, count: (x1 - x0) * c)
                    }
                }
            }
        }
        return Image8(width: box.width, height: box.height, channels: c, pixels: out)
    }

    /// torchvision's `CenterCrop((height, width))`: offset `round((size − crop) / 2)` (half to
    /// even); a crop larger than the image pads with zeros, `(crop − size) / 2` before.
    public func centerCropped(width cropWidth: Int, height cropHeight: Int) -> Image8 {
        func offset(_ size: Int, _ crop: Int) -> Int {
            crop > size ? -((crop - size) / 2) : Int((Double(size - crop) / 2).rounded(.toNearestOrEven))
        }
        return cropped(CropBox(left: offset(width, cropWidth), top: offset(height, cropHeight), width: cropWidth, height: cropHeight))
    }

    /// The mirror image left–right (`F.hflip`).
    public func horizontallyFlipped() -> Image8 {
        let c = channels
        var out = [UInt8](repeating: 0, count: pixels.count)
        out.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                for y in 0..<height {
                    let row = y * width * c
                    for x in 0..<width {
                        let s = row + x * c, d = row + (width - 1 - x) * c
                        for k in 0..<c { dst[d + k] = src[s + k] }
                    }
                }
            }
        }
        return Image8(width: width, height: height, channels: c, pixels: out)
    }

    /// Resized to width × height with ImageIO's Pillow-exact antialiased resampler. Gray images
    /// are resampled as one channel would be (replicated to RGB, resized, channel 0 kept — the
    /// channels of a resize are independent, so this is exact).
    public func resized(width outWidth: Int, height outHeight: Int, interpolation: Interpolation = .bilinear) -> Image8 {
        if outWidth == width && outHeight == height { return self }
        return viaRGB { $0.resized(width: outWidth, height: outHeight, interpolation: interpolation) }
    }

    /// torchvision's `Resize(size)`: the shorter side becomes `size`, the longer
    /// `Int(size · longer / shorter)`.
    public func resized(shorterSide size: Int, interpolation: Interpolation = .bilinear) -> Image8 {
        viaRGB { $0.resized(shorterSide: size, interpolation: interpolation) }
    }

    private func viaRGB(_ f: (RGBImage) -> RGBImage) -> Image8 {
        switch channels {
        case 3:
            let r = f(RGBImage(width: width, height: height, pixels: pixels))
            return Image8(width: r.width, height: r.height, channels: 3, pixels: r.pixels)
        case 1:
            var rgb = [UInt8](repeating: 0, count: pixels.count * 3)
            for i in 0..<pixels.count { rgb[3 * i] = pixels[i]; rgb[3 * i + 1] = pixels[i]; rgb[3 * i + 2] = pixels[i] }
            let r = f(RGBImage(width: width, height: height, pixels: rgb))
            let gray = [UInt8](unsafeUninitializedCapacity: r.width * r.height) { out, n in
                for i in 0..<r.width * r.height { out[i] = r.pixels[3 * i] }
                n = r.width * r.height
            }
            return Image8(width: r.width, height: r.height, channels: 1, pixels: gray)
        default:
            preconditionFailure("Image8 resize: \(channels) channels (1 or 3 supported)")
        }
    }
}

extension SeededGenerator {
    /// Uniform in [0, 1) with 53 random bits.
    mutating func nextUniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform in 0 ..< n (n ≥ 1): the high word of next() · n (bias below n / 2^64).
    mutating func nextInt(below n: Int) -> Int {
        precondition(n > 0, "nextInt(below:): n must be positive")
        return Int(next().multipliedFullWidth(by: UInt64(n)).high)
    }
}
