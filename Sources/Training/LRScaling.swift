// Learning rates for large batches: the linear scaling rule (Goyal et al., "Accurate, Large
// Minibatch SGD: Training ImageNet in 1 Hour", 2017 — lr ∝ batch size, with a gradual warm-up
// from a small rate over the first epochs) and the SENet paper's instance of it (§5.1: lr 0.6
// for batch 1024, i.e. 0.6 × batch / 1024, on 64 GPUs).

/// How the base learning rate follows the global batch size.
public enum LRScaling: String, Sendable, CaseIterable {
    /// The rate as given.
    case none
    /// rate = base × batch / reference (reference 256 by default: the rate given is the one for
    /// batch 256, as Goyal et al.'s 0.1 per 256 images).
    case linear
    /// The SENet paper's rule: rate = 0.6 × batch / 1024 (a rate given explicitly is taken as
    /// the rate for batch 1024 instead of 0.6).
    case paper

    /// The learning rate for a global batch of `batch` samples. `base` is the rate at the
    /// reference batch (`reference`, 256 for `.linear`; 1024 and, when `base` is nil, 0.6 for `.paper`).
    public func rate(base: Float?, batch: Int, reference: Int = 256) -> Float {
        switch self {
        case .none: return base ?? 0.1
        case .linear: return (base ?? 0.1) * Float(batch) / Float(reference)
        case .paper: return (base ?? 0.6) * Float(batch) / 1024
        }
    }

    /// Warm-up epochs for a scaled rate: Goyal et al.'s 5 epochs when the batch exceeds the
    /// reference batch (the rate is then above the one known to be stable from the start),
    /// capped at a tenth of the run; none otherwise.
    public func warmupEpochs(batch: Int, reference: Int = 256, epochs: Int) -> Double {
        let ref = self == .paper ? 1024 : reference
        guard self != .none, batch > ref else { return 0 }
        return min(5, Double(epochs) / 10)
    }
}
