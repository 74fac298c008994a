// Dropout (Srivastava et al. 2014), inverted as PyTorch: kept values are scaled by 1/(1 − p) so
// evaluation needs no rescaling. SENet-154 uses p = 0.2 before its classifier.

import Kernels

/// Zeroes each element with probability `p` and scales the rest by 1/(1 − p), drawing from
/// `generator`. The gradient uses the same mask. p = 0 returns `x` unchanged.
public func dropout(_ x: Tensor, p: Float, generator: inout SeededGenerator) -> Tensor {
    if !(p >= 0 && p < 1) { shapeFailure("dropout", "probability \(p) must be in [0, 1)") }
    if p == 0 { return x }
    var mask = Tensor(uninitializedShape: x.shape)
    let keep = 1 / (1 - p)
    mask.withUnsafeMutablePointer { m in for i in 0..<x.count { m[i] = generator.nextUnitFloat() < p ? 0 : keep } }
    var out = rawMul(x, mask)
    GradientTape.record(&out, [x]) { g, _ in [rawMul(g, mask)] }
    return out
}
