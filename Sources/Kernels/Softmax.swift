// Row-wise log-softmax and cross-entropy over an N×K matrix of logits (K classes).
// Rows are independent; each is shifted by its max before exponentiating, as every stable
// softmax does, and sums are formed in Double.

import Foundation

/// out[r, :] = inp[r, :] − max − log Σ exp(inp[r, :] − max)
public func logSoftmaxForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows: Int, k: Int) {
    parallelRanges(rows, costPerItem: 20 * k) { r in
        for row in r {
            let x = inp + row * k, o = out + row * k
            var m = -Float.infinity
            for i in 0..<k { m = max(m, x[i]) }
            var t = 0.0
            for i in 0..<k { t += Double(expf(x[i] - m)) }
            let lse = m + Float(log(t))
            for i in 0..<k { o[i] = x[i] - lse }
        }
    }
}

/// dinp[r, i] = dout[r, i] − exp(out[r, i]) · Σ_j dout[r, j]
public func logSoftmaxBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                               out: UnsafePointer<Float>, rows: Int, k: Int) {
    parallelRanges(rows, costPerItem: 20 * k) { r in
        for row in r {
            let g = dout + row * k, y = out + row * k, d = dinp + row * k
            let s = Float(sum(g, n: k))
            for i in 0..<k { d[i] = g[i] - expf(y[i]) * s }
        }
    }
}

/// Mean cross-entropy of log-probabilities against class indices, with label smoothing ε as
/// PyTorch: per row −(1 − ε)·logp[t] − ε/K · Σ_k logp[k]. Returns the mean over rows.
public func crossEntropyForward(logProbs: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                                rows: Int, k: Int, labelSmoothing eps: Float, divisor: Int? = nil) -> Float {
    var total = 0.0
    for row in 0..<rows {
        let lp = logProbs + row * k
        var loss = -Double(1 - eps) * Double(lp[Int(targets[row])])
        if eps > 0 { loss -= Double(eps) / Double(k) * sum(lp, n: k) }
        total += loss
    }
    return Float(total / Double(divisor ?? rows))
}

/// ∂(mean cross-entropy)/∂logits · dloss = dloss/N · (softmax − q), q = (1 − ε)·onehot + ε/K.
public func crossEntropyBackward(dlogits: UnsafeMutablePointer<Float>, logProbs: UnsafePointer<Float>,
                                 targets: UnsafePointer<Int32>, rows: Int, k: Int, labelSmoothing eps: Float,
                                 dloss: Float, divisor: Int? = nil) {
    let scale = dloss / Float(divisor ?? rows)
    parallelRanges(rows, costPerItem: 20 * k) { r in
        for row in r {
            let lp = logProbs + row * k, d = dlogits + row * k
            let t = Int(targets[row])
            for i in 0..<k {
                let q = (i == t ? 1 - eps : 0) + eps / Float(k)
                d[i] = scale * (expf(lp[i]) - q)
            }
        }
    }
}
