// The deterministic evaluation transforms of torchvision's PIL pipeline —
// `Resize(256) → CenterCrop(224) → ToTensor() → Normalize(mean, std)` — and the Caffe release's
// BGR, 0–255, mean-subtraction variant.

import TensorCore

extension RGBImage {
    /// The central `width × height` window, as torchvision's `CenterCrop((height, width))`: the
    /// offset along an axis is `round((size − crop) / 2)` with round-half-to-even (Python's
    /// `round`); where the crop is larger than the image, the image is first padded with black
    /// equally on both sides (the odd pixel after it), as torchvision does.
    public func centerCropped(width cropWidth: Int, height cropHeight: Int) -> RGBImage {
        precondition(cropWidth > 0 && cropHeight > 0, "centerCropped: crop \(cropWidth) x \(cropHeight) must be positive")
        func offset(_ size: Int, _ crop: Int) -> Int {
            crop > size ? -((crop - size) / 2) : Int((Double(size - crop) / 2).rounded(.toNearestOrEven))
        }
        let (left, top) = (offset(width, cropWidth), offset(height, cropHeight))
        var out = [UInt8](repeating: 0, count: cropWidth * cropHeight * 3)
        let x0 = max(0, -left), x1 = min(cropWidth, width - left)
        if x0 < x1 {
            for y in max(0, -top)..<min(cropHeight, height - top) {
                let src = ((y + top) * width + x0 + left) * 3
                out.replaceSubrange((y * cropWidth + x0) * 3..<(y * cropWidth + x1) * 3,
                                    with: pixels[src..<src + (x1 - x0) * 3])
            }
        }
        return RGBImage(width: cropWidth, height: cropHeight, pixels: out)
    }

    /// The image as a float tensor of shape [3, height, width] (CHW), each value
    /// `(p·scale − mean[c]) / std[c]` as `normalization` says; `.none` is torchvision's
    /// `ToTensor()` (p / 255), `.imagenet` is `ToTensor()` then `Normalize(mean, std)` with the
    /// same float32 operations, so values match PyTorch to the last bit.
    public func tensor(_ normalization: Normalization = .none) -> Tensor {
        var t = Tensor(uninitializedShape: [3, height, width])
        let plane = width * height
        let unit = normalization.scale == .unit
        t.withUnsafeMutablePointer { dst in
            pixels.withUnsafeBufferPointer { src in
                for c in 0..<3 {
                    let channel = normalization.order == .rgb ? c : 2 - c
                    let mean = normalization.mean[c]
                    let std = normalization.std?[c]
                    let out = dst + c * plane
                    for i in 0..<plane {
                        var v = Float(src[i * 3 + channel])
                        if unit { v /= 255 }
                        v -= mean
                        if let std { v /= std }
                        out[i] = v
                    }
                }
            }
        }
        return t
    }
}

/// How pixel bytes become network inputs: the channel order, the scale (0…1 as torchvision's
/// `ToTensor`, or 0…255 as Caffe) and a per-channel mean and optional standard deviation, all
/// given in the output channel order and on the chosen scale.
public struct Normalization: Sendable, Equatable {
    /// The order of the output channels.
    public enum ChannelOrder: Sendable, Equatable {
        /// Red, green, blue (PyTorch models).
        case rgb
        /// Blue, green, red (Caffe models).
        case bgr
    }

    /// The range pixel bytes are mapped to before the mean is subtracted.
    public enum Scale: Sendable, Equatable {
        /// p / 255 ∈ [0, 1], as `ToTensor`.
        case unit
        /// p ∈ [0, 255], as Caffe.
        case byte
    }

    /// Per-channel mean, in output channel order, on `scale`.
    public var mean: [Float]
    /// Per-channel standard deviation, in output channel order; nil for mean subtraction only.
    public var std: [Float]?
    /// Output channel order.
    public var order: ChannelOrder
    /// Pixel scale.
    public var scale: Scale

    /// A normalisation; `mean` (and `std`, when given) hold three values in output channel order.
    public init(mean: [Float], std: [Float]? = nil, order: ChannelOrder = .rgb, scale: Scale = .unit) {
        precondition(mean.count == 3 && (std?.count ?? 3) == 3, "Normalization: mean and std need three values")
        self.mean = mean
        self.std = std
        self.order = order
        self.scale = scale
    }

    /// `ToTensor()` alone: RGB, p / 255.
    public static let none = Normalization(mean: [0, 0, 0])
    /// torchvision's ImageNet statistics: `Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])`
    /// after `ToTensor()` (timm and the torchvision/Cadene SENet ports).
    public static let imagenet = Normalization(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
    /// The Caffe SENet release: BGR, 0…255, mean 104, 117, 123 (B, G, R) subtracted, no std.
    public static let caffe = Normalization(mean: [104, 117, 123], order: .bgr, scale: .byte)
}

/// The evaluation preprocessing of an ImageNet classifier:
/// `Resize(resize, interpolation)` (shorter side) → `CenterCrop(crop)` → tensor with `normalization`.
/// The default is torchvision's standard 256 → 224, bilinear, ImageNet mean and std.
public struct Preprocessing: Sendable, Equatable {
    /// The shorter side after resizing.
    public var resize: Int
    /// The side of the square centre crop.
    public var crop: Int
    /// The resize filter.
    public var interpolation: Interpolation
    /// How the cropped pixels become tensor values.
    public var normalization: Normalization

    /// A pipeline; see the type's description for the defaults.
    public init(resize: Int = 256, crop: Int = 224, interpolation: Interpolation = .bilinear,
                normalization: Normalization = .imagenet) {
        self.resize = resize
        self.crop = crop
        self.interpolation = interpolation
        self.normalization = normalization
    }

    /// The [3, crop, crop] input tensor for `image`.
    public func callAsFunction(_ image: RGBImage) -> Tensor {
        image.resized(shorterSide: resize, interpolation: interpolation)
            .centerCropped(width: crop, height: crop)
            .tensor(normalization)
    }

    /// The [N, 3, crop, crop] batch for `images`.
    public func callAsFunction(batch images: [RGBImage]) -> Tensor {
        stackImages(images.map { self($0) })
    }
}

/// Stacks equally shaped [C, H, W] tensors into one [N, C, H, W] batch (N ≥ 1).
public func stackImages(_ images: [Tensor]) -> Tensor {
    guard let shape = images.first?.shape else { shapeFailure("stackImages", "no images") }
    for (i, image) in images.enumerated() where image.shape != shape || shape.count != 3 {
        shapeFailure("stackImages", "image \(i) has shape \(image.shape), expected [C, H, W] equal to \(shape)")
    }
    let n = shape.reduce(1, *)
    var batch = Tensor(uninitializedShape: [images.count] + shape)
    batch.withUnsafeMutablePointer { dst in
        for (i, image) in images.enumerated() {
            image.withUnsafePointer { (dst + i * n).update(from: $0, count: n) }
        }
    }
    return batch
}
