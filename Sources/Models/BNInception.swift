// BN-Inception (Ioffe & Szegedy 2015, the Caffe model the SENet paper builds SE-BN-Inception on)
// and SE-BN-Inception: an SE block after each Inception module's concatenation (paper §4, Fig. 2;
// 10 SE blocks). Layer names and keys are those of Cadene's `bninception` port
// (`conv1_7x7_s2`, `inception_3a_1x1_bn`, …, `last_linear`), flat at the root as there.

import NN
import TensorCore

/// One conv-BN-ReLU of the network, by its Caffe name.
struct InceptionConv {
    let name: String
    let cin, cout: Int
    let k: (Int, Int)
    let stride: Int
    let pad: (Int, Int)
}

/// A branch: a chain of conv-BN-ReLUs, optionally after a pooling layer.
struct InceptionBranch {
    enum Pool { case none, avg, max }
    var pool: Pool = .none
    var poolStride = 1
    var convs: [InceptionConv]
}

public final class BNInception: Module {
    private let named: [(String, Module)]
    private let layers: [String: Module]
    private let stem: [InceptionConv]
    private let modules: [(name: String, branches: [InceptionBranch], out: Int)]
    public let se: [SqueezeExcitation]
    public let lastLinear: Linear

    public override var childrenOverride: [(String, Module)]? {
        named + se.enumerated().map { ("se.\($0.offset)", $0.element) } + [("last_linear", lastLinear)]
    }

    public init(se seConfig: SEConfig?, numClasses: Int = 1000, inChannels: Int = 3, seed: UInt64 = 0) {
        var g = SeededGenerator(seed: seed)
        func c(_ name: String, _ cin: Int, _ cout: Int, _ k: Int, _ s: Int = 1, _ p: Int = 0) -> InceptionConv {
            InceptionConv(name: name, cin: cin, cout: cout, k: (k, k), stride: s, pad: (p, p))
        }
        stem = [c("conv1_7x7_s2", inChannels, 64, 7, 2, 3), c("conv2_3x3_reduce", 64, 64, 1), c("conv2_3x3", 64, 192, 3, 1, 1)]
        /// (name, input, #1×1, #3×3 reduce, #3×3, #double-3×3 reduce, #double-3×3, pool, pool proj, stride)
        let table: [(String, Int, Int, Int, Int, Int, Int, InceptionBranch.Pool, Int, Int)] = [
            ("3a", 192, 64, 64, 64, 64, 96, .avg, 32, 1),
            ("3b", 256, 64, 64, 96, 64, 96, .avg, 64, 1),
            ("3c", 320, 0, 128, 160, 64, 96, .max, 0, 2),
            ("4a", 576, 224, 64, 96, 96, 128, .avg, 128, 1),
            ("4b", 576, 192, 96, 128, 96, 128, .avg, 128, 1),
            ("4c", 576, 160, 128, 160, 128, 160, .avg, 128, 1),
            ("4d", 608, 96, 128, 192, 160, 192, .avg, 128, 1),
            ("4e", 608, 0, 128, 192, 192, 256, .max, 0, 2),
            ("5a", 1056, 352, 192, 320, 160, 224, .avg, 128, 1),
            ("5b", 1024, 352, 192, 320, 192, 224, .max, 128, 1),
        ]
        var mods: [(String, [InceptionBranch], Int)] = []
        for (m, cin, n1, r3, n3, rd, nd, pool, proj, s) in table {
            let p = "inception_\(m)_"
            var branches: [InceptionBranch] = []
            if n1 > 0 { branches.append(InceptionBranch(convs: [c(p + "1x1", cin, n1, 1)])) }
            branches.append(InceptionBranch(convs: [c(p + "3x3_reduce", cin, r3, 1), c(p + "3x3", r3, n3, 3, s, 1)]))
            branches.append(InceptionBranch(convs: [c(p + "double_3x3_reduce", cin, rd, 1), c(p + "double_3x3_1", rd, nd, 3, 1, 1),
                                                    c(p + "double_3x3_2", nd, nd, 3, s, 1)]))
            branches.append(InceptionBranch(pool: pool, poolStride: s, convs: proj > 0 ? [c(p + "pool_proj", cin, proj, 1)] : []))
            mods.append((m, branches, n1 + n3 + nd + (proj > 0 ? proj : cin)))
        }
        modules = mods.map { (name: $0.0, branches: $0.1, out: $0.2) }
        var named: [(String, Module)] = []
        for conv in stem + mods.flatMap({ $0.1.flatMap(\.convs) }) {
            named.append((conv.name, Conv2d(conv.cin, conv.cout, kernel: conv.k.0, stride: conv.stride, padding: conv.pad.0,
                                            initialization: .heNormal, generator: &g)))
            named.append((conv.name + "_bn", BatchNorm2d(conv.cout)))
        }
        self.named = named
        layers = Dictionary(uniqueKeysWithValues: named)
        se = seConfig.map { cfg in mods.map { SqueezeExcitation(channels: $0.2, config: cfg, generator: &g) } } ?? []
        lastLinear = Linear(mods.last!.2, numClasses, generator: &g)
    }

    private func apply(_ c: InceptionConv, _ x: Tensor) -> Tensor {
        relu(layers[c.name + "_bn"]!(layers[c.name]!(x)))
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        var h = apply(stem[0], x)
        h = maxPool2d(h, kernel: (3, 3), stride: (2, 2), ceilMode: true)
        h = apply(stem[2], apply(stem[1], h))
        h = maxPool2d(h, kernel: (3, 3), stride: (2, 2), ceilMode: true)
        for (i, m) in modules.enumerated() {
            let outs = m.branches.map { b -> Tensor in
                var y = h
                switch b.pool {
                case .none: break
                case .avg: y = avgPool2d(y, kernel: (3, 3), stride: (1, 1), padding: (1, 1), ceilMode: true)
                // The reduction modules (3c, 4e) pool 3×3/2 unpadded; 5b's pool branch is a 3×3/1 max pool.
                case .max:
                    let p = b.poolStride == 1 ? 1 : 0
                    y = maxPool2d(y, kernel: (3, 3), stride: (b.poolStride, b.poolStride), padding: (p, p), ceilMode: true)
                }
                for c in b.convs { y = apply(c, y) }
                return y
            }
            h = concatChannels(outs)
            if !se.isEmpty { h = se[i](h) }
        }
        return lastLinear(globalAvgPool2d(h).flattened())
    }
}

extension ModelRegistry {
    static func inceptionEntries() -> [ModelEntry] {
        [false, true].map { se in
            ModelEntry(name: se ? "se_bninception" : "bninception", family: se ? "SE-BN-Inception" : "BN-Inception",
                       defaultInputSize: (224, 224), minimumInputSize: 32, hasSE: se) { o in
                BNInception(se: o.se(se ? .paper : nil), numClasses: o.numClasses ?? 1000, inChannels: o.inChannels, seed: o.seed)
            }
        }
    }
}
