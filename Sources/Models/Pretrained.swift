// How each model's pretrained weights expect their input: size, resize interpolation, crop
// fraction, channel order, pixel scale, mean and std — timm's `pretrained_cfg` for the timm-named
// models (timm 1.0.31, default tag), torchvision's for its models, the Caffe release's for the
// original SENet models.

/// Preprocessing a model's weights were trained with. Evaluation resizes the shorter side to
/// `resizeSize` (= input ÷ crop fraction, floored), center-crops `inputSize`, scales pixels to
/// [0, `pixelScale`], orders channels and computes (x − mean) / std per channel.
public struct PretrainedConfig: Sendable, Equatable {
    public enum Interpolation: String, Sendable { case bilinear, bicubic }
    public enum ChannelOrder: String, Sendable { case rgb, bgr }

    /// Input height and width.
    public var inputSize: Int
    public var interpolation: Interpolation
    public var cropFraction: Double
    public var channelOrder: ChannelOrder
    /// 1: pixels in [0, 1] (torchvision/timm); 255: raw [0, 255] (Caffe).
    public var pixelScale: Float
    /// Per channel, in `channelOrder`, on the `pixelScale` scale.
    public var mean: [Float], std: [Float]
    /// Class names of the classifier, index = label (nil when the model has no standard label set).
    public var labels: [String]?

    public init(inputSize: Int = 224, interpolation: Interpolation = .bilinear, cropFraction: Double = 0.875,
                channelOrder: ChannelOrder = .rgb, pixelScale: Float = 1, mean: [Float] = PretrainedConfig.imagenetMean,
                std: [Float] = PretrainedConfig.imagenetStd, labels: [String]? = ImageNetClasses.names) {
        (self.inputSize, self.interpolation, self.cropFraction) = (inputSize, interpolation, cropFraction)
        (self.channelOrder, self.pixelScale, self.mean, self.std, self.labels) = (channelOrder, pixelScale, mean, std, labels)
    }

    public static let imagenetMean: [Float] = [0.485, 0.456, 0.406]
    public static let imagenetStd: [Float] = [0.229, 0.224, 0.225]

    /// torchvision's and timm's ImageNet default: bilinear, crop 0.875, ImageNet mean/std.
    public static let imagenet = PretrainedConfig()
    /// The Caffe release of SENet (hujie-frank/SENet): BGR, [0, 255], mean 104/117/123, no std.
    public static let caffe = PretrainedConfig(channelOrder: .bgr, pixelScale: 255, mean: [104, 117, 123], std: [1, 1, 1])
    /// CIFAR-10 training statistics, 32×32, no resize.
    public static let cifar = PretrainedConfig(inputSize: 32, cropFraction: 1, mean: [0.4914, 0.4822, 0.4465],
                                               std: [0.2470, 0.2435, 0.2616], labels: nil)

    /// The shorter side an image is resized to before the center crop: ⌊input ÷ crop fraction⌋ as timm.
    public var resizeSize: Int { Int((Double(inputSize) / cropFraction).rounded(.down)) }

    /// The configuration of a model listed in the table, or nil.
    static func listed(_ name: String) -> PretrainedConfig? { table[name] }

    private static func timm(_ interpolation: Interpolation, _ crop: Double) -> PretrainedConfig {
        PretrainedConfig(interpolation: interpolation, cropFraction: crop)
    }

    private static let table: [String: PretrainedConfig] = [
        "resnet18": timm(.bicubic, 0.95), "resnet34": timm(.bicubic, 0.95), "resnet50": timm(.bicubic, 0.95),
        "resnet101": timm(.bicubic, 0.95), "resnet152": timm(.bicubic, 0.95), "resnext50_32x4d": timm(.bicubic, 0.95),
        "seresnet50": timm(.bicubic, 0.95),
        "seresnet18": timm(.bicubic, 0.875), "seresnet34": timm(.bicubic, 0.875), "seresnet101": timm(.bicubic, 0.875),
        "seresnet152": timm(.bicubic, 0.875), "seresnext50_32x4d": timm(.bicubic, 0.875),
        "seresnext101_32x4d": timm(.bicubic, 0.875), "legacy_seresnet18": timm(.bicubic, 0.875),
        "legacy_seresnext26_32x4d": timm(.bicubic, 0.875),
        "resnext101_32x4d": .imagenet, "legacy_seresnet34": .imagenet, "legacy_seresnet50": .imagenet,
        "legacy_seresnet101": .imagenet, "legacy_seresnet152": .imagenet, "legacy_seresnext50_32x4d": .imagenet,
        "legacy_seresnext101_32x4d": .imagenet, "legacy_senet154": .imagenet,
        "inception_resnet_v2": PretrainedConfig(inputSize: 299, interpolation: .bicubic, cropFraction: 0.8975,
                                                mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]),
        "se_inception_resnet_v2": PretrainedConfig(inputSize: 299, interpolation: .bicubic, cropFraction: 0.8975,
                                                   mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]),
        // Cadene's bninception port: BGR, [0, 255], mean 104/117/128, std 1.
        "bninception": PretrainedConfig(channelOrder: .bgr, pixelScale: 255, mean: [104, 117, 128], std: [1, 1, 1]),
        "se_bninception": .caffe,
    ]
}

extension ModelEntry {
    /// The preprocessing this model's pretrained weights expect.
    /// CIFAR-sized models get CIFAR's statistics; unlisted ImageNet models the ImageNet default.
    public var pretrained: PretrainedConfig {
        PretrainedConfig.listed(name) ?? (defaultInputSize.0 <= 32 ? .cifar : .imagenet)
    }
}
