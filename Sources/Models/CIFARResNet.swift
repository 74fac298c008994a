// CIFAR ResNets (He et al., "Deep Residual Learning", 2016, §4.2): depth 6n + 2 with three stages
// of n basic blocks at widths 16, 32, 64 on 32×32 inputs, parameter-free shortcuts (option A:
// subsample by 2 and zero-pad the new channels), and the pre-activation bottleneck ResNet-164
// (He et al., "Identity Mappings", 2016: depth 9n + 2, widths 16/32/64 ×4). SE versions put the SE
// block on the residual branch before the addition, as in the paper's Fig. 3; with 16–64
// channels the reduced width is ⌊C/16⌋ = 1, 2, 4 (the paper's rule; see docs/complexity.md).
// These names are not timm's (timm has no CIFAR ResNets).

import NN
import TensorCore

/// Option A shortcut: x[:, :, ::2, ::2] with zero channels added on both sides.
func zeroPadShortcut(_ x: Tensor, outChannels: Int, stride: Int) -> Tensor {
    let sub = stride == 1 ? x : avgPool2d(x, kernel: (1, 1), stride: (stride, stride))
    let extra = outChannels - x.shape[1]
    guard extra > 0 else { return sub }
    let pad = Tensor.zeros([sub.shape[0], extra / 2, sub.shape[2], sub.shape[3]])
    let pad2 = Tensor.zeros([sub.shape[0], extra - extra / 2, sub.shape[2], sub.shape[3]])
    return concatChannels([pad, sub, pad2])
}

/// A CIFAR basic block: 3×3 conv-BN-ReLU, 3×3 conv-BN, (SE,) + option-A shortcut, ReLU.
public final class CIFARBasicBlock: Module {
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
    public let se: SqueezeExcitation?
    let stride: Int, outChannels: Int
    public let paperName: String

    init(_ cin: Int, _ cout: Int, stride: Int, se: SEConfig?, name: String, generator g: inout SeededGenerator) {
        conv1 = Conv2d(cin, cout, kernel: 3, stride: stride, padding: 1, bias: false, initialization: .heNormal, generator: &g)
        bn1 = BatchNorm2d(cout)
        conv2 = Conv2d(cout, cout, kernel: 3, padding: 1, bias: false, initialization: .heNormal, generator: &g)
        bn2 = BatchNorm2d(cout)
        self.se = se.map { SqueezeExcitation(channels: cout, config: $0, generator: &g) }
        (self.stride, outChannels, paperName) = (stride, cout, name)
        self.se?.paperName = name
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let h = bn2(conv2(bn1(conv1(x), relu: true)))
        if let se {
            return se.scaledAddReLU(h, residual: zeroPadShortcut(x, outChannels: outChannels, stride: stride))
        }
        return residualAddReLU(h, residual: zeroPadShortcut(x, outChannels: outChannels, stride: stride))
    }
}

/// A pre-activation bottleneck: BN-ReLU-1×1, BN-ReLU-3×3 (stride), BN-ReLU-1×1 (×4), (SE,) plus
/// the identity or a 1×1 projection of the pre-activated input.
public final class PreActBottleneck: Module {
    public let bn1: BatchNorm2d, conv1: Conv2d, bn2: BatchNorm2d, conv2: Conv2d, bn3: BatchNorm2d, conv3: Conv2d
    public let se: SqueezeExcitation?
    public let shortcut: Conv2d?
    public let paperName: String

    init(_ cin: Int, planes: Int, stride: Int, se: SEConfig?, name: String, generator g: inout SeededGenerator) {
        let out = planes * 4
        bn1 = BatchNorm2d(cin)
        conv1 = Conv2d(cin, planes, kernel: 1, bias: false, initialization: .heNormal, generator: &g)
        bn2 = BatchNorm2d(planes)
        conv2 = Conv2d(planes, planes, kernel: 3, stride: stride, padding: 1, bias: false, initialization: .heNormal, generator: &g)
        bn3 = BatchNorm2d(planes)
        conv3 = Conv2d(planes, out, kernel: 1, bias: false, initialization: .heNormal, generator: &g)
        self.se = se.map { SqueezeExcitation(channels: out, config: $0, generator: &g) }
        shortcut = (stride != 1 || cin != out)
            ? Conv2d(cin, out, kernel: 1, stride: stride, bias: false, initialization: .heNormal, generator: &g) : nil
        paperName = name
        self.se?.paperName = name
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let a = bn1(x, relu: true)
        var h = conv1(a)
        h = conv2(bn2(h, relu: true))
        h = conv3(bn3(h, relu: true))
        if let se { h = se(h) }
        return h + (shortcut?(a) ?? x)
    }
}

/// CIFAR ResNet-(6n+2) or pre-activation ResNet-(9n+2) for 32×32 inputs.
public final class CIFARResNet: Module {
    public let conv1: Conv2d
    public let bn1: BatchNorm2d?
    public let layer1: [Module], layer2: [Module], layer3: [Module]
    /// Final BN of the pre-activation network.
    public let bn: BatchNorm2d?
    public let fc: Linear

    /// `depth` 20, 32, 44, 56, 110 (basic) or 164 (`preActivation`).
    /// `seStages`: the paper-numbered stages (2–4 here) whose blocks get SE.
    public init(depth: Int, preActivation: Bool = false, se: SEConfig?, seStages: Set<Int> = [2, 3, 4], numClasses: Int = 10,
                inChannels: Int = 3, seed: UInt64 = 0) {
        var g = SeededGenerator(seed: seed)
        conv1 = Conv2d(inChannels, 16, kernel: 3, padding: 1, bias: false, initialization: .heNormal, generator: &g)
        bn1 = preActivation ? nil : BatchNorm2d(16)
        var stages: [[Module]] = []
        var cin = 16
        let n = preActivation ? (depth - 2) / 9 : (depth - 2) / 6
        for (i, width) in [16, 32, 64].enumerated() {
            var blocks: [Module] = []
            for b in 0..<n {
                let stride = b == 0 && i > 0 ? 2 : 1
                let name = "SE_\(i + 2)_\(b + 1)"
                let se = seStages.contains(i + 2) ? se : nil
                if preActivation {
                    blocks.append(PreActBottleneck(cin, planes: width, stride: stride, se: se, name: name, generator: &g))
                    cin = width * 4
                } else {
                    blocks.append(CIFARBasicBlock(cin, width, stride: stride, se: se, name: name, generator: &g))
                    cin = width
                }
            }
            stages.append(blocks)
        }
        (layer1, layer2, layer3) = (stages[0], stages[1], stages[2])
        bn = preActivation ? BatchNorm2d(cin) : nil
        fc = Linear(cin, numClasses, generator: &g)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        var h = conv1(x)
        if let bn1 { h = bn1(h, relu: true) }
        for stage in [layer1, layer2, layer3] { for block in stage { h = block(h) } }
        if let bn { h = bn(h, relu: true) }
        return fc(globalAvgPool2d(h).flattened())
    }
}

extension ModelRegistry {
    static func cifarEntries() -> [ModelEntry] {
        var out: [ModelEntry] = []
        for depth in [20, 32, 44, 56, 110] {
            for se in [false, true] {
                out.append(ModelEntry(name: (se ? "seresnet" : "resnet") + "\(depth)", family: se ? "SE-ResNet (CIFAR)" : "ResNet (CIFAR)",
                                      defaultInputSize: (32, 32), minimumInputSize: 8, hasSE: se, defaultNumClasses: 10) { o in
                    CIFARResNet(depth: depth, se: o.se(se ? .paper : nil), seStages: o.seStages ?? [2, 3, 4], numClasses: o.numClasses ?? 10, inChannels: o.inChannels, seed: o.seed)
                })
            }
        }
        for se in [false, true] {
            out.append(ModelEntry(name: se ? "preact_seresnet164" : "preact_resnet164", family: se ? "SE-PreAct (CIFAR)" : "PreAct (CIFAR)",
                                  defaultInputSize: (32, 32), minimumInputSize: 8, hasSE: se, defaultNumClasses: 10) { o in
                CIFARResNet(depth: 164, preActivation: true, se: o.se(se ? .paper : nil), seStages: o.seStages ?? [2, 3, 4], numClasses: o.numClasses ?? 10, inChannels: o.inChannels, seed: o.seed)
            })
        }
        return out
    }

}
