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
    // Batch-invariant mode: each row alone (sgemm's blocking can depend on the row count).
    let invariant = batchInvariantReductions && b > 1
    var out = Tensor(uninitializedShape: [b, o])
    out.withUnsafeMutablePointer { po in
        x.withUnsafePointer { px in
            weight.withUnsafePointer { pw in
                optionalPointer(bias) { pb in
                    if invariant {
                        for r in 0..<b { linearForward(out: po + r * o, inp: px + r * i, weight: pw, bias: pb, b: 1, i: i, o: o) }
                    } else {
                        linearForward(out: po, inp: px, weight: pw, bias: pb, b: b, i: i, o: o)
                    }
                }
            }
        }
    }
    var inputs = [x, weight]
    if let bias { inputs.append(bias) }
    let (xs, ws, bs) = (x.detached, weight.detached, bias?.detached)
    GradientTape.record(&out, inputs) { g, need in
        var dx: Tensor?, dw: Tensor?, db: Tensor?
        if need[0] {
            var t = Tensor(uninitializedShape: [b, i])
            t.withUnsafeMutablePointer { d in g.withUnsafePointer { pg in ws.withUnsafePointer { pw in
                if invariant {
                    for r in 0..<b { linearBackwardData(dinp: d + r * i, dout: pg + r * o, weight: pw, b: 1, i: i, o: o) }
                } else {
                    linearBackwardData(dinp: d, dout: pg, weight: pw, b: b, i: i, o: o)
                }
            } } }
            dx = t
        }
        if invariant && (need[1] || (need.count > 2 && need[2])) {
            // Σ_rows dout ⊗ inp in float64 (each float32 product is exact there), in row order;
            // the sums are published for data-parallel reduction (BatchInvariance.swift).
            var sw = [Double](repeating: 0, count: o * i), sb = [Double](repeating: 0, count: o)
            g.withUnsafePointer { pg in xs.withUnsafePointer { px in sw.withUnsafeMutableBufferPointer { w in
                for r in 0..<b {
                    for j in 0..<o {
                        let d = Double(pg[r * o + j])
                        sb[j] += d
                        let row = w.baseAddress! + j * i, xr = px + r * i
                        for k in 0..<i { row[k] += d * Double(xr[k]) }
                    }
                }
            } } }
            dw = ExactGradientSums.gradient(sw, for: ws)
            if let bs { db = ExactGradientSums.gradient(sb, for: bs) }
        } else if need[1] || (need.count > 2 && need[2]) {
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
