// Batch normalisation over NCHW, per channel, as PyTorch's BatchNorm2d.
//
// Dims legend: N batch, C channels, S = H·W plane size, M = N·S values per channel.
// Training normalises with the biased batch variance and updates the running variance with the
// unbiased one (M/(M−1)); evaluation uses the running statistics. Sums are formed 8 lanes wide in
// Float per plane and combined in Double, so M in the millions stays accurate to ~1e-7.

import Foundation

/// Training forward. Writes out, the per-channel batch mean and 1/sqrt(var + eps) (needed by
/// backward), and updates runningMean/runningVar in place with `momentum`. With `relu`, out is
/// max(·, 0) in the same pass (BatchNorm + ReLU fused; backward takes `reluOutput`).
public func batchNormTrainForward(out: UnsafeMutablePointer<Float>, saveMean: UnsafeMutablePointer<Float>,
                                  saveInvStd: UnsafeMutablePointer<Float>,
                                  runningMean: UnsafeMutablePointer<Float>?, runningVar: UnsafeMutablePointer<Float>?,
                                  inp: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                                  n: Int, c: Int, s: Int, eps: Float, momentum: Float, relu: Bool = false) {
    let m = n * s
    parallelRanges(c, costPerItem: 4 * m) { r in
        for ch in r {
            let mean = channelSum(inp, ch, n: n, c: c, s: s) / Double(m)
            let sq = channelSquaredDeviations(inp, ch, mean: mean, n: n, c: c, s: s)
            normalizeChannel(ch, mean: mean, variance: sq / Double(m), count: m, out: out, saveMean: saveMean, saveInvStd: saveInvStd,
                             runningMean: runningMean, runningVar: runningVar, inp: inp, weight: weight, bias: bias,
                             n: n, c: c, s: s, eps: eps, momentum: momentum, relu: relu)
        }
    }
}

/// dout, or 0 where the fused ReLU's output `mask` is not positive (PyTorch's ReLU rule).
@inline(__always)
func maskedLoad8(_ dout: UnsafePointer<Float>, _ mask: UnsafePointer<Float>?, _ i: Int) -> SIMD8<Float> {
    let d = load8(dout, i)
    guard let mask else { return d }
    let zero = SIMD8<Float>(repeating: 0)
    return d.replacing(with: zero, where: load8(mask, i) .<= zero)
}

@inline(__always)
func maskedLoad(_ dout: UnsafePointer<Float>, _ mask: UnsafePointer<Float>?, _ i: Int) -> Float {
    guard let mask else { return dout[i] }
    return mask[i] > 0 ? dout[i] : 0
}

/// Σ x over the N·S values of channel `ch` (8 lanes in Float per plane, planes combined in Double).
@inline(__always)
func channelSum(_ inp: UnsafePointer<Float>, _ ch: Int, n: Int, c: Int, s: Int) -> Double {
    var total = 0.0
    for b in 0..<n { total += sum(inp + (b * c + ch) * s, n: s) }
    return total
}

/// Σ (x − mean)² over the N·S values of channel `ch`.
@inline(__always)
func channelSquaredDeviations(_ inp: UnsafePointer<Float>, _ ch: Int, mean: Double, n: Int, c: Int, s: Int) -> Double {
    let fm = Float(mean)
    var sq = 0.0
    for b in 0..<n {
        let p = inp + (b * c + ch) * s
        var acc = SIMD8<Float>(repeating: 0)
        let vm = SIMD8<Float>(repeating: fm)
        var i = 0
        while i + 8 <= s { let d = load8(p, i) - vm; acc += d * d; i += 8 }
        var t = Double(acc.sum())
        while i < s { let d = Double(p[i]) - mean; t += d * d; i += 1 }
        sq += t
    }
    return sq
}

/// (Σ dout, Σ dout·(x − mean)) over the N·S values of channel `ch`.
@inline(__always)
func channelBackwardSums(_ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ ch: Int, mean mu: Float,
                         n: Int, c: Int, s: Int, mask: UnsafePointer<Float>? = nil) -> (Double, Double) {
    var sdy = 0.0, sdyx = 0.0
    for b in 0..<n {
        let o = (b * c + ch) * s
        let dp = dout + o, xp = inp + o, mp = mask.map { $0 + o }
        var a1 = SIMD8<Float>(repeating: 0), a2 = SIMD8<Float>(repeating: 0)
        let vm = SIMD8<Float>(repeating: mu)
        var i = 0
        while i + 8 <= s {
            let d = maskedLoad8(dp, mp, i)
            a1 += d
            a2 += d * (load8(xp, i) - vm)
            i += 8
        }
        var t1 = Double(a1.sum()), t2 = Double(a2.sum())
        while i < s { let d = maskedLoad(dp, mp, i); t1 += Double(d); t2 += Double(d * (xp[i] - mu)); i += 1 }
        sdy += t1
        sdyx += t2
    }
    return (sdy, sdyx)
}

/// Training-mode input gradient of channel `ch`:
/// dx = g·(dy − Σdy/M − (x − μ)·istd²·Σdy·(x − μ)/M), g = weight·istd, sums over M = `count` values.
@inline(__always)
func channelInputGradient(_ dinp: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                          _ ch: Int, mean mu: Float, invStd istd: Float, weight: Float, sumDout: Double,
                          sumDoutCentered: Double, count m: Int, n: Int, c: Int, s: Int, mask: UnsafePointer<Float>? = nil) {
    let g = weight * istd
    let k1 = Float(sumDout / Double(m))
    let k2 = Float(sumDoutCentered / Double(m)) * istd * istd
    for b in 0..<n {
        let o = (b * c + ch) * s
        let dp = dout + o, xp = inp + o, op = dinp + o, mp = mask.map { $0 + o }
        let vg = SIMD8<Float>(repeating: g), v1 = SIMD8<Float>(repeating: k1)
        let v2 = SIMD8<Float>(repeating: k2), vm = SIMD8<Float>(repeating: mu)
        var i = 0
        while i + 8 <= s {
            let v = vg * (maskedLoad8(dp, mp, i) - v1 - (load8(xp, i) - vm) * v2)
            UnsafeMutableRawPointer(op + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < s { op[i] = g * (maskedLoad(dp, mp, i) - k1 - (xp[i] - mu) * k2); i += 1 }
    }
}

/// Normalises channel `ch` with its batch mean and biased variance over `m` values: saves the
/// mean and 1/sqrt(var + eps) for backward, updates the running statistics (variance unbiased,
/// ×m/(m − 1)), and writes out = (inp − mean)·invStd·weight + bias. Shared by the fused training
/// kernel and the synchronised one (SyncBatchNorm.swift), so the two agree bit for bit.
@inline(__always)
func normalizeChannel(_ ch: Int, mean: Double, variance: Double, count m: Int, out: UnsafeMutablePointer<Float>,
                      saveMean: UnsafeMutablePointer<Float>, saveInvStd: UnsafeMutablePointer<Float>,
                      runningMean: UnsafeMutablePointer<Float>?, runningVar: UnsafeMutablePointer<Float>?,
                      inp: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                      n: Int, c: Int, s: Int, eps: Float, momentum: Float, relu: Bool = false) {
    let (scale, shift) = channelStatistics(ch, mean: mean, variance: variance, count: m, saveMean: saveMean,
                                           saveInvStd: saveInvStd, runningMean: runningMean, runningVar: runningVar,
                                           weight: weight, bias: bias, eps: eps, momentum: momentum)
    for b in 0..<n {
        let o = (b * c + ch) * s
        affineSerial(out + o, inp + o, scale, shift, s, relu: relu)
    }
}

/// Channel `ch`'s batch statistics: saves the mean and 1/sqrt(var + eps) for backward, updates the
/// running statistics (variance unbiased, ×m/(m − 1)), and returns the normalisation's
/// out = inp·scale + shift coefficients. Shared by the NCHW and channel-blocked kernels.
@inline(__always)
func channelStatistics(_ ch: Int, mean: Double, variance: Double, count m: Int,
                       saveMean: UnsafeMutablePointer<Float>, saveInvStd: UnsafeMutablePointer<Float>,
                       runningMean: UnsafeMutablePointer<Float>?, runningVar: UnsafeMutablePointer<Float>?,
                       weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?, eps: Float,
                       momentum: Float) -> (scale: Float, shift: Float) {
    let fm = Float(mean)
    let invStd = Float(1 / (variance + Double(eps)).squareRoot())
    saveMean[ch] = fm
    saveInvStd[ch] = invStd
    if let rm = runningMean, let rv = runningVar {
        let unbiased = m > 1 ? variance * Double(m) / Double(m - 1) : variance
        rm[ch] = (1 - momentum) * rm[ch] + momentum * fm
        rv[ch] = (1 - momentum) * rv[ch] + momentum * Float(unbiased)
    }
    return batchNormScaleShift(ch, mean: fm, invStd: invStd, weight: weight, bias: bias)
}

/// The per-channel scale and shift a training forward normalises with: out = x·scale + shift,
/// scale = weight·invStd, shift = bias − mean·scale (the saved Float mean and 1/std). The backward
/// of a fused ReLU recomputes its mask with them (`batchNormBackwardBlocked`'s `reluScale`).
@inline(__always)
public func batchNormScaleShift(_ ch: Int, mean: Float, invStd: Float, weight: UnsafePointer<Float>?,
                                bias: UnsafePointer<Float>?) -> (scale: Float, shift: Float) {
    let scale = (weight?[ch] ?? 1) * invStd
    return (scale, (bias?[ch] ?? 0) - mean * scale)
}

/// Evaluation forward: out = (inp − runningMean) / sqrt(runningVar + eps) · weight + bias.
public func batchNormEvalForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                                 runningMean: UnsafePointer<Float>, runningVar: UnsafePointer<Float>,
                                 weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                                 n: Int, c: Int, s: Int, eps: Float) {
    parallelRanges(n * c, costPerItem: s) { r in
        for p in r {
            let ch = p % c
            let invStd = 1 / (runningVar[ch] + eps).squareRoot()
            let scale = (weight?[ch] ?? 1) * invStd
            affineSerial(out + p * s, inp + p * s, scale, (bias?[ch] ?? 0) - runningMean[ch] * scale, s)
        }
    }
}

/// Backward through either mode. With `training`, mean/invStd are the saved batch statistics and
/// dinp = scale/M · (M·dout − Σdout − x̂·Σ(dout·x̂)); in evaluation they are the running statistics
/// and dinp = dout · scale. dweight = Σ dout·x̂ and dbias = Σ dout in both. All outputs written.
/// With `reluOutput` (the forward's output of a fused BatchNorm + ReLU), dout is first zeroed
/// where that output is not positive: the ReLU's backward in the same pass.
public func batchNormBackward(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                              dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                              inp: UnsafePointer<Float>, mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>,
                              weight: UnsafePointer<Float>?, n: Int, c: Int, s: Int, training: Bool,
                              reluOutput mask: UnsafePointer<Float>? = nil) {
    let m = n * s
    parallelRanges(c, costPerItem: 6 * m) { r in
        for ch in r {
            let mu = mean[ch], istd = invStd[ch]
            // Σ dout, Σ dout·(x − mean) (dout masked by a fused ReLU's output)
            let (sdy, sdyx) = channelBackwardSums(dout, inp, ch, mean: mu, n: n, c: c, s: s, mask: mask)
            let dxhatSum = sdyx * Double(istd)  // Σ dout·x̂
            dweight?[ch] = Float(dxhatSum)
            dbias?[ch] = Float(sdy)
            guard let dinp else { continue }
            let g = (weight?[ch] ?? 1) * istd
            if training {
                channelInputGradient(dinp, dout, inp, ch, mean: mu, invStd: istd, weight: weight?[ch] ?? 1,
                                     sumDout: sdy, sumDoutCentered: sdyx, count: m, n: n, c: c, s: s, mask: mask)
            } else {
                for b in 0..<n {
                    let o = (b * c + ch) * s
                    if let mask {
                        for i in 0..<s { dinp[o + i] = maskedLoad(dout + o, mask + o, i) * g }
                    } else {
                        affineSerial(dinp + o, dout + o, g, 0, s)
                    }
                }
            }
        }
    }
}

/// out = x · scale + shift over one contiguous run (no threading: callers split by plane).
@inline(__always)
func affineSerial(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ scale: Float, _ shift: Float, _ n: Int,
                  relu: Bool = false) {
    let vs = SIMD8<Float>(repeating: scale), vb = SIMD8<Float>(repeating: shift), zero = SIMD8<Float>(repeating: 0)
    var i = 0
    if relu {
        while i + 8 <= n {
            UnsafeMutableRawPointer(out + i).storeBytes(of: clampBelow(load8(x, i) * vs + vb, zero), as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { let v = x[i] * scale + shift; out[i] = v < 0 ? 0 : v; i += 1 }
        return
    }
    while i + 8 <= n {
        UnsafeMutableRawPointer(out + i).storeBytes(of: load8(x, i) * vs + vb, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { out[i] = x[i] * scale + shift; i += 1 }
}
