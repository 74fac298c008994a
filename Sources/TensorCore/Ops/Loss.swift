// Log-softmax and cross-entropy (with optional label smoothing, used by the SENet-154 recipe).

import Kernels

/// Log-softmax along the last axis of `x` [B, K]: x − log Σ exp x. Gradient g − softmax·Σg.
public func logSoftmax(_ x: Tensor) -> Tensor {
    if x.rank != 2 { shapeFailure("logSoftmax", "input \(x.shape) must be 2-D [B, K]") }
    let (b, k) = (x.shape[0], x.shape[1])
    var out = Tensor(uninitializedShape: x.shape)
    out.withUnsafeMutablePointer { o in x.withUnsafePointer { logSoftmaxForward(out: o, inp: $0, rows: b, k: k) } }
    let y = out.detached
    GradientTape.record(&out, [x]) { g, _ in
        var d = Tensor(uninitializedShape: [b, k])
        d.withUnsafeMutablePointer { pd in g.withUnsafePointer { pg in y.withUnsafePointer { logSoftmaxBackward(dinp: pd, dout: pg, out: $0, rows: b, k: k) } } }
        return [d]
    }
    return out
}

/// Mean cross-entropy of `logits` [B, K] against class indices `targets` (B values in 0..<K),
/// as PyTorch's `F.cross_entropy(logits, targets, label_smoothing:)`. Returns shape [].
///
/// `divisor` replaces B as the denominator of the mean: data-parallel training passes the global
/// batch's size, so that a rank's loss is its share of the global mean and its logit gradients
/// are those one process computes for the same samples, bit for bit.
public func crossEntropy(logits: Tensor, targets: [Int], labelSmoothing: Float = 0, divisor: Int? = nil) -> Tensor {
    let op = "crossEntropy"
    if logits.rank != 2 || logits.shape[0] != targets.count {
        shapeFailure(op, "logits \(logits.shape) and targets [\(targets.count)] do not match (expected [B, K] and [B])")
    }
    let (b, k) = (logits.shape[0], logits.shape[1])
    if let bad = targets.first(where: { $0 < 0 || $0 >= k }) { shapeFailure(op, "target \(bad) is out of range for \(k) classes") }
    if let divisor, divisor < 1 { shapeFailure(op, "divisor \(divisor) must be positive") }
    var lp = Tensor(uninitializedShape: [b, k])
    lp.withUnsafeMutablePointer { o in logits.withUnsafePointer { logSoftmaxForward(out: o, inp: $0, rows: b, k: k) } }
    let t32 = targets.map { Int32($0) }
    let loss = lp.withUnsafePointer { p in t32.withUnsafeBufferPointer { crossEntropyForward(logProbs: p, targets: $0.baseAddress!, rows: b, k: k, labelSmoothing: labelSmoothing, divisor: divisor) } }
    var out = Tensor(loss)
    GradientTape.record(&out, [logits]) { g, _ in
        var d = Tensor(uninitializedShape: [b, k])
        d.withUnsafeMutablePointer { pd in lp.withUnsafePointer { p in t32.withUnsafeBufferPointer {
            crossEntropyBackward(dlogits: pd, logProbs: p, targets: $0.baseAddress!, rows: b, k: k, labelSmoothing: labelSmoothing, dloss: g.item, divisor: divisor)
        } } }
        return [d]
    }
    return out
}
