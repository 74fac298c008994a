// The Squeeze-and-Excitation block (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", §3):
// squeeze z = global average pool of U; excitation s = σ(W2·δ(W1·z)); scale x̃_c = s_c·u_c.
// W1 and W2 are 1×1 convolutions with bias (as the Caffe release, timm and torchvision), keys
// `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`. The variants are the paper's ablations:
// squeeze operator (Table 11), gate (Table 12), reduction ratio (Table 10), and the reduced-width
// rounding of each weight source.

import TensorCore

/// How `channels / reduction` becomes an integer width.
public enum SERounding: Sendable, Equatable {
    /// ⌊C / r⌋, at least 1: the paper, the Caffe release, Cadene and timm's `legacy_*` (64/16 → 4).
    case floor
    /// timm's `make_divisible(C / r, d)` with round_limit 0: max(d, ⌊(C/r + d/2) / d⌋·d) (64/16 → 8).
    case makeDivisible(Int)
    /// torchvision's `_make_divisible(C / r, d)`: as above, plus d when that falls below 0.9·C/r
    /// (MobileNetV3 applies it to `expanded // 4`).
    case torchvision(Int)

    public func width(channels: Int, reduction: Int) -> Int {
        switch self {
        case .floor:
            return max(1, channels / reduction)
        case .makeDivisible(let d):
            let v = Double(channels) / Double(reduction)
            return max(d, Int(v + Double(d) / 2) / d * d)
        case .torchvision(let d):
            let v = Double(channels / reduction)
            var w = max(d, Int(v + Double(d) / 2) / d * d)
            if Double(w) < 0.9 * v { w += d }
            return w
        }
    }
}

/// The squeeze operator (paper Table 11): global average (the paper's), global max, or their
/// sum (timm's `add_maxpool`).
public enum SESqueeze: String, Sendable, CaseIterable { case average, max, averagePlusMax }

/// The excitation gate (paper Table 12): sigmoid (the paper's), hard-sigmoid (MobileNetV3),
/// tanh, ReLU.
public enum SEGate: String, Sendable, CaseIterable { case sigmoid, hardSigmoid, tanh, relu }

/// Everything that distinguishes one SE block from another, as data.
public struct SEConfig: Sendable, Equatable {
    public var reduction: Int
    public var rounding: SERounding
    public var squeeze: SESqueeze
    public var gate: SEGate
    public var bias: Bool

    public init(reduction: Int = 16, rounding: SERounding = .floor, squeeze: SESqueeze = .average,
                gate: SEGate = .sigmoid, bias: Bool = true) {
        (self.reduction, self.rounding, self.squeeze, self.gate, self.bias) = (reduction, rounding, squeeze, gate, bias)
    }

    /// The paper's block: r = 16, ⌊C/r⌋, average squeeze, sigmoid gate.
    public static let paper = SEConfig()
    /// timm's `SEModule` as used by `seresnet*` / `seresnext*`: width make_divisible(C/16, 8).
    public static let timm = SEConfig(rounding: .makeDivisible(8))
}

/// SE block on [N, C, H, W]; the output has the input's shape. fc1: C → C', fc2: C' → C with
/// C' = `config.rounding.width(channels:reduction:)`. Default init as PyTorch's Conv2d.
public final class SqueezeExcitation: Module {
    public let fc1: Conv2d
    public let fc2: Conv2d
    public let config: SEConfig
    /// The paper's name of this block (`SE_<stage>_<block>`), set by models that know their stages;
    /// activation captures derive one from the feature size otherwise.
    public var paperName: String?

    public init(channels: Int, config: SEConfig = .paper, generator: inout SeededGenerator) {
        let reduced = config.rounding.width(channels: channels, reduction: config.reduction)
        fc1 = Conv2d(channels, reduced, kernel: 1, bias: config.bias, generator: &generator)
        fc2 = Conv2d(reduced, channels, kernel: 1, bias: config.bias, generator: &generator)
        self.config = config
    }

    public convenience init(channels: Int, reduction: Int, generator: inout SeededGenerator) {
        self.init(channels: channels, config: SEConfig(reduction: reduction), generator: &generator)
    }

    /// Number of input (and output) channels.
    public var channels: Int { fc1.weight.shape[1] }
    /// The bottleneck width C'.
    public var reducedChannels: Int { fc1.weight.shape[0] }

    /// The excitation vector s [N, C, 1, 1] for input x.
    public func excitation(_ x: Tensor) -> Tensor {
        let z: Tensor
        switch config.squeeze {
        case .average: z = globalAvgPool2d(x)
        case .max: z = globalMaxPool2d(x)
        case .averagePlusMax: z = globalAvgPool2d(x) + globalMaxPool2d(x)
        }
        return excitation(squeezed: z)
    }

    /// The excitation vector s [N, C, 1, 1] for the squeezed input z [N, C, 1, 1].
    public func excitation(squeezed z: Tensor) -> Tensor { excitation(fc1Output: fc1(z)) }

    /// The excitation vector s [N, C, 1, 1] for fc1's output a [N, C', 1, 1] (before its ReLU):
    /// gate(fc2(relu(a))).
    public func excitation(fc1Output a: Tensor) -> Tensor {
        let h = fc2(relu(a))
        switch config.gate {
        case .sigmoid: return sigmoid(h)
        case .hardSigmoid: return hardSigmoid(h)
        case .tanh: return tanh(h)
        case .relu: return relu(h)
        }
    }

    /// relu(self(x) + residual), the end of an SE residual block: one fused pass over memory
    /// (forward and backward) under an `InferenceEngine` and while training; the composed ops
    /// in plain evaluation (the engine's `--no-fuse` reference) and when excitations are captured.
    public func scaledAddReLU(_ x: Tensor, residual: Tensor) -> Tensor {
        guard InferenceEngine.isFusing || x.isTracked || residual.isTracked, ActivationCapture.current == nil
        else { return relu(self(x) + residual) }
        return seScaleAddReLU(x, scale: excitation(x), residual: residual)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let s = excitation(x)
        ActivationCapture.noteExcitation(self, input: x, excitation: s)
        let y = x * s
        ActivationCapture.noteOutput(self, "SE", y)
        return y
    }
}

/// relu(x + residual), the end of a plain residual block: one fused pass (forward and backward,
/// the same bits) under an `InferenceEngine` and while training, as `scaledAddReLU` for SE
/// blocks; the composed ops in plain evaluation (the engine's `--no-fuse` reference).
public func residualAddReLU(_ x: Tensor, residual: Tensor) -> Tensor {
    InferenceEngine.isFusing || x.isTracked || residual.isTracked ? addReLU(x, residual: residual) : relu(x + residual)
}
