// Seeded random numbers: xoshiro256** seeded through SplitMix64. Same seed, same tensors, on
// every machine. (PyTorch's generator is not reproduced: weights meant to match PyTorch are
// loaded, not drawn.)

import Foundation

/// A seeded, reproducible generator (xoshiro256**).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    /// The four words of the generator's state (checkpoints save them to resume a run exactly).
    public var state: [UInt64] {
        get { [s.0, s.1, s.2, s.3] }
        set {
            precondition(newValue.count == 4 && newValue.contains { $0 != 0 }, "SeededGenerator: state must be four words, not all zero")
            s = (newValue[0], newValue[1], newValue[2], newValue[3])
        }
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Standard normal (Box–Muller on 53-bit uniforms).
    public mutating func nextNormal() -> Double {
        let u1 = Double((next() >> 11) + 1) * 0x1p-53
        let u2 = Double(next() >> 11) * 0x1p-53
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

extension Tensor {
    /// Normal(mean, std) samples.
    public static func randomNormal(_ shape: [Int], mean: Float = 0, std: Float = 1,
                                    generator: inout SeededGenerator) -> Tensor {
        var t = Tensor(uninitializedShape: shape)
        let n = t.count
        t.withUnsafeMutablePointer { p in
            for i in 0..<n { p[i] = mean + std * Float(generator.nextNormal()) }
        }
        return t
    }

    /// Normal(mean, std) samples from a fresh generator seeded with `seed`.
    public static func randomNormal(_ shape: [Int], mean: Float = 0, std: Float = 1, seed: UInt64) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return randomNormal(shape, mean: mean, std: std, generator: &g)
    }

    /// Uniform[low, high) samples.
    public static func randomUniform(_ shape: [Int], low: Float = 0, high: Float = 1,
                                     generator: inout SeededGenerator) -> Tensor {
        var t = Tensor(uninitializedShape: shape)
        let n = t.count
        t.withUnsafeMutablePointer { p in
            for i in 0..<n { p[i] = low + (high - low) * generator.nextUnitFloat() }
        }
        return t
    }

    public static func randomUniform(_ shape: [Int], low: Float = 0, high: Float = 1, seed: UInt64) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return randomUniform(shape, low: low, high: high, generator: &g)
    }

    /// PyTorch's default initialisation of a conv or linear weight (`kaiming_uniform_` with
    /// a = √5): U(−1/√fan_in, 1/√fan_in), fan_in = shape[1] · kernel area.
    public static func pytorchDefaultWeight(_ shape: [Int], generator: inout SeededGenerator) -> Tensor {
        let fanIn = shape.dropFirst().reduce(1, *)
        let bound = 1 / Float(fanIn).squareRoot()
        return randomUniform(shape, low: -bound, high: bound, generator: &generator)
    }

    /// PyTorch's default bias of a conv or linear layer: U(−1/√fan_in, 1/√fan_in).
    public static func pytorchDefaultBias(_ count: Int, fanIn: Int, generator: inout SeededGenerator) -> Tensor {
        let bound = 1 / Float(fanIn).squareRoot()
        return randomUniform([count], low: -bound, high: bound, generator: &generator)
    }

    /// He et al. (2015) normal init as torchvision/timm ResNets (`kaiming_normal_`,
    /// mode fan_out, ReLU gain): N(0, √(2 / fan_out)), fan_out = shape[0] · kernel area.
    public static func heNormal(_ shape: [Int], generator: inout SeededGenerator) -> Tensor {
        let fanOut = shape[0] * shape.dropFirst(2).reduce(1, *)
        return randomNormal(shape, std: (2 / Float(fanOut)).squareRoot(), generator: &generator)
    }
}
