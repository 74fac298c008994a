// Deterministic synthetic weights and inputs, bit-identical to Scripts/make_parity_fixtures.py:
// a SplitMix64 finaliser over FNV-1a-64(checkpoint key) + i·0x9E3779B97F4A7C15 gives a 24-bit
// uniform u per element; the value is computed in Double from u and rounded once to Float.

import Foundation
import TensorCore

public enum Synthetic {
    static func fnv1a64(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// The i-th (0-based) uniform of `key`'s stream, in [0, 1).
    static func uniform(_ seed: UInt64, _ i: Int) -> Double {
        var z = seed &+ UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 40) / Double(1 << 24)
    }

    /// The synthetic tensor for a checkpoint key (see the script for the per-kind rules).
    public static func tensor(_ key: String, _ shape: [Int]) -> Tensor {
        let n = shape.reduce(1, *)
        let seed = fnv1a64(key)
        let value: (Double) -> Double
        if key.hasPrefix("input") {
            value = { 2 * (2 * $0 - 1) }
        } else if key.hasSuffix("running_var") || (key.hasSuffix(".weight") && shape.count == 1) {
            value = { 0.5 + $0 }
        } else if key.hasSuffix(".bias") || key.hasSuffix("running_mean") {
            value = { 0.2 * ($0 - 0.5) }
        } else {
            let bound = (3.0 / Double(shape.dropFirst().reduce(1, *))).squareRoot()
            value = { (2 * $0 - 1) * bound }
        }
        return Tensor(shape: shape, scalars: (0..<n).map { Float(value(uniform(seed, $0))) })
    }
}
