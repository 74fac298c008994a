// Reference twin of Softmax.swift (logSoftmaxForward/Backward, crossEntropyForward/Backward with
// PyTorch's label smoothing), row by row in Double.

import Foundation

extension Reference {
    /// Row-wise log-softmax of an N×K matrix: x − log Σ_k e^(x_k) (shifted by the row max for range).
    public static func logSoftmaxForward(inp: [Float], rows: Int, k: Int) -> [Float] {
        (0..<rows).flatMap { r -> [Float] in
            let row = inp[(r * k)..<(r * k + k)].map(Double.init), m = row.max()!
            let lse = m + log(row.reduce(0.0) { $0 + exp($1 - m) })
            return row.map { Float($0 - lse) }
        }
    }

    /// dinp[r,i] = dout[r,i] − softmax[r,i]·Σ_j dout[r,j], softmax = e^out.
    public static func logSoftmaxBackward(dout: [Float], out: [Float], rows: Int, k: Int) -> [Float] {
        (0..<rows).flatMap { r -> [Float] in
            let total = dout[(r * k)..<(r * k + k)].reduce(0.0) { $0 + Double($1) }
            return (r * k..<(r * k + k)).map { Float(Double(dout[$0]) - exp(Double(out[$0])) * total) }
        }
    }

    /// Smoothed target q = (1 − ε)·onehot(t) + ε/K, PyTorch's label_smoothing.
    static func smoothedTarget(_ t: Int32, _ i: Int, k: Int, _ eps: Float) -> Double {
        (i == Int(t) ? 1 - Double(eps) : 0) + Double(eps) / Double(k)
    }

    /// Mean over rows of −Σ_k q_k · logProbs[r,k].
    public static func crossEntropyForward(logProbs: [Float], targets: [Int32], rows: Int, k: Int, labelSmoothing eps: Float) -> Float {
        let total = (0..<rows).reduce(0.0) { acc, r in
            acc - (0..<k).reduce(0.0) { $0 + smoothedTarget(targets[r], $1, k: k, eps) * Double(logProbs[r * k + $1]) }
        }
        return Float(total / Double(rows))
    }

    /// ∂loss/∂logits = dloss/N · (softmax − q).
    public static func crossEntropyBackward(logProbs: [Float], targets: [Int32], rows: Int, k: Int,
                                            labelSmoothing eps: Float, dloss: Float) -> [Float] {
        logProbs.indices.map { i in
            Float(Double(dloss) / Double(rows) * (exp(Double(logProbs[i])) - smoothedTarget(targets[i / k], i % k, k: k, eps)))
        }
    }
}
