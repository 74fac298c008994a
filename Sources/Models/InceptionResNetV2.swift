// Inception-ResNet-v2 (Szegedy et al. 2016) as TF-slim built it and timm ports it
// (`inception_resnet_v2`: 35×35 ×10 / 17×17 ×20 / 8×8 ×10 residual Inception blocks, 299×299 input,
// BN eps 1e-3, keys `conv2d_1a.conv`, `mixed_5b.branch1.0.bn`, `repeat.3.conv2d`, `classif`), and
// SE-Inception-ResNet-v2: an SE block on each residual block's branch, after the 1×1 "up"
// convolution and before the residual scaling and the addition (paper Fig. 3, the SE-ResNet
// rule applied to Inception-ResNet's residual modules; 40 SE blocks). The SENet paper does not
// publish its re-implementation; `docs/complexity.md` discusses what this means for Table 2.

import NN
import TensorCore

/// Conv (no bias) + BN (eps 1e-3) + ReLU, keys `conv`, `bn` as timm's ConvNormAct.
public final class ConvNormAct: Module {
    public let conv: Conv2d
    public let bn: BatchNorm2d

    public init(_ cin: Int, _ cout: Int, kernel: (Int, Int), stride: Int = 1, padding: (Int, Int) = (0, 0),
                generator g: inout SeededGenerator) {
        conv = Conv2d(cin, cout, kernel: kernel, stride: (stride, stride), padding: padding, bias: false, generator: &g)
        bn = BatchNorm2d(cout, eps: 1e-3)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor { bn(conv(x), relu: true) }
}

/// Parallel branches whose outputs are concatenated along channels (`branch0`, `branch1`, …).
final class InceptionMixed: Module {
    let branches: [Module]
    override var childrenOverride: [(String, Module)]? { branches.enumerated().map { ("branch\($0.offset)", $0.element) } }

    init(_ branches: [Module]) { self.branches = branches }

    override func callAsFunction(_ x: Tensor) -> Tensor { concatChannels(branches.map { $0(x) }) }
}

/// A residual Inception block (timm's Block35 / Block17 / Block8):
/// relu?(x + scale · SE(conv2d(concat(branches(x))))).
final class InceptionResidual: Module {
    let branches: [Module]
    let conv2d: Conv2d
    let se: SqueezeExcitation?
    let scale: Float
    let finalReLU: Bool

    override var childrenOverride: [(String, Module)]? {
        branches.enumerated().map { ("branch\($0.offset)", $0.element) } + [("conv2d", conv2d as Module)]
            + (se.map { [("se", $0 as Module)] } ?? [])
    }

    init(_ branches: [Module], width: Int, channels: Int, scale: Float, finalReLU: Bool = true, se: SEConfig?,
         generator g: inout SeededGenerator) {
        self.branches = branches
        conv2d = Conv2d(width, channels, kernel: 1, generator: &g)
        self.se = se.map { SqueezeExcitation(channels: channels, config: $0, generator: &g) }
        (self.scale, self.finalReLU) = (scale, finalReLU)
    }

    override func callAsFunction(_ x: Tensor) -> Tensor {
        var branch = conv2d(concatChannels(branches.map { $0(x) }))
        if let se { branch = se(branch) }
        let y = branch * scale + x
        return finalReLU ? relu(y) : y
    }
}

public final class InceptionResNetV2: Module {
    private let layers: [(String, Module)]
    public let classif: Linear
    public override var childrenOverride: [(String, Module)]? { layers + [("classif", classif)] }

    public init(se: SEConfig?, numClasses: Int = 1000, inChannels: Int = 3, seed: UInt64 = 0) {
        var g = SeededGenerator(seed: seed)
        func c(_ cin: Int, _ cout: Int, _ k: Int, _ s: Int = 1, _ p: Int = 0) -> ConvNormAct {
            ConvNormAct(cin, cout, kernel: (k, k), stride: s, padding: (p, p), generator: &g)
        }
        func c(_ cin: Int, _ cout: Int, _ k: (Int, Int), _ p: (Int, Int)) -> ConvNormAct {
            ConvNormAct(cin, cout, kernel: k, padding: p, generator: &g)
        }
        func seq(_ ms: [Module]) -> Sequential { Sequential(ms) }
        var layers: [(String, Module)] = [
            ("conv2d_1a", c(inChannels, 32, 3, 2)), ("conv2d_2a", c(32, 32, 3)), ("conv2d_2b", c(32, 64, 3, 1, 1)),
            ("maxpool_3a", MaxPool2d(kernel: 3, stride: 2)), ("conv2d_3b", c(64, 80, 1)), ("conv2d_4a", c(80, 192, 3)),
            ("maxpool_5a", MaxPool2d(kernel: 3, stride: 2)),
        ]
        layers.append(("mixed_5b", InceptionMixed([
            c(192, 96, 1),
            seq([c(192, 48, 1), c(48, 64, 5, 1, 2)]),
            seq([c(192, 64, 1), c(64, 96, 3, 1, 1), c(96, 96, 3, 1, 1)]),
            seq([AvgPool2d(kernel: 3, stride: 1, padding: 1, countIncludePad: false), c(192, 64, 1)]),
        ])))
        layers.append(("repeat", Sequential((0..<10).map { _ in
            InceptionResidual([
                c(320, 32, 1),
                seq([c(320, 32, 1), c(32, 32, 3, 1, 1)]),
                seq([c(320, 32, 1), c(32, 48, 3, 1, 1), c(48, 64, 3, 1, 1)]),
            ], width: 128, channels: 320, scale: 0.17, se: se, generator: &g)
        })))
        layers.append(("mixed_6a", InceptionMixed([
            c(320, 384, 3, 2),
            seq([c(320, 256, 1), c(256, 256, 3, 1, 1), c(256, 384, 3, 2)]),
            MaxPool2d(kernel: 3, stride: 2),
        ])))
        layers.append(("repeat_1", Sequential((0..<20).map { _ in
            InceptionResidual([
                c(1088, 192, 1),
                seq([c(1088, 128, 1), c(128, 160, (1, 7), (0, 3)), c(160, 192, (7, 1), (3, 0))]),
            ], width: 384, channels: 1088, scale: 0.10, se: se, generator: &g)
        })))
        layers.append(("mixed_7a", InceptionMixed([
            seq([c(1088, 256, 1), c(256, 384, 3, 2)]),
            seq([c(1088, 256, 1), c(256, 288, 3, 2)]),
            seq([c(1088, 256, 1), c(256, 288, 3, 1, 1), c(288, 320, 3, 2)]),
            MaxPool2d(kernel: 3, stride: 2),
        ])))
        func block8(finalReLU: Bool) -> InceptionResidual {
            InceptionResidual([
                c(2080, 192, 1),
                seq([c(2080, 192, 1), c(192, 224, (1, 3), (0, 1)), c(224, 256, (3, 1), (1, 0))]),
            ], width: 448, channels: 2080, scale: finalReLU ? 0.20 : 1.0, finalReLU: finalReLU, se: se, generator: &g)
        }
        layers.append(("repeat_2", Sequential((0..<9).map { _ in block8(finalReLU: true) })))
        layers.append(("block8", block8(finalReLU: false)))
        layers.append(("conv2d_7b", c(2080, 1536, 1)))
        self.layers = layers
        classif = Linear(1536, numClasses, generator: &g)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let features = layers.reduce(x) { $1.1($0) }
        return classif(globalAvgPool2d(features).flattened())
    }
}

extension ModelRegistry {
    static func inceptionResNetEntries() -> [ModelEntry] {
        [false, true].map { se in
            ModelEntry(name: se ? "se_inception_resnet_v2" : "inception_resnet_v2",
                       family: se ? "SE-Inception-ResNet-v2" : "Inception-ResNet-v2",
                       defaultInputSize: (299, 299), minimumInputSize: 75, hasSE: se) { o in
                InceptionResNetV2(se: o.se(se ? .paper : nil), numClasses: o.numClasses ?? 1000, inChannels: o.inChannels, seed: o.seed)
            }
        }
    }
}
