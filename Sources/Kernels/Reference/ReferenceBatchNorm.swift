// Reference twin of BatchNorm.swift (batchNormTrainForward, batchNormEvalForward,
// batchNormBackward): PyTorch's BatchNorm2d over NCHW, written per channel from the definition.
// Dims legend: N batch, C channels, S = H·W plane size, M = N·S values per channel.

import Foundation

extension Reference {
    /// The M values of channel `ch`, as flat indices into an N×C×S buffer.
    static func channelIndices(_ ch: Int, n: Int, c: Int, s: Int) -> [Int] {
        (0..<n).flatMap { (b: Int) -> Range<Int> in
            let start = (b * c + ch) * s
            return start..<(start + s)
        }
    }

    /// Training forward: x̂ = (x − μ)/√(σ² + eps) with the batch mean μ and biased variance σ²,
    /// out = x̂·weight + bias. Returns out, μ and 1/√(σ² + eps); updates the running statistics as
    /// r ← (1 − momentum)·r + momentum·batch, the variance unbiased (σ²·M/(M − 1)).
    public static func batchNormTrainForward(runningMean: inout [Float], runningVar: inout [Float], inp: [Float],
                                             weight: [Float]?, bias: [Float]?, n: Int, c: Int, s: Int,
                                             eps: Float, momentum: Float) -> (out: [Float], mean: [Float], invStd: [Float]) {
        var out = inp, mean = [Float](repeating: 0, count: c), invStd = mean
        let m = Double(n * s)
        for ch in 0..<c {
            let idx = channelIndices(ch, n: n, c: c, s: s)
            let mu = idx.reduce(0.0) { $0 + Double(inp[$1]) } / m
            let variance = idx.reduce(0.0) { $0 + (Double(inp[$1]) - mu) * (Double(inp[$1]) - mu) } / m
            let istd = 1 / (variance + Double(eps)).squareRoot()
            for i in idx {
                out[i] = Float((Double(inp[i]) - mu) * istd * Double(weight?[ch] ?? 1) + Double(bias?[ch] ?? 0))
            }
            (mean[ch], invStd[ch]) = (Float(mu), Float(istd))
            let unbiased = m > 1 ? variance * m / (m - 1) : variance
            runningMean[ch] = Float((1 - Double(momentum)) * Double(runningMean[ch]) + Double(momentum) * mu)
            runningVar[ch] = Float((1 - Double(momentum)) * Double(runningVar[ch]) + Double(momentum) * unbiased)
        }
        return (out, mean, invStd)
    }

    /// Evaluation forward: out = (x − runningMean)/√(runningVar + eps)·weight + bias.
    public static func batchNormEvalForward(inp: [Float], runningMean: [Float], runningVar: [Float],
                                            weight: [Float]?, bias: [Float]?, n: Int, c: Int, s: Int, eps: Float) -> [Float] {
        var out = inp
        for ch in 0..<c {
            let istd = 1 / (Double(runningVar[ch]) + Double(eps)).squareRoot()
            for i in channelIndices(ch, n: n, c: c, s: s) {
                out[i] = Float((Double(inp[i]) - Double(runningMean[ch])) * istd * Double(weight?[ch] ?? 1)
                               + Double(bias?[ch] ?? 0))
            }
        }
        return out
    }

    /// Backward of either mode, given the statistics the forward normalised with (`mean`, `invStd`).
    /// With x̂ = (x − μ)·istd and g = dout·weight: dweight = Σ dout·x̂, dbias = Σ dout, and
    /// dinp = g·istd in evaluation (μ, istd are constants) or, in training (they depend on x),
    /// dinp = istd·(g − mean(g) − x̂·mean(g·x̂)).
    public static func batchNormBackward(dout: [Float], inp: [Float], mean: [Float], invStd: [Float],
                                         weight: [Float]?, n: Int, c: Int, s: Int, training: Bool)
        -> (dinp: [Float], dweight: [Float], dbias: [Float]) {
        var dinp = inp, dweight = [Float](repeating: 0, count: c), dbias = dweight
        let m = Double(n * s)
        for ch in 0..<c {
            let idx = channelIndices(ch, n: n, c: c, s: s)
            let istd = Double(invStd[ch]), gamma = Double(weight?[ch] ?? 1)
            let xhat = idx.map { (Double(inp[$0]) - Double(mean[ch])) * istd }
            let dy = idx.map { Double(dout[$0]) }
            dweight[ch] = Float(zip(dy, xhat).reduce(0.0) { $0 + $1.0 * $1.1 })
            dbias[ch] = Float(dy.reduce(0, +))
            let meanG = dy.reduce(0, +) * gamma / m
            let meanGX = zip(dy, xhat).reduce(0.0) { $0 + $1.0 * gamma * $1.1 } / m
            for (k, i) in idx.enumerated() {
                let g = dy[k] * gamma
                dinp[i] = Float(training ? istd * (g - meanG - xhat[k] * meanGX) : g * istd)
            }
        }
        return (dinp, dweight, dbias)
    }
}
