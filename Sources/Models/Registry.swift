// The model registry: names as timm's where timm has the model, each a spec plus a builder.

import NN
import TensorCore

/// Options every builder takes.
public struct ModelOptions: Sendable {
    /// Classifier outputs; nil takes the model's default (1000 for ImageNet models, 10 for CIFAR ones).
    public var numClasses: Int?
    public var inChannels = 3
    /// Overrides r in every SE block (paper Table 10).
    public var reduction: Int?
    /// Keeps SE only in these paper stages (2–5; Table 13). Empty removes every SE block.
    public var seStages: Set<Int>?
    /// Overrides where SE sits in each residual block (Fig. 5 / Table 14, Table 15).
    public var sePlacement: SEPlacement?
    public var seed: UInt64 = 0

    public init(numClasses: Int? = nil, inChannels: Int = 3, reduction: Int? = nil, seStages: Set<Int>? = nil,
                sePlacement: SEPlacement? = nil, seed: UInt64 = 0) {
        (self.numClasses, self.inChannels, self.reduction, self.seStages) = (numClasses, inChannels, reduction, seStages)
        (self.sePlacement, self.seed) = (sePlacement, seed)
    }
}

extension ModelOptions {
    /// The SE configuration a builder uses: `base` with the reduction override applied, or nil when
    /// the model has no SE or `seStages` is empty.
    func se(_ base: SEConfig?) -> SEConfig? {
        guard var config = base, seStages.map({ !$0.isEmpty }) ?? true else { return nil }
        if let r = reduction { config.reduction = r }
        return config
    }
}

/// One registered model.
public struct ModelEntry: Sendable {
    public let name: String
    public let family: String
    /// The input size the model was designed for (H, W).
    public let defaultInputSize: (Int, Int)
    /// The smallest input the network accepts.
    public let minimumInputSize: Int
    public let hasSE: Bool
    public var defaultNumClasses = 1000
    let build: @Sendable (ModelOptions) -> Module

    public func callAsFunction(_ options: ModelOptions = ModelOptions()) -> Module { build(options) }
}

/// Raised for an unknown model name or an input below a model's minimum.
public struct ModelError: Error, CustomStringConvertible {
    public let description: String
}

public enum ModelRegistry {
    /// Every model, in listing order.
    public static let entries: [ModelEntry] = resnetEntries() + cifarEntries() + mobileEntries() + inceptionEntries() + inceptionResNetEntries() + shuffleEntries()

    private static let byName: [String: ModelEntry] = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })

    public static var names: [String] { entries.map(\.name) }

    /// The entry for `name`, or an error listing the closest names.
    public static func entry(_ name: String) throws -> ModelEntry {
        if let e = byName[name] { return e }
        let close = names.map { ($0, editDistance($0, name)) }.sorted { $0.1 < $1.1 }.prefix(5).map(\.0)
        throw ModelError(description: "unknown model '\(name)'; did you mean: \(close.joined(separator: ", "))? (`senet models` lists all)")
    }

    /// Builds `name` with `options`.
    public static func create(_ name: String, _ options: ModelOptions = ModelOptions()) throws -> Module {
        try entry(name)(options)
    }

    /// Checks that an H×W input is at least the model's minimum.
    public static func checkInputSize(_ name: String, height: Int, width: Int) throws {
        let e = try entry(name)
        if min(height, width) < e.minimumInputSize {
            throw ModelError(description: "\(name) needs inputs of at least \(e.minimumInputSize)×\(e.minimumInputSize); got \(height)×\(width)")
        }
    }

    static func resnetEntries() -> [ModelEntry] {
        typealias Def = (String, ResidualBlockKind, [Int], ResNetLayout, Int, Int, SEConfig?)
        let basic18 = [2, 2, 2, 2], d34 = [3, 4, 6, 3], d101 = [3, 4, 23, 3], d152 = [3, 8, 36, 3]
        var defs: [Def] = []
        for (n, d) in [(18, basic18), (34, d34)] {
            defs.append(("resnet\(n)", .basic, d, .timm, 1, 64, nil))
            defs.append(("seresnet\(n)", .basic, d, .timm, 1, 64, .timm))
            defs.append(("legacy_seresnet\(n)", .basic, d, .caffe, 1, 64, .paper))
        }
        for (n, d) in [(50, d34), (101, d101), (152, d152)] {
            defs.append(("resnet\(n)", .bottleneck, d, .timm, 1, 64, nil))
            defs.append(("seresnet\(n)", .bottleneck, d, .timm, 1, 64, .timm))
            defs.append(("legacy_seresnet\(n)", .bottleneck, d, .caffe, 1, 64, .paper))
        }
        for (n, d) in [(50, d34), (101, d101)] {
            defs.append(("resnext\(n)_32x4d", .bottleneck, d, .timm, 32, 4, nil))
            defs.append(("seresnext\(n)_32x4d", .bottleneck, d, .timm, 32, 4, .timm))
            defs.append(("legacy_seresnext\(n)_32x4d", .bottleneck, d, .caffe, 32, 4, .paper))
        }
        defs.append(("legacy_seresnext26_32x4d", .bottleneck, basic18, .caffe, 32, 4, .paper))
        var out = defs.map { def -> ModelEntry in
            let (name, block, depths, layout, card, width, se) = def
            let family = card > 1 ? (se == nil ? "ResNeXt" : "SE-ResNeXt") : (se == nil ? "ResNet" : "SE-ResNet")
            var spec = ResNetSpec(block: block, depths: depths, layout: layout, cardinality: card, baseWidth: width, se: se)
            // timm's SENet class (every legacy_* model) drops 20% before its classifier.
            if layout == .caffe { spec.dropout = 0.2 }
            return resnetEntry(name, family: family, spec)
        }
        var senet = ResNetSpec(block: .senetBottleneck, depths: d152, layout: .caffe, cardinality: 64, baseWidth: 4, se: .paper)
        senet.deepStem = true
        senet.downsampleKernel = 3
        senet.downsamplePadding = 1
        senet.dropout = 0.2
        out.append(resnetEntry("legacy_senet154", family: "SENet", senet))
        return out
    }

    static func resnetEntry(_ name: String, family: String, _ base: ResNetSpec) -> ModelEntry {
        ModelEntry(name: name, family: family, defaultInputSize: (224, 224), minimumInputSize: 32, hasSE: base.se != nil) { o in
            var spec = base
            spec.numClasses = o.numClasses ?? 1000
            spec.inChannels = o.inChannels
            if let r = o.reduction, spec.se != nil { spec.se!.reduction = r }
            if let s = o.seStages { spec.seStages = s }
            if let p = o.sePlacement { spec.sePlacement = p }
            return ResNet(spec, seed: o.seed)
        }
    }
}

/// Levenshtein distance (for "did you mean").
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var prev = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var cur = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where !b.isEmpty {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return a.isEmpty ? b.count : prev[b.count]
}
