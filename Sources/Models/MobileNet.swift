// The MobileNets with SE.
//
// - MobileNet v1 1.0-224 (Howard et al. 2017) and SE-MobileNet (paper Table 3): 13 depthwise-
//   separable blocks. The paper does not say where SE sits; we put it after each block's pointwise
//   conv-BN-ReLU (its output), which reproduces the paper's 4.2M → 4.7M parameters (see
//   docs/complexity.md). Keys are ours (`features.K.dw`, `.pw`, `.se`).
// - MobileNetV2 (Sandler et al. 2018) and MobileNetV3 large/small (Howard et al. 2019) with
//   torchvision's structure and key names, so torchvision's weights load. V3's SE follows the
//   depthwise conv, with width make_divisible(expanded // 4, 8), ReLU then hard-sigmoid gate.

import NN
import TensorCore

/// torchvision's `Conv2dNormActivation`: conv (no bias, "same" padding), BN, optional activation,
/// keys `0` (conv) and `1` (BN).
func convBNAct(_ cin: Int, _ cout: Int, kernel: Int, stride: Int = 1, groups: Int = 1, act: Module?,
               eps: Float = 1e-5, momentum: Float = 0.1, generator g: inout SeededGenerator) -> Sequential {
    var layers: [Module] = [Conv2d(cin, cout, kernel: kernel, stride: stride, padding: (kernel - 1) / 2, groups: groups,
                                   bias: false, initialization: .heNormal, generator: &g),
                            BatchNorm2d(cout, eps: eps, momentum: momentum)]
    if let act { layers.append(act) }
    return Sequential(layers)
}

// MARK: MobileNet v1

/// Depthwise 3×3 conv-BN-ReLU, pointwise 1×1 conv-BN-ReLU, then SE (optional).
public final class DepthwiseSeparable: Module {
    public let dw: Sequential, pw: Sequential
    public let se: SqueezeExcitation?

    init(_ cin: Int, _ cout: Int, stride: Int, se: SEConfig?, generator g: inout SeededGenerator) {
        dw = convBNAct(cin, cin, kernel: 3, stride: stride, groups: cin, act: ReLU(), generator: &g)
        pw = convBNAct(cin, cout, kernel: 1, act: ReLU(), generator: &g)
        self.se = se.map { SqueezeExcitation(channels: cout, config: $0, generator: &g) }
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let h = pw(dw(x))
        return se?(h) ?? h
    }
}

public final class MobileNetV1: Module {
    public let features: Sequential
    public let fc: Linear

    public init(se: SEConfig?, numClasses: Int = 1000, inChannels: Int = 3, seed: UInt64 = 0) {
        var g = SeededGenerator(seed: seed)
        var layers: [Module] = [convBNAct(inChannels, 32, kernel: 3, stride: 2, act: ReLU(), generator: &g)]
        let blocks: [(Int, Int)] = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                                    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
        var cin = 32
        for (cout, stride) in blocks {
            layers.append(DepthwiseSeparable(cin, cout, stride: stride, se: se, generator: &g))
            cin = cout
        }
        features = Sequential(layers)
        fc = Linear(1024, numClasses, generator: &g)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        fc(globalAvgPool2d(features(x)).flattened())
    }
}

// MARK: MobileNetV2

/// torchvision's `_make_divisible(v, 8)`.
func makeDivisible(_ v: Double, _ d: Int = 8) -> Int {
    var w = max(d, Int(v + Double(d) / 2) / d * d)
    if Double(w) < 0.9 * v { w += d }
    return w
}

/// Inverted residual: 1×1 expand (t ≠ 1), 3×3 depthwise (stride), 1×1 linear projection; identity
/// added when the shapes allow. Keys `conv.K…` as torchvision.
public final class InvertedResidual: Module {
    public let conv: Sequential
    let residual: Bool

    init(_ cin: Int, _ cout: Int, stride: Int, expand t: Int, generator g: inout SeededGenerator) {
        let hidden = cin * t
        var layers: [Module] = []
        if t != 1 { layers.append(convBNAct(cin, hidden, kernel: 1, act: ReLU6(), generator: &g)) }
        layers.append(convBNAct(hidden, hidden, kernel: 3, stride: stride, groups: hidden, act: ReLU6(), generator: &g))
        layers.append(Conv2d(hidden, cout, kernel: 1, bias: false, initialization: .heNormal, generator: &g))
        layers.append(BatchNorm2d(cout))
        conv = Sequential(layers)
        residual = stride == 1 && cin == cout
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        residual ? x + conv(x) : conv(x)
    }
}

public final class MobileNetV2: Module {
    public let features: Sequential
    public let classifier: Sequential

    public init(numClasses: Int = 1000, inChannels: Int = 3, seed: UInt64 = 0) {
        var g = SeededGenerator(seed: seed)
        var layers: [Module] = [convBNAct(inChannels, 32, kernel: 3, stride: 2, act: ReLU6(), generator: &g)]
        var cin = 32
        for (t, c, n, s) in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)] {
            for i in 0..<n {
                layers.append(InvertedResidual(cin, c, stride: i == 0 ? s : 1, expand: t, generator: &g))
                cin = c
            }
        }
        layers.append(convBNAct(cin, 1280, kernel: 1, act: ReLU6(), generator: &g))
        features = Sequential(layers)
        classifier = Sequential([Dropout(p: 0.2, seed: seed &+ 1), Linear(1280, numClasses, generator: &g)])
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        classifier(globalAvgPool2d(features(x)).flattened())
    }
}

// MARK: MobileNetV3

/// One MobileNetV3 block setting: kernel, expanded width, output width, SE, hard-swish, stride.
struct V3Block { let k, exp, out: Int; let se, hs: Bool; let stride: Int }

/// MobileNetV3's inverted residual with optional SE after the depthwise conv. Keys `block.N…`.
public final class V3InvertedResidual: Module {
    public let block: Sequential
    let residual: Bool

    init(_ cin: Int, _ b: V3Block, generator g: inout SeededGenerator) {
        let (eps, mom): (Float, Float) = (0.001, 0.01)
        func act() -> Module { b.hs ? HardSwish() : ReLU() }
        var layers: [Module] = []
        if b.exp != cin { layers.append(convBNAct(cin, b.exp, kernel: 1, act: act(), eps: eps, momentum: mom, generator: &g)) }
        layers.append(convBNAct(b.exp, b.exp, kernel: b.k, stride: b.stride, groups: b.exp, act: act(), eps: eps, momentum: mom, generator: &g))
        if b.se {
            layers.append(SqueezeExcitation(channels: b.exp, config: SEConfig(reduction: 4, rounding: .torchvision(8), gate: .hardSigmoid),
                                            generator: &g))
        }
        layers.append(convBNAct(b.exp, b.out, kernel: 1, act: nil, eps: eps, momentum: mom, generator: &g))
        block = Sequential(layers)
        residual = b.stride == 1 && cin == b.out
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        residual ? x + block(x) : block(x)
    }
}

public final class MobileNetV3: Module {
    public let features: Sequential
    public let classifier: Sequential

    public init(large: Bool, numClasses: Int = 1000, inChannels: Int = 3, seed: UInt64 = 0) {
        var g = SeededGenerator(seed: seed)
        let blocks: [V3Block] = large ? [
            V3Block(k: 3, exp: 16, out: 16, se: false, hs: false, stride: 1), V3Block(k: 3, exp: 64, out: 24, se: false, hs: false, stride: 2),
            V3Block(k: 3, exp: 72, out: 24, se: false, hs: false, stride: 1), V3Block(k: 5, exp: 72, out: 40, se: true, hs: false, stride: 2),
            V3Block(k: 5, exp: 120, out: 40, se: true, hs: false, stride: 1), V3Block(k: 5, exp: 120, out: 40, se: true, hs: false, stride: 1),
            V3Block(k: 3, exp: 240, out: 80, se: false, hs: true, stride: 2), V3Block(k: 3, exp: 200, out: 80, se: false, hs: true, stride: 1),
            V3Block(k: 3, exp: 184, out: 80, se: false, hs: true, stride: 1), V3Block(k: 3, exp: 184, out: 80, se: false, hs: true, stride: 1),
            V3Block(k: 3, exp: 480, out: 112, se: true, hs: true, stride: 1), V3Block(k: 3, exp: 672, out: 112, se: true, hs: true, stride: 1),
            V3Block(k: 5, exp: 672, out: 160, se: true, hs: true, stride: 2), V3Block(k: 5, exp: 960, out: 160, se: true, hs: true, stride: 1),
            V3Block(k: 5, exp: 960, out: 160, se: true, hs: true, stride: 1),
        ] : [
            V3Block(k: 3, exp: 16, out: 16, se: true, hs: false, stride: 2), V3Block(k: 3, exp: 72, out: 24, se: false, hs: false, stride: 2),
            V3Block(k: 3, exp: 88, out: 24, se: false, hs: false, stride: 1), V3Block(k: 5, exp: 96, out: 40, se: true, hs: true, stride: 2),
            V3Block(k: 5, exp: 240, out: 40, se: true, hs: true, stride: 1), V3Block(k: 5, exp: 240, out: 40, se: true, hs: true, stride: 1),
            V3Block(k: 5, exp: 120, out: 48, se: true, hs: true, stride: 1), V3Block(k: 5, exp: 144, out: 48, se: true, hs: true, stride: 1),
            V3Block(k: 5, exp: 288, out: 96, se: true, hs: true, stride: 2), V3Block(k: 5, exp: 576, out: 96, se: true, hs: true, stride: 1),
            V3Block(k: 5, exp: 576, out: 96, se: true, hs: true, stride: 1),
        ]
        var layers: [Module] = [convBNAct(inChannels, 16, kernel: 3, stride: 2, act: HardSwish(), eps: 0.001, momentum: 0.01, generator: &g)]
        var cin = 16
        for b in blocks {
            layers.append(V3InvertedResidual(cin, b, generator: &g))
            cin = b.out
        }
        layers.append(convBNAct(cin, cin * 6, kernel: 1, act: HardSwish(), eps: 0.001, momentum: 0.01, generator: &g))
        features = Sequential(layers)
        let hidden = large ? 1280 : 1024
        classifier = Sequential([Linear(cin * 6, hidden, generator: &g), HardSwish(), Dropout(p: 0.2, seed: seed &+ 1),
                                 Linear(hidden, numClasses, generator: &g)])
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        classifier(globalAvgPool2d(features(x)).flattened())
    }
}

extension ModelRegistry {
    static func mobileEntries() -> [ModelEntry] {
        func entry(_ name: String, _ family: String, se: Bool, min: Int = 32, _ make: @escaping @Sendable (ModelOptions) -> Module) -> ModelEntry {
            ModelEntry(name: name, family: family, defaultInputSize: (224, 224), minimumInputSize: min, hasSE: se, build: make)
        }
        return [
            entry("vgg16_bn", "VGG", se: false) { VGG(se: nil, numClasses: $0.numClasses ?? 1000, inChannels: $0.inChannels, seed: $0.seed) },
            entry("se_vgg16_bn", "SE-VGG", se: true) { VGG(se: $0.se(.paper), numClasses: $0.numClasses ?? 1000, inChannels: $0.inChannels, seed: $0.seed) },
            entry("mobilenet_v1", "MobileNet", se: false) { MobileNetV1(se: nil, numClasses: $0.numClasses ?? 1000, inChannels: $0.inChannels, seed: $0.seed) },
            entry("se_mobilenet_v1", "SE-MobileNet", se: true) {
                MobileNetV1(se: $0.se(.paper), numClasses: $0.numClasses ?? 1000, inChannels: $0.inChannels, seed: $0.seed)
            },
            entry("mobilenet_v2", "MobileNetV2", se: false) { MobileNetV2(numClasses: $0.numClasses ?? 1000, inChannels: $0.inChannels, seed: $0.seed) },
            entry("mobilenet_v3_large", "MobileNetV3", se: true) {
                MobileNetV3(large: true, numClasses: $0.numClasses ?? 1000, inChannels: $0.inChannels, seed: $0.seed)
            },
            entry("mobilenet_v3_small", "MobileNetV3", se: true) {
                MobileNetV3(large: false, numClasses: $0.numClasses ?? 1000, inChannels: $0.inChannels, seed: $0.seed)
            },
        ]
    }
}
