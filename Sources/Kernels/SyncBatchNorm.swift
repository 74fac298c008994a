// Batch normalisation in phases, for statistics shared across processes (synchronised batch norm
// in data-parallel training: K processes, each holding part of one batch, normalise with the
// statistics of the whole batch).
//
// Dims legend as BatchNorm.swift: N local batch, C channels, S = H·W, M = the global number of
// values per channel (Σ over processes of N·S). The forward pass is the two-pass computation of
// `batchNormTrainForward` cut where sums must be combined: (1) local Σx per channel; [sum across
// processes] (2) local Σ(x − mean)² around the global mean; [sum] (3) normalise and update the
// running statistics with the global M. The backward pass: (1) local Σdy and Σdy·(x − mean);
// [sum] (2) dx from the global sums. With one process and no reduction in between, each phase does
// the arithmetic of the fused kernels in the same order, so the results are bit-identical.

/// Phase 1 of the forward pass: sums[ch] = Σ x over the N·S local values of channel ch.
public func batchNormChannelSums(sums: UnsafeMutablePointer<Double>, inp: UnsafePointer<Float>, n: Int, c: Int, s: Int) {
    parallelRanges(c, costPerItem: n * s) { r in
        for ch in r { sums[ch] = channelSum(inp, ch, n: n, c: c, s: s) }
    }
}

/// Phase 2 of the forward pass: out[ch] = Σ (x − mean[ch])² over the local values of channel ch,
/// around the (global) mean.
public func batchNormChannelSquaredDeviations(out: UnsafeMutablePointer<Double>, inp: UnsafePointer<Float>,
                                              mean: UnsafePointer<Double>, n: Int, c: Int, s: Int) {
    parallelRanges(c, costPerItem: 2 * n * s) { r in
        for ch in r { out[ch] = channelSquaredDeviations(inp, ch, mean: mean[ch], n: n, c: c, s: s) }
    }
}

/// Phase 3 of the forward pass: normalises with the global statistics — mean[ch] and
/// squaredDeviations[ch] = Σ(x − mean)² over all `count` values of channel ch — writes the saved
/// mean and 1/sqrt(var + eps) for backward, and updates the running statistics (variance unbiased
/// with the global count, ×M/(M − 1)).
public func batchNormApplyStatistics(out: UnsafeMutablePointer<Float>, saveMean: UnsafeMutablePointer<Float>,
                                     saveInvStd: UnsafeMutablePointer<Float>,
                                     runningMean: UnsafeMutablePointer<Float>?, runningVar: UnsafeMutablePointer<Float>?,
                                     inp: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                                     mean: UnsafePointer<Double>, squaredDeviations: UnsafePointer<Double>, count m: Int,
                                     n: Int, c: Int, s: Int, eps: Float, momentum: Float) {
    parallelRanges(c, costPerItem: 2 * n * s) { r in
        for ch in r {
            normalizeChannel(ch, mean: mean[ch], variance: squaredDeviations[ch] / Double(m), count: m, out: out,
                             saveMean: saveMean, saveInvStd: saveInvStd, runningMean: runningMean, runningVar: runningVar,
                             inp: inp, weight: weight, bias: bias, n: n, c: c, s: s, eps: eps, momentum: momentum)
        }
    }
}

/// Phase 1 of the backward pass: per channel Σ dout and Σ dout·(x − mean) over the local values.
public func batchNormBackwardSums(sumDout: UnsafeMutablePointer<Double>, sumDoutCentered: UnsafeMutablePointer<Double>,
                                  dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                                  n: Int, c: Int, s: Int) {
    parallelRanges(c, costPerItem: 3 * n * s) { r in
        for ch in r {
            let mu = mean[ch]
            let (sdy, sdyx) = channelBackwardSums(dout, inp, ch, mean: mu, n: n, c: c, s: s)
            sumDout[ch] = sdy
            sumDoutCentered[ch] = sdyx
        }
    }
}

/// Phase 2 of the backward pass (training mode): dinp = g·(dout − Σdout/M − (x − μ)·istd²·Σdout·(x − μ)/M)
/// with g = weight·istd and the sums over all `count` = M values of each channel.
public func batchNormBackwardInput(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                                   mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
                                   sumDout: UnsafePointer<Double>, sumDoutCentered: UnsafePointer<Double>, count m: Int,
                                   n: Int, c: Int, s: Int) {
    parallelRanges(c, costPerItem: 3 * n * s) { r in
        for ch in r {
            let mu = mean[ch], istd = invStd[ch]
            channelInputGradient(dinp, dout, inp, ch, mean: mu, invStd: istd, weight: weight?[ch] ?? 1,
                                 sumDout: sumDout[ch], sumDoutCentered: sumDoutCentered[ch], count: m, n: n, c: c, s: s)
        }
    }
}
