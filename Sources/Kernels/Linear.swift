// Fully connected layer y = x·Wᵀ + b on dnnl_sgemm (row-major).
// Dims legend: B rows (batch), I input features, O output features; W is O×I as PyTorch.

/// out[B,O] = inp[B,I] · weight[O,I]ᵀ + bias[O]
public func linearForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          bias: UnsafePointer<Float>?, b: Int, i: Int, o: Int) {
    if let bias {
        for r in 0..<b { (out + r * o).update(from: bias, count: o) }
    }
    sgemm(transA: false, transB: true, m: b, n: o, k: i, a: inp, lda: i, b: weight, ldb: i,
          beta: bias == nil ? 0 : 1, c: out, ldc: o)
}

/// dinp[B,I] = dout[B,O] · weight[O,I] (written)
public func linearBackwardData(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                               weight: UnsafePointer<Float>, b: Int, i: Int, o: Int) {
    sgemm(transA: false, transB: false, m: b, n: i, k: o, a: dout, lda: o, b: weight, ldb: i, beta: 0, c: dinp, ldc: i)
}

/// dweight[O,I] = dout[B,O]ᵀ · inp[B,I]; dbias[O] = Σ_B dout (written)
public func linearBackwardWeights(dweight: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?,
                                  inp: UnsafePointer<Float>, dout: UnsafePointer<Float>, b: Int, i: Int, o: Int) {
    sgemm(transA: true, transB: false, m: o, n: i, k: b, a: dout, lda: o, b: inp, ldb: i, beta: 0, c: dweight, ldc: i)
    if let dbias {
        for j in 0..<o {
            var t = 0.0
            for r in 0..<b { t += Double(dout[r * o + j]) }
            dbias[j] = Float(t)
        }
    }
}
