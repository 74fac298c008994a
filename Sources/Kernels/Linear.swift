// Fully connected layer y = x·Wᵀ + b on dnnl_sgemm (row-major).
// Dims legend: B rows (batch), I input features, O output features; W is O×I as PyTorch.

/// out[B,O] = inp[B,I] · weight[O,I]ᵀ + bias[O]
public func linearForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          bias: UnsafePointer<Float>?, b: Int, i: Int, o: Int) {
    if b == 1 { return gemv(rows: o, cols: i, w: weight, x: inp, bias: bias, relu: false, y: out) }
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

/// y[r] = Σ_k w[r, k]·x[k] (+ bias[r]) (then ReLU) for a row-major rows×cols matrix: the
/// matrix-vector product of an SE block's FCs and squeeze at batch 1, where `dnnl_sgemm` took up
/// to twice as long on weights that come from memory (1 MB: 49 against 26 µs, 2 threads). Rows are
/// split between the threads; each row is summed in 16 lanes (two SIMD8 accumulators with fused
/// multiply-adds), the lanes added in order, then the tail.
public func gemv(rows: Int, cols: Int, w: UnsafePointer<Float>, x: UnsafePointer<Float>,
                 bias: UnsafePointer<Float>?, relu: Bool, y: UnsafeMutablePointer<Float>) {
    parallelRanges(rows, costPerItem: 2 * cols) { r in
        for row in r {
            let a = w + row * cols
            var s0 = SIMD8<Float>(repeating: 0), s1 = SIMD8<Float>(repeating: 0)
            var k = 0
            while k + 16 <= cols {
                s0.addProduct(load8(a, k), load8(x, k))
                s1.addProduct(load8(a, k + 8), load8(x, k + 8))
                k += 16
            }
            if k + 8 <= cols { s0.addProduct(load8(a, k), load8(x, k)); k += 8 }
            var t = (s0 + s1).sum()
            while k < cols { t = t.addingProduct(a[k], x[k]); k += 1 }
            if let bias { t += bias[row] }
            y[row] = relu && t < 0 ? 0 : t
        }
    }
}


/// C[m×n] = A[m×k]·B[k×n] for a matrix A read from memory and a few columns (n up to a few
/// dozen): an SE block's squeeze and FCs at batch n, whose products are 1×1 convolutions on 1×1
/// maps. `dnnl_sgemm` packs A at every call, and spent 5–8 times what reading A takes on them
/// (SE-ResNet-50 at batch 16: 0.4 ms for a 1024×256 product, 1 MB of weights). Here A is read
/// once: the rows are split between the threads, four rows at a time against 16 columns of B
/// (eight SIMD8 accumulators, B's rows broadcast against A's elements), then 8 columns, then one.
/// A row-major with row stride k; B and C row-major with row strides ldb and ldc.
public func skinnyGemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, ldb: Int,
                       c: UnsafeMutablePointer<Float>, ldc: Int) {
    let blocks = (m + 3) / 4
    parallelRanges(blocks, costPerItem: 8 * k * n) { r in
        for blk in r {
            let r0 = blk * 4, rows = min(4, m - r0)
            if rows == 4 {
                skinnyRows4(n: n, k: k, a: a + r0 * k, b: b, ldb: ldb, c: c + r0 * ldc, ldc: ldc)
            } else {
                for i in 0..<rows { skinnyRow(n: n, k: k, a: a + (r0 + i) * k, b: b, ldb: ldb, c: c + (r0 + i) * ldc) }
            }
        }
    }
}

/// Four rows of `skinnyGemm`.
@inline(__always)
private func skinnyRows4(n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, ldb: Int,
                         c: UnsafeMutablePointer<Float>, ldc: Int) {
    let (a0, a1, a2, a3) = (a, a + k, a + 2 * k, a + 3 * k)
    var j = 0
    while j + 16 <= n {
        var (s00, s01, s10, s11) = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
        var (s20, s21, s30, s31) = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
        for p in 0..<k {
            let row = b + p * ldb + j
            let (b0, b1) = (load8(row, 0), load8(row, 8))
            let (w0, w1, w2, w3) = (SIMD8(repeating: a0[p]), SIMD8(repeating: a1[p]), SIMD8(repeating: a2[p]), SIMD8(repeating: a3[p]))
            s00.addProduct(w0, b0); s01.addProduct(w0, b1)
            s10.addProduct(w1, b0); s11.addProduct(w1, b1)
            s20.addProduct(w2, b0); s21.addProduct(w2, b1)
            s30.addProduct(w3, b0); s31.addProduct(w3, b1)
        }
        store8(c + j, s00); store8(c + j + 8, s01)
        store8(c + ldc + j, s10); store8(c + ldc + j + 8, s11)
        store8(c + 2 * ldc + j, s20); store8(c + 2 * ldc + j + 8, s21)
        store8(c + 3 * ldc + j, s30); store8(c + 3 * ldc + j + 8, s31)
        j += 16
    }
    if j + 8 <= n {
        var (s0, s1, s2, s3) = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
        for p in 0..<k {
            let b0 = load8(b + p * ldb, j)
            s0.addProduct(SIMD8(repeating: a0[p]), b0)
            s1.addProduct(SIMD8(repeating: a1[p]), b0)
            s2.addProduct(SIMD8(repeating: a2[p]), b0)
            s3.addProduct(SIMD8(repeating: a3[p]), b0)
        }
        store8(c + j, s0); store8(c + ldc + j, s1); store8(c + 2 * ldc + j, s2); store8(c + 3 * ldc + j, s3)
        j += 8
    }
    while j < n {
        var (t0, t1, t2, t3): (Float, Float, Float, Float) = (0, 0, 0, 0)
        for p in 0..<k {
            let v = b[p * ldb + j]
            t0 = t0.addingProduct(a0[p], v); t1 = t1.addingProduct(a1[p], v)
            t2 = t2.addingProduct(a2[p], v); t3 = t3.addingProduct(a3[p], v)
        }
        (c[j], c[ldc + j], c[2 * ldc + j], c[3 * ldc + j]) = (t0, t1, t2, t3)
        j += 1
    }
}

/// One row of `skinnyGemm` (the rows after the last group of four).
private func skinnyRow(n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, ldb: Int,
                       c: UnsafeMutablePointer<Float>) {
    var j = 0
    while j + 8 <= n {
        var s = SIMD8<Float>()
        for p in 0..<k { s.addProduct(SIMD8(repeating: a[p]), load8(b + p * ldb, j)) }
        store8(c + j, s)
        j += 8
    }
    while j < n {
        var t: Float = 0
        for p in 0..<k { t = t.addingProduct(a[p], b[p * ldb + j]) }
        c[j] = t
        j += 1
    }
}

@inline(__always)
private func store8(_ p: UnsafeMutablePointer<Float>, _ v: SIMD8<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}
