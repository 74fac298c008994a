// Learning-rate schedules, evaluated at a fractional epoch (epoch + step/steps-per-epoch), so the
// rate can change every step. `.step`/`.multiStep` change at epoch boundaries as PyTorch's StepLR
// and MultiStepLR stepped once per epoch; `.cosine` follows CosineAnnealingLR continuously (timm's
// per-step form); a linear warm-up ramps from 0 to the base rate over its first epochs.

#if canImport(Glibc)
import Glibc
#endif

/// A learning-rate schedule.
public struct LRSchedule: Sendable, Equatable, CustomStringConvertible {
    public enum Shape: Sendable, Equatable {
        /// ×gamma every `every` epochs (the paper: ÷10 every 30).
        case step(every: Int, gamma: Float)
        /// ×gamma at each milestone epoch (He et al. CIFAR: 50% and 75% of training).
        case multiStep(milestones: [Int], gamma: Float)
        /// Cosine from the base rate to `minimum` over `epochs`.
        case cosine(epochs: Int, minimum: Float)
        case constant
    }

    public var base: Float
    public var shape: Shape
    /// Linear warm-up length in epochs (0: none).
    public var warmupEpochs: Double

    public init(base: Float, shape: Shape, warmupEpochs: Double = 0) {
        (self.base, self.shape, self.warmupEpochs) = (base, shape, warmupEpochs)
    }

    /// The rate at fractional epoch `t` (0-based: t ∈ [e, e+1) during epoch e).
    public func rate(at t: Double) -> Float {
        var lr: Double
        let epoch = Int(t.rounded(.down))
        switch shape {
        case .constant: lr = Double(base)
        case let .step(every, gamma): lr = Double(base) * pow(Double(gamma), Double(epoch / max(every, 1)))
        case let .multiStep(milestones, gamma): lr = Double(base) * pow(Double(gamma), Double(milestones.filter { epoch >= $0 }.count))
        case let .cosine(epochs, minimum):
            let p = min(t / Double(max(epochs, 1)), 1)
            lr = Double(minimum) + (Double(base) - Double(minimum)) * 0.5 * (1 + cos(Double.pi * p))
        }
        if warmupEpochs > 0 && t < warmupEpochs { lr *= t / warmupEpochs }
        return Float(lr)
    }

    public var description: String {
        let w = warmupEpochs > 0 ? ", \(warmupEpochs) warm-up epochs" : ""
        switch shape {
        case .constant: return "constant \(base)\(w)"
        case let .step(every, gamma): return "\(base) ×\(gamma) every \(every) epochs\(w)"
        case let .multiStep(m, gamma): return "\(base) ×\(gamma) at epochs \(m.map(String.init).joined(separator: ","))\(w)"
        case let .cosine(e, minimum): return "cosine \(base) → \(minimum) over \(e) epochs\(w)"
        }
    }
}
