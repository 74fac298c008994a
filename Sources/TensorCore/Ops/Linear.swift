// Fully connected layer as PyTorch's `F.linear`.

import Kernels

/// y = x·Wᵀ + b for `x` [B, I], `weight` [O, I], `bias` [O]; output [B, O]. On dnnl_sgemm.
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
    let op = "linear"
    if x.rank != 2 || weight.rank != 2 || x.shape[1] != weight.shape[1] {
        shapeFailure(op, "input \(x.shape) and weight \(weight.shape) do not match (expected [B, I] and [O, I])")
    }
    let (b, i, o) = (x.shape[0], x.shape[1], weight.shape[0])
    if let bias, bias.shape != [o] { shapeFailure(op, "bias \(bias.shape) does not match weight \(weight.shape)") }
    var out = Tensor(uninitializedShape: [b, o])
    out.withUnsafeMutablePointer { po in
        x.withUnsafePointer { px in
            weight.withUnsafePointer { pw in
                if let bias { bias.withUnsafePointer { linearForward(out: po, inp: px, weight: pw, bias: $0, b: b, i: i, o: o) } }
                else { linearForward(out: po, inp: px, weight: pw, bias: nil, b: b, i: i, o: o) }
            }
        }
    }
    var inputs = [x, weight]
    if let bias { inputs.append(bias) }
    let (xs, ws) = (x.detached, weight.detached)
    GradientTape.record(&out, inputs) { g, need in
        var dx: Tensor?, dw: Tensor?, db: Tensor?
        if need[0] {
            var t = Tensor(uninitializedShape: [b, i])
            t.withUnsafeMutablePointer { d in g.withUnsafePointer { pg in ws.withUnsafePointer { linearBackwardData(dinp: d, dout: pg, weight: $0, b: b, i: i, o: o) } } }
            dx = t
        }
        if need[1] || (need.count > 2 && need[2]) {
            var t = Tensor(uninitializedShape: [o, i])
            var tb = need.count > 2 ? Tensor(uninitializedShape: [o]) : nil
            t.withUnsafeMutablePointer { d in
                g.withUnsafePointer { pg in
                    xs.withUnsafePointer { px in
                        if tb != nil { tb!.withUnsafeMutablePointer { linearBackwardWeights(dweight: d, dbias: $0, inp: px, dout: pg, b: b, i: i, o: o) } }
                        else { linearBackwardWeights(dweight: d, dbias: nil, inp: px, dout: pg, b: b, i: i, o: o) }
                    }
                }
            }
            dw = t
            db = tb
        }
        return need.count > 2 ? [dx, dw, db] : [dx, dw]
    }
    return out
}

/// Matrix product of `a` [M, K] and `b` [K, N] → [M, N].
public func matmul(_ a: Tensor, _ b: Tensor) -> Tensor {
    if a.rank != 2 || b.rank != 2 || a.shape[1] != b.shape[0] {
        shapeFailure("matmul", "shapes \(a.shape) and \(b.shape) cannot be multiplied (need [M, K] and [K, N])")
    }
    return linear(a, weight: b.transposed())
}

extension Tensor {
    /// The transpose of a 2-D tensor.
    public func transposed() -> Tensor {
        if rank != 2 { shapeFailure("transposed", "expected a 2-D tensor, got \(shape)") }
        let (r, c) = (shape[0], shape[1])
        var out = Tensor(uninitializedShape: [c, r])
        out.withUnsafeMutablePointer { o in withUnsafePointer { p in for i in 0..<r { for j in 0..<c { o[j * r + i] = p[i * c + j] } } } }
        GradientTape.record(&out, [self]) { g, _ in [g.transposed()] }
        return out
    }
}
