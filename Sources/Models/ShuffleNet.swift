// ShuffleNet v1 1× with g = 3 (Zhang et al. 2018) and SE-ShuffleNet (paper Table 3). Units:
// grouped 1×1 (to a quarter of the stage width; ungrouped on the 24-channel stem output), channel
// shuffle, depthwise 3×3, grouped 1×1; stride-1 units add the identity, stride-2 units concatenate
// a 3×3/2 average pool of the input. SE sits on each unit's residual branch before the add or
// concat (see docs/complexity.md for why). Keys are ours.

import NN
import TensorCore

public final class ShuffleUnit: Module {
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d, conv3: Conv2d, bn3: BatchNorm2d
    public let se: SqueezeExcitation?
    let groups: Int, stride: Int

    init(_ cin: Int, _ cout: Int, stride: Int, groups: Int, firstGrouped: Bool, se: SEConfig?, generator g: inout SeededGenerator) {
        let mid = cout / 4
        let branchOut = stride == 2 ? cout - cin : cout
        conv1 = Conv2d(cin, mid, kernel: 1, groups: firstGrouped ? groups : 1, bias: false, initialization: .heNormal, generator: &g)
        bn1 = BatchNorm2d(mid)
        conv2 = Conv2d(mid, mid, kernel: 3, stride: stride, padding: 1, groups: mid, bias: false, initialization: .heNormal, generator: &g)
        bn2 = BatchNorm2d(mid)
        conv3 = Conv2d(mid, branchOut, kernel: 1, groups: groups, bias: false, initialization: .heNormal, generator: &g)
        bn3 = BatchNorm2d(branchOut)
        self.se = se.map { SqueezeExcitation(channels: branchOut, config: $0, generator: &g) }
        (self.groups, self.stride) = (groups, stride)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        var h = channelShuffle(bn1(conv1(x), relu: true), groups: groups)
        h = bn3(conv3(bn2(conv2(h))))
        if let se { h = se(h) }
        if stride == 2 {
            return relu(concatChannels([avgPool2d(x, kernel: (3, 3), stride: (2, 2), padding: (1, 1)), h]))
        }
        return relu(x + h)
    }
}

public final class ShuffleNetV1: Module {
    public let conv1: Conv2d, bn1: BatchNorm2d
    public let stage2: [Module], stage3: [Module], stage4: [Module]
    public let fc: Linear

    public init(groups: Int = 3, se: SEConfig?, numClasses: Int = 1000, inChannels: Int = 3, seed: UInt64 = 0) {
        var g = SeededGenerator(seed: seed)
        conv1 = Conv2d(inChannels, 24, kernel: 3, stride: 2, padding: 1, bias: false, initialization: .heNormal, generator: &g)
        bn1 = BatchNorm2d(24)
        let widths = [1: [144, 288, 576], 2: [200, 400, 800], 3: [240, 480, 960], 4: [272, 544, 1088], 8: [384, 768, 1536]][groups]!
        var stages: [[Module]] = []
        var cin = 24
        for (i, (width, repeats)) in zip(widths, [4, 8, 4]).enumerated() {
            var units: [Module] = []
            for u in 0..<repeats {
                units.append(ShuffleUnit(cin, width, stride: u == 0 ? 2 : 1, groups: groups, firstGrouped: !(i == 0 && u == 0),
                                         se: se, generator: &g))
                cin = width
            }
            stages.append(units)
        }
        (stage2, stage3, stage4) = (stages[0], stages[1], stages[2])
        fc = Linear(cin, numClasses, generator: &g)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        var h = maxPool2d(bn1(conv1(x), relu: true), kernel: (3, 3), stride: (2, 2), padding: (1, 1))
        for stage in [stage2, stage3, stage4] { for unit in stage { h = unit(h) } }
        return fc(globalAvgPool2d(h).flattened())
    }
}

extension ModelRegistry {
    static func shuffleEntries() -> [ModelEntry] {
        [false, true].map { se in
            ModelEntry(name: se ? "se_shufflenet_v1_g3" : "shufflenet_v1_g3", family: se ? "SE-ShuffleNet" : "ShuffleNet",
                       defaultInputSize: (224, 224), minimumInputSize: 32, hasSE: se) { o in
                ShuffleNetV1(groups: 3, se: o.se(se ? .paper : nil), numClasses: o.numClasses ?? 1000, inChannels: o.inChannels, seed: o.seed)
            }
        }
    }
}
