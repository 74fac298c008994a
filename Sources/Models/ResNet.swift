// ResNet, ResNeXt and their SE versions (He et al. 2016; Xie et al. 2017; Hu et al. 2018 §4,
// Table 1), in two layouts of the same networks:
//
// - timm / torchvision (`resnet50`, `seresnet50`, `seresnext50_32x4d`): stride-2 in the 3×3 conv
//   of a downsampling bottleneck, stem max-pool 3×3/2 with padding 1, SE width make_divisible(C/16, 8),
//   keys `conv1`, `bn1`, `layerS.i.…`, `layerS.i.se.fc1`, `fc`.
// - the Caffe release, as ported by Cadene and timm's `legacy_*` (`legacy_seresnet50`,
//   `legacy_seresnext50_32x4d`, `legacy_senet154`): stride-2 in the first 1×1 of an SE-ResNet
//   bottleneck (in the 3×3 for SE-ResNeXt and SENet-154), stem max-pool 3×3/2 with ceil_mode and
//   no padding, SE width ⌊C/16⌋, keys `layer0.conv1`, `layerS.i.se_module.fc1`, `last_linear`.
//   Its basic blocks (`legacy_seresnet18/34`, which the Caffe release did not have; Cadene trained
//   them) apply a ReLU after bn2, before SE and the add, as timm's SEResNetBlock does.
//
// One block type per depth class (basic, bottleneck) holds the SE block in a slot; everything that
// differs between variants is data in `ResNetSpec`. Stages are numbered as the paper does: the
// stem is stage 1, `layer1`…`layer4` are stages 2–5.

import NN
import TensorCore

public enum ResNetLayout: String, Sendable { case timm, caffe }

/// Where the SE block sits in a residual block (paper Fig. 5, Table 14; Table 15 for `.after3x3`).
public enum SEPlacement: String, Sendable, CaseIterable {
    /// On the residual branch after its last BN, before the identity is added (the paper's SE).
    case standard
    /// On the block's input, before the branch (SE-PRE).
    case pre
    /// After the addition and ReLU (SE-POST).
    case post
    /// On the identity path, in parallel with the branch (SE-Identity).
    case identity
    /// After the 3×3 convolution's activation, on the bottleneck width (Table 15, "SE_3×3").
    case after3x3
}

/// The residual block kinds.
public enum ResidualBlockKind: Sendable {
    /// Two 3×3 convolutions (ResNet-18/34).
    case basic
    /// 1×1 → 3×3 (grouped for ResNeXt) → 1×1 with expansion 4.
    case bottleneck
    /// SENet-154's bottleneck: first 1×1 to 2·planes, grouped 3×3 to 4·planes (the "halved first
    /// 1×1" relative to a 64×4d ResNeXt).
    case senetBottleneck
}

/// A ResNet-family network as data: read it like the paper's Table 1.
public struct ResNetSpec: Sendable {
    public var block: ResidualBlockKind
    /// Blocks per stage (stages 2–5).
    public var depths: [Int]
    public var layout: ResNetLayout
    /// Groups of the 3×3 convolution (ResNeXt's C).
    public var cardinality = 1
    /// Width per group at the first stage (ResNeXt's d): the 3×3 width is
    /// ⌊planes · baseWidth / 64⌋ · cardinality.
    public var baseWidth = 64
    /// SE configuration; nil builds the plain network.
    public var se: SEConfig?
    /// The paper's stage numbers (2–5) whose blocks get SE (Table 13).
    public var seStages: Set<Int> = [2, 3, 4, 5]
    public var sePlacement: SEPlacement = .standard
    /// SENet-154's stem of three 3×3 convolutions (64/2, 64, 128) instead of one 7×7/2.
    public var deepStem = false
    /// Kernel and padding of the projection shortcuts of stages 3–5 (SENet-154: 3 and 1).
    public var downsampleKernel = 1
    public var downsamplePadding = 0
    /// Dropout before the classifier (SENet-154: 0.2).
    public var dropout: Float = 0
    public var inChannels = 3
    public var numClasses = 1000

    public init(block: ResidualBlockKind, depths: [Int], layout: ResNetLayout, cardinality: Int = 1, baseWidth: Int = 64,
                se: SEConfig? = nil) {
        self.block = block
        self.depths = depths
        self.layout = layout
        self.cardinality = cardinality
        self.baseWidth = baseWidth
        self.se = se
    }

    /// Channels of the stem's output.
    var stemWidth: Int { deepStem ? 128 : 64 }
    var expansion: Int { block == .basic ? 1 : 4 }
}

/// The stem (paper stage 1): conv-BN-ReLU (×3 for SENet-154) and a 3×3/2 max pool.
public final class ResNetStem: Module {
    public let conv1: Conv2d, bn1: BatchNorm2d
    public let conv2: Conv2d?, bn2: BatchNorm2d?
    public let conv3: Conv2d?, bn3: BatchNorm2d?
    let pool: MaxPool2d

    init(_ spec: ResNetSpec, generator g: inout SeededGenerator) {
        if spec.deepStem {
            conv1 = Conv2d(spec.inChannels, 64, kernel: 3, stride: 2, padding: 1, bias: false, initialization: .heNormal, generator: &g)
            bn1 = BatchNorm2d(64)
            conv2 = Conv2d(64, 64, kernel: 3, padding: 1, bias: false, initialization: .heNormal, generator: &g)
            bn2 = BatchNorm2d(64)
            conv3 = Conv2d(64, 128, kernel: 3, padding: 1, bias: false, initialization: .heNormal, generator: &g)
            bn3 = BatchNorm2d(128)
        } else {
            conv1 = Conv2d(spec.inChannels, 64, kernel: 7, stride: 2, padding: 3, bias: false, initialization: .heNormal, generator: &g)
            bn1 = BatchNorm2d(64)
            (conv2, bn2, conv3, bn3) = (nil, nil, nil, nil)
        }
        pool = spec.layout == .timm ? MaxPool2d(kernel: 3, stride: 2, padding: 1)
                                    : MaxPool2d(kernel: 3, stride: 2, ceilMode: true)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        var h = bn1(conv1(x), relu: true)
        if let conv2, let bn2 { h = bn2(conv2(h), relu: true) }
        if let conv3, let bn3 { h = bn3(conv3(h), relu: true) }
        return pool(h)
    }
}

/// A residual block (basic or bottleneck) with an optional SE block in its attention slot.
public final class ResidualBlock: Module {
    public let conv1: Conv2d, bn1: BatchNorm2d
    public let conv2: Conv2d, bn2: BatchNorm2d
    public let conv3: Conv2d?, bn3: BatchNorm2d?
    public let se: SqueezeExcitation?
    public let downsample: Sequential?
    public let placement: SEPlacement
    /// timm's `legacy_seresnet18/34` (Cadene's SEResNetBlock) apply a ReLU after bn2, before the
    /// SE block and the add; their weights were trained that way.
    let reluAfterBN2: Bool
    let seKey: String
    /// The paper's name of this block's SE block (`SE_<stage>_<block>`, 1-based block).
    public let paperName: String

    init(_ spec: ResNetSpec, inplanes: Int, planes: Int, stride: Int, stage: Int, index: Int,
         generator g: inout SeededGenerator) {
        let out = planes * spec.expansion
        let groups = spec.cardinality
        func conv(_ i: Int, _ o: Int, _ k: Int, _ s: Int = 1, groups: Int = 1) -> Conv2d {
            Conv2d(i, o, kernel: k, stride: s, padding: k / 2, groups: groups, bias: false, initialization: .heNormal, generator: &g)
        }
        var seChannels = out
        reluAfterBN2 = spec.block == .basic && spec.layout == .caffe
        switch spec.block {
        case .basic:
            conv1 = conv(inplanes, planes, 3, stride)
            conv2 = conv(planes, planes, 3)
            (conv3, bn3) = (nil, nil)
            bn1 = BatchNorm2d(planes); bn2 = BatchNorm2d(planes)
        case .bottleneck, .senetBottleneck:
            let w1: Int, w2: Int
            if spec.block == .senetBottleneck {
                (w1, w2) = (planes * 2, planes * 4)
            } else if spec.layout == .caffe && groups == 1 {
                (w1, w2) = (planes, planes)
            } else {
                let width = planes * spec.baseWidth / 64 * groups
                (w1, w2) = (width, width)
            }
            // The Caffe SE-ResNet strides its first 1×1; every other variant strides the 3×3.
            let strideFirst = spec.layout == .caffe && spec.block == .bottleneck && groups == 1
            conv1 = conv(inplanes, w1, 1, strideFirst ? stride : 1)
            conv2 = conv(w1, w2, 3, strideFirst ? 1 : stride, groups: groups)
            conv3 = conv(w2, out, 1)
            bn1 = BatchNorm2d(w1); bn2 = BatchNorm2d(w2); bn3 = BatchNorm2d(out)
            if spec.sePlacement == .after3x3 { seChannels = w2 }
        }
        if spec.sePlacement == .pre { seChannels = inplanes }
        if let cfg = spec.se, spec.seStages.contains(stage) {
            se = SqueezeExcitation(channels: seChannels, config: cfg, generator: &g)
        } else {
            se = nil
        }
        if stride != 1 || inplanes != out {
            // SENet-154's 3×3 projections start at stage 3; stage 2's projection is 1×1 (as timm's).
            let (k, p) = stage == 2 ? (1, 0) : (spec.downsampleKernel, spec.downsamplePadding)
            downsample = Sequential([
                Conv2d(inplanes, out, kernel: k, stride: stride, padding: p,
                       bias: false, initialization: .heNormal, generator: &g),
                BatchNorm2d(out)])
        } else {
            downsample = nil
        }
        placement = spec.sePlacement
        seKey = spec.layout == .timm ? "se" : "se_module"
        paperName = "SE_\(stage)_\(index + 1)"
        se?.paperName = paperName
    }

    public override func keyName(forProperty name: String) -> String {
        name == "se" ? seKey : name
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let input = placement == .pre ? (se?(x) ?? x) : x
        var h = bn1(conv1(input), relu: true)
        h = bn2(conv2(h), relu: reluAfterBN2 || conv3 != nil)
        if placement == .standard, let se, let conv3, let bn3, InferenceEngine.fusesBlockEnd(conv3, bn3, se) {
            // Inside an inference engine: SE scale, residual add and ReLU in conv3's epilogue.
            let shortcut = downsample?(x) ?? x
            return InferenceEngine.seBlockEnd(conv3, se, input: h, residual: shortcut)
                ?? se.scaledAddReLU(bn3(conv3(h)), residual: shortcut)
        }
        if se == nil, let conv3, let bn3, InferenceEngine.fusesPlainBlockEnd(conv3, bn3) {
            // Inside an inference engine: the residual add and the ReLU in conv3's epilogue.
            let shortcut = downsample?(x) ?? x
            return InferenceEngine.plainBlockEnd(conv3, input: h, residual: shortcut)
                ?? residualAddReLU(bn3(conv3(h)), residual: shortcut)
        }
        if let conv3, let bn3 {
            if placement == .after3x3, let se { h = se(h) }
            h = bn3(conv3(h))
        }
        if placement == .standard, let se {
            return se.scaledAddReLU(h, residual: downsample?(x) ?? x)
        }
        if placement == .standard, let se { h = se(h) }
        var shortcut = downsample?(x) ?? x
        if placement == .identity, let se { shortcut = se(shortcut) }
        let y = residualAddReLU(h, residual: shortcut)
        return placement == .post ? (se?(y) ?? y) : y
    }
}

/// A ResNet-family classifier: stem, four stages, global average pool, (dropout,) linear.
public final class ResNet: Module {
    public let stem: ResNetStem
    public let layer1: [Module], layer2: [Module], layer3: [Module], layer4: [Module]
    let dropout: Dropout?
    public let fc: Linear
    public let spec: ResNetSpec

    public init(_ spec: ResNetSpec, seed: UInt64 = 0) {
        precondition(spec.depths.count == 4, "ResNet: four stages expected, got \(spec.depths)")
        var g = SeededGenerator(seed: seed)
        self.spec = spec
        stem = ResNetStem(spec, generator: &g)
        var inplanes = spec.stemWidth
        var stages: [[Module]] = []
        for (i, (planes, depth)) in zip([64, 128, 256, 512], spec.depths).enumerated() {
            var blocks: [Module] = []
            for b in 0..<depth {
                let block = ResidualBlock(spec, inplanes: inplanes, planes: planes, stride: b == 0 && i > 0 ? 2 : 1,
                                          stage: i + 2, index: b, generator: &g)
                blocks.append(block)
                inplanes = planes * spec.expansion
            }
            stages.append(blocks)
        }
        (layer1, layer2, layer3, layer4) = (stages[0], stages[1], stages[2], stages[3])
        dropout = spec.dropout > 0 ? Dropout(p: spec.dropout, seed: seed &+ 1) : nil
        fc = Linear(inplanes, spec.numClasses, generator: &g)
    }

    public override func keyName(forProperty name: String) -> String {
        switch (name, spec.layout) {
        case ("stem", .timm): return ""
        case ("stem", .caffe): return "layer0"
        case ("fc", .caffe): return "last_linear"
        default: return name
        }
    }

    /// Feature map after the last stage.
    public func features(_ x: Tensor) -> Tensor {
        var h = stem(x)
        for stage in [layer1, layer2, layer3, layer4] { for block in stage { h = block(h) } }
        return h
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        var h = globalAvgPool2d(features(x)).flattened()
        if let dropout { h = dropout(h) }
        return fc(h)
    }
}
