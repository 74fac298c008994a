// Stochastic gradient descent with momentum, as torch.optim.SGD (dampening 0):
//   g ← ∇ + λ·p                        (weight decay λ; optionally not on BN parameters and biases)
//   b ← g on the first step, else μ·b + g   (momentum buffer)
//   g ← g + μ·b if Nesterov, else b
//   p ← p − η·g

import Kernels
import NN
import TensorCore

public final class SGD {
    public var learningRate: Float
    public let momentum: Float
    public let nesterov: Bool
    public let weightDecay: Float
    /// Whether weight decay also applies to 1-D parameters (BN weights and biases, all biases).
    /// PyTorch's default is yes; the paper does not say; timm's recipes say no.
    public let decayNormAndBias: Bool
    /// Momentum buffers by parameter key (absent until a parameter's first step).
    public private(set) var buffers: [String: Tensor] = [:]
    private let parameters: [(String, Parameter)]

    public init(_ model: Module, learningRate: Float, momentum: Float = 0.9, nesterov: Bool = false,
                weightDecay: Float = 0, decayNormAndBias: Bool = true) {
        precondition(!nesterov || momentum > 0, "Nesterov momentum needs momentum > 0")
        parameters = model.trainableParameters
        (self.learningRate, self.momentum, self.nesterov) = (learningRate, momentum, nesterov)
        (self.weightDecay, self.decayNormAndBias) = (weightDecay, decayNormAndBias)
    }

    /// One update of every parameter that has a gradient in `gradients` (keyed as the model's state dict).
    public func step(_ gradients: [String: Tensor]) {
        let (lr, mu) = (learningRate, momentum)
        for (key, p) in parameters {
            guard let grad = gradients[key] else { continue }
            precondition(grad.shape == p.shape, "SGD: gradient of \(key) has shape \(grad.shape), parameter \(p.shape)")
            let decay = (decayNormAndBias || p.shape.count > 1) ? weightDecay : 0
            let n = p.value.count
            // Taken out of the dictionary while it is updated, so that its storage is not shared
            // and the update does not copy it first (copy-on-write).
            var buffer = buffers.removeValue(forKey: key)
            let first = buffer == nil
            if mu != 0 && first { buffer = Tensor(uninitializedShape: p.shape) }
            grad.withUnsafePointer { g in
                p.value.withUnsafeMutablePointer { w in
                    guard mu != 0 else {
                        sgdUpdate(weights: w, gradient: g, buffer: nil, n: n, learningRate: lr, momentum: 0,
                                  decay: decay, nesterov: false, first: false)
                        return
                    }
                    buffer!.withUnsafeMutablePointer { b in
                        sgdUpdate(weights: w, gradient: g, buffer: b, n: n, learningRate: lr, momentum: mu,
                                  decay: decay, nesterov: nesterov, first: first)
                    }
                }
            }
            if mu != 0 { buffers[key] = buffer }
        }
    }

    /// Replaces the momentum buffers (resuming from a checkpoint); keys must be parameter keys
    /// with matching shapes.
    public func restore(buffers saved: [String: Tensor]) throws {
        let shapes = Dictionary(uniqueKeysWithValues: parameters.map { ($0.0, $0.1.shape) })
        for (k, t) in saved {
            guard let s = shapes[k] else { throw TrainingError("optimizer state has a buffer for unknown parameter '\(k)'") }
            guard s == t.shape else { throw TrainingError("optimizer buffer '\(k)' has shape \(t.shape), parameter \(s)") }
        }
        buffers = saved
    }
}

/// A training failure, in one line.
public struct TrainingError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
