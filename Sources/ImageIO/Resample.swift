// Antialiased resizing with the arithmetic of Pillow's `Image.resize` (its "ImagingResample"):
// separable, horizontal pass first; each output sample is a normalised weighted sum of the input
// samples under the filter, the filter widened by the downscale factor (so shrinking averages
// instead of aliasing); weights in 22-bit fixed point; each pass rounds and clamps to uint8.
//
// Dims legend: W, H input width and height; OW, OH output; taps = input samples under one
// output sample's filter.

/// The resampling filter of a resize (torchvision's `InterpolationMode` on PIL images).
public enum Interpolation: Sendable, Equatable {
    /// Triangle filter, support 1 (PIL `BILINEAR`, torchvision's default).
    case bilinear
    /// Keys cubic with a = −0.5, support 2 (PIL `BICUBIC`).
    case bicubic

    var support: Double { self == .bilinear ? 1 : 2 }

    func weight(_ x: Double) -> Double {
        let x = abs(x)
        switch self {
        case .bilinear:
            return x < 1 ? 1 - x : 0
        case .bicubic:
            let a = -0.5
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        }
    }
}

/// For each output sample along one axis: the first input sample and the fixed-point weights.
struct ResampleTaps {
    static let precisionBits = 22
    /// First input index of each output sample.
    var first: [Int] = []
    /// Number of weights of each output sample (≤ `stride`).
    var count: [Int] = []
    /// `stride` weights per output sample, in units of 2^-22.
    var weights: [Int32] = []
    var stride = 0

    init(inSize: Int, outSize: Int, filter: Interpolation) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = filter.support * filterScale
        stride = Int(support.rounded(.up)) * 2 + 1
        weights = [Int32](repeating: 0, count: outSize * stride)
        let inverseScale = 1 / filterScale  // Pillow multiplies by the reciprocal; so do we, to the last bit
        var w = [Double](repeating: 0, count: stride)
        for o in 0..<outSize {
            let center = (Double(o) + 0.5) * scale
            let lo = max(Int(center - support + 0.5), 0)
            let n = min(Int(center + support + 0.5), inSize) - lo
            var sum = 0.0
            for k in 0..<n {
                w[k] = filter.weight((Double(lo + k) - center + 0.5) * inverseScale)
                sum += w[k]
            }
            let one = Double(1 << Self.precisionBits)
            for k in 0..<n {
                let v = sum != 0 ? w[k] / sum : w[k]
                weights[o * stride + k] = Int32(v < 0 ? v * one - 0.5 : v * one + 0.5)
            }
            first.append(lo)
            count.append(n)
        }
    }
}

/// Rounds a fixed-point sum (which already holds the +0.5) to a byte, clamping to 0...255.
@inline(__always)
private func clampByte(_ acc: Int32) -> UInt8 {
    UInt8(clamping: acc >> Int32(ResampleTaps.precisionBits))
}

extension RGBImage {
    /// The image resized to `width × height` with `interpolation`, antialiased: equal to Pillow's
    /// `img.resize((width, height), resample)` and so to torchvision's
    /// `Resize((height, width), interpolation, antialias=True)` on PIL images. An axis whose size is
    /// unchanged is not resampled.
    public func resized(width outWidth: Int, height outHeight: Int, interpolation: Interpolation = .bilinear) -> RGBImage {
        precondition(outWidth > 0 && outHeight > 0, "resized: target \(outWidth) x \(outHeight) must be positive")
        precondition(width > 0 && height > 0, "resized: cannot resize an empty image")
        var image = self
        if outWidth != width { image = image.horizontalPass(outWidth, interpolation) }
        if outHeight != height { image = image.verticalPass(outHeight, interpolation) }
        return image
    }

    /// torchvision's `Resize(size)` with an int size: the shorter side becomes `shorterSide` and
    /// the longer side `Int(shorterSide · longer / shorter)` (truncated, as torchvision computes it).
    public func resized(shorterSide size: Int, interpolation: Interpolation = .bilinear) -> RGBImage {
        precondition(width > 0 && height > 0, "resized: cannot resize an empty image")
        let (short, long) = (min(width, height), max(width, height))
        let newLong = Int(Double(size * long) / Double(short))
        return width <= height
            ? resized(width: size, height: newLong, interpolation: interpolation)
            : resized(width: newLong, height: size, interpolation: interpolation)
    }

    private func horizontalPass(_ outWidth: Int, _ filter: Interpolation) -> RGBImage {
        let taps = ResampleTaps(inSize: width, outSize: outWidth, filter: filter)
        let half = Int32(1 << (ResampleTaps.precisionBits - 1))
        let out = [UInt8](unsafeUninitializedCapacity: outWidth * height * 3) { dst, count in
            pixels.withUnsafeBufferPointer { src in
                taps.weights.withUnsafeBufferPointer { wt in
                    for y in 0..<height {
                        let row = y * width * 3
                        for o in 0..<outWidth {
                            var (r, g, b) = (half, half, half)
                            let w = o * taps.stride
                            var i = row + taps.first[o] * 3
                            for k in 0..<taps.count[o] {
                                r &+= Int32(src[i]) &* wt[w + k]
                                g &+= Int32(src[i + 1]) &* wt[w + k]
                                b &+= Int32(src[i + 2]) &* wt[w + k]
                                i += 3
                            }
                            let d = (y * outWidth + o) * 3
                            dst[d] = clampByte(r)
                            dst[d + 1] = clampByte(g)
                            dst[d + 2] = clampByte(b)
                        }
                    }
                }
            }
            count = outWidth * height * 3
        }
        return RGBImage(width: outWidth, height: height, pixels: out)
    }

    private func verticalPass(_ outHeight: Int, _ filter: Interpolation) -> RGBImage {
        let taps = ResampleTaps(inSize: height, outSize: outHeight, filter: filter)
        let rowLength = width * 3
        let half = Int32(1 << (ResampleTaps.precisionBits - 1))
        var acc = [Int32](repeating: 0, count: rowLength)
        let out = [UInt8](unsafeUninitializedCapacity: outHeight * rowLength) { dst, count in
            pixels.withUnsafeBufferPointer { src in
                acc.withUnsafeMutableBufferPointer { acc in
                    for o in 0..<outHeight {
                        for j in 0..<rowLength { acc[j] = half }
                        for k in 0..<taps.count[o] {
                            let weight = taps.weights[o * taps.stride + k]
                            let row = (taps.first[o] + k) * rowLength
                            for j in 0..<rowLength { acc[j] &+= Int32(src[row + j]) &* weight }
                        }
                        for j in 0..<rowLength { dst[o * rowLength + j] = clampByte(acc[j]) }
                    }
                }
            }
            count = outHeight * rowLength
        }
        return RGBImage(width: width, height: outHeight, pixels: out)
    }
}
