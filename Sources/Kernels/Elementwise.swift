// Elementwise activations and arithmetic over contiguous Float buffers.
//
// Conventions (llm.c style): outputs first, then inputs, then the element count `n`.
// Backward kernels *write* their gradient; the autograd tape sums fan-out (see Conv2D.swift).
// Loops run 8 lanes at a time (SIMD8<Float>, AVX2 when built with -target-cpu haswell) and split
// across cores once large enough.

import Foundation

@inline(__always)
private func simdMap(_ out: UnsafeMutablePointer<Float>, _ n: Int, cost: Int = 1,
                     _ vec: (Int) -> SIMD8<Float>, _ scalar: (Int) -> Float) {
    parallelRanges(n, costPerItem: cost) { r in
        var i = r.lowerBound
        let end = r.upperBound
        while i + 8 <= end {
            UnsafeMutableRawPointer(out + i).storeBytes(of: vec(i), as: SIMD8<Float>.self)
            i += 8
        }
        while i < end { out[i] = scalar(i); i += 1 }
    }
}

@inline(__always)
func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
}

/// Lane-wise max(v, lo) with NaN kept, as PyTorch's clamp: one compare and one blend. (The
/// standard library's `pointwiseMax` is a per-lane loop with IEEE maximumNumber semantics — it
/// maps NaN to the other operand and does not vectorise: it was 7% of a batch-1 SE-ResNet-50
/// forward pass.)
@inline(__always)
func clampBelow(_ v: SIMD8<Float>, _ lo: SIMD8<Float>) -> SIMD8<Float> { v.replacing(with: lo, where: v .< lo) }

/// Lane-wise min(v, hi) with NaN kept.
@inline(__always)
func clampAbove(_ v: SIMD8<Float>, _ hi: SIMD8<Float>) -> SIMD8<Float> { v.replacing(with: hi, where: v .> hi) }

// MARK: ReLU

/// out = max(inp, 0)
public func reluForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    let zero = SIMD8<Float>(repeating: 0)
    simdMap(out, n, { clampBelow(load8(inp, $0), zero) }, { max(inp[$0], 0) })
}

/// out = max(a + b, 0) (NaN kept): the end of a plain residual block, the add and the ReLU in
/// one pass; the same bits as `add` then `reluForward`.
public func addReLUForward(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>, n: Int) {
    let zero = SIMD8<Float>(repeating: 0)
    simdMap(out, n, { clampBelow(load8(a, $0) + load8(b, $0), zero) }, { max(a[$0] + b[$0], 0) })
}

/// dinp = dout except where out ≤ 0 (PyTorch's `threshold_backward`: 0 at exactly 0, and a NaN
/// output passes the gradient, in the 8-lane body and in the tail alike).
public func reluBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                         out: UnsafePointer<Float>, n: Int) {
    let zero = SIMD8<Float>(repeating: 0)
    simdMap(dinp, n, { i in
        let d = load8(dout, i)
        return d.replacing(with: zero, where: load8(out, i) .<= zero)
    }, { out[$0] <= 0 ? 0 : dout[$0] })
}

// MARK: Sigmoid, tanh, hard-sigmoid

/// out = 1 / (1 + e^(−inp))
public func sigmoidForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    parallelRanges(n, costPerItem: 20) { r in
        for i in r { out[i] = 1 / (1 + expf(-inp[i])) }
    }
}

/// dinp = dout · out · (1 − out)
public func sigmoidBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                            out: UnsafePointer<Float>, n: Int) {
    let one = SIMD8<Float>(repeating: 1)
    simdMap(dinp, n, { i in let y = load8(out, i); return load8(dout, i) * y * (one - y) },
            { dout[$0] * out[$0] * (1 - out[$0]) })
}

/// out = tanh(inp)
public func tanhForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    parallelRanges(n, costPerItem: 20) { r in
        for i in r { out[i] = tanhf(inp[i]) }
    }
}

/// dinp = dout · (1 − out²)
public func tanhBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                         out: UnsafePointer<Float>, n: Int) {
    let one = SIMD8<Float>(repeating: 1)
    simdMap(dinp, n, { i in let y = load8(out, i); return load8(dout, i) * (one - y * y) },
            { dout[$0] * (1 - out[$0] * out[$0]) })
}

/// out = clamp(inp / 6 + 1/2, 0, 1) (PyTorch `hardsigmoid`, MobileNetV3's SE gate).
public func hardSigmoidForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    let zero = SIMD8<Float>(repeating: 0), one = SIMD8<Float>(repeating: 1)
    let sixth = SIMD8<Float>(repeating: 1 / 6), half = SIMD8<Float>(repeating: 0.5)
    simdMap(out, n, { i in
        clampAbove(clampBelow(load8(inp, i) * sixth + half, zero), one)
    }, { min(max(inp[$0] / 6 + 0.5, 0), 1) })
}

/// dinp = dout / 6 where −3 < inp < 3, else 0.
public func hardSigmoidBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                inp: UnsafePointer<Float>, n: Int) {
    parallelRanges(n) { r in
        for i in r { dinp[i] = (inp[i] > -3 && inp[i] < 3) ? dout[i] / 6 : 0 }
    }
}

// MARK: Arithmetic

/// out = a + b
public func add(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>, n: Int) {
    simdMap(out, n, { load8(a, $0) + load8(b, $0) }, { a[$0] + b[$0] })
}

/// out = a · b
public func mul(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>, n: Int) {
    simdMap(out, n, { load8(a, $0) * load8(b, $0) }, { a[$0] * b[$0] })
}

/// out = a · s + b (scalars s and b)
public func affine(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, scale s: Float, shift b: Float, n: Int) {
    let vs = SIMD8<Float>(repeating: s), vb = SIMD8<Float>(repeating: b)
    simdMap(out, n, { load8(a, $0) * vs + vb }, { a[$0] * s + b })
}

/// acc += x
public func accumulate(_ acc: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, n: Int) {
    simdMap(acc, n, { load8(acc, $0) + load8(x, $0) }, { acc[$0] + x[$0] })
}

/// One step of torch.optim.SGD (dampening 0) in place, element by element, in Float, each
/// product and sum rounded as written (no fused multiply-add, as the scalar loop it replaces):
///   d = g + decay·w;  b = d on the first step, else μ·b + d;  w −= lr·(d + μ·b if Nesterov, else b).
/// With μ = 0 there is no buffer (`buffer` nil): w −= lr·d. Vectorised and on both cores.
public func sgdUpdate(weights w: UnsafeMutablePointer<Float>, gradient g: UnsafePointer<Float>,
                      buffer b: UnsafeMutablePointer<Float>?, n: Int, learningRate lr: Float,
                      momentum mu: Float, decay: Float, nesterov: Bool, first: Bool) {
    let vlr = SIMD8<Float>(repeating: lr), vmu = SIMD8<Float>(repeating: mu), vdecay = SIMD8<Float>(repeating: decay)
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>, _ i: Int, _ v: SIMD8<Float>) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
    }
    parallelRanges(n, costPerItem: 8) { r in
        var i = r.lowerBound
        let end = r.upperBound
        guard let b else {
            while i + 8 <= end {
                let wv = load8(w, i), d = load8(g, i) + vdecay * wv
                store(w, i, wv - vlr * d)
                i += 8
            }
            while i < end { w[i] -= lr * (g[i] + decay * w[i]); i += 1 }
            return
        }
        while i + 8 <= end {
            let wv = load8(w, i), d = load8(g, i) + vdecay * wv
            let bv = first ? d : vmu * load8(b, i) + d
            store(b, i, bv)
            store(w, i, wv - vlr * (nesterov ? d + vmu * bv : bv))
            i += 8
        }
        while i < end {
            let d = g[i] + decay * w[i]
            b[i] = first ? d : mu * b[i] + d
            w[i] -= lr * (nesterov ? d + mu * b[i] : b[i])
            i += 1
        }
    }
}

/// acc[p, i] += value[p] · factor for `planes` planes of `size` (a per-plane gradient, such as the
/// SE squeeze's, added without first being broadcast into a tensor of its own).
public func accumulatePlanes(_ acc: UnsafeMutablePointer<Float>, value: UnsafePointer<Float>, factor: Float,
                             planes: Int, size: Int) {
    parallelRanges(planes, costPerItem: size * 2) { r in
        for p in r {
            let v = value[p] * factor, vv = SIMD8<Float>(repeating: v), o = acc + p * size
            var i = 0
            while i + 8 <= size {
                UnsafeMutableRawPointer(o + i).storeBytes(of: load8(o, i) + vv, as: SIMD8<Float>.self)
                i += 8
            }
            while i < size { o[i] += v; i += 1 }
        }
    }
}

/// Sum of n floats, accumulated 8 lanes wide in Float and combined in Double.
public func sum(_ x: UnsafePointer<Float>, n: Int) -> Double {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    var total = 0.0
    while i + 8 <= n {
        acc += load8(x, i)
        i += 8
        if i & 4095 == 0 { total += Double(acc.sum()); acc = .zero }
    }
    total += Double(acc.sum())
    while i < n { total += Double(x[i]); i += 1 }
    return total
}

/// Per-plane scale: out[p, i] = x[p, i] · s[p] for `planes` planes of `size` elements
/// (the SE block's channel recalibration, s of shape N×C).
public func scalePlanes(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, s: UnsafePointer<Float>,
                        planes: Int, size: Int) {
    parallelRanges(planes, costPerItem: size) { r in
        for p in r {
            let sv = SIMD8<Float>(repeating: s[p]), sc = s[p]
            let xo = x + p * size, oo = out + p * size
            var i = 0
            while i + 8 <= size {
                UnsafeMutableRawPointer(oo + i).storeBytes(of: load8(xo, i) * sv, as: SIMD8<Float>.self)
                i += 8
            }
            while i < size { oo[i] = xo[i] * sc; i += 1 }
        }
    }
}

/// Per-plane sums: out[p] = Σ_i x[p, i] (the SE squeeze, and ∂/∂s of the channel scale).
public func sumPlanes(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, planes: Int, size: Int) {
    parallelRanges(planes, costPerItem: size) { r in
        for p in r { out[p] = Float(sum(x + p * size, n: size)) }
    }
}

/// Per-plane dot products: out[p] = Σ_i a[p, i] · b[p, i].
public func dotPlanes(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                      planes: Int, size: Int) {
    parallelRanges(planes, costPerItem: size) { r in
        for p in r {
            let ap = a + p * size, bp = b + p * size
            var acc = SIMD8<Float>(repeating: 0)
            var i = 0
            while i + 8 <= size { acc += load8(ap, i) * load8(bp, i); i += 8 }
            var t = Double(acc.sum())
            while i < size { t += Double(ap[i] * bp[i]); i += 1 }
            out[p] = Float(t)
        }
    }
}

// MARK: ReLU6 and hard-swish (MobileNetV2/V3)

/// out = min(max(inp, 0), 6)
public func relu6Forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    let zero = SIMD8<Float>(repeating: 0), six = SIMD8<Float>(repeating: 6)
    simdMap(out, n, { clampAbove(clampBelow(load8(inp, $0), zero), six) }, { min(max(inp[$0], 0), 6) })
}

/// dinp = dout where 0 < inp < 6 (PyTorch's hardtanh rule), else 0.
public func relu6Backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    parallelRanges(n) { r in
        for i in r { dinp[i] = (inp[i] > 0 && inp[i] < 6) ? dout[i] : 0 }
    }
}

/// out = inp · clamp(inp + 3, 0, 6) / 6 (MobileNetV3's hard-swish).
public func hardSwishForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    let zero = SIMD8<Float>(repeating: 0), six = SIMD8<Float>(repeating: 6)
    let three = SIMD8<Float>(repeating: 3), sixth = SIMD8<Float>(repeating: 1 / 6)
    simdMap(out, n, { i in
        let x = load8(inp, i)
        return x * clampAbove(clampBelow(x + three, zero), six) * sixth
    }, { inp[$0] * min(max(inp[$0] + 3, 0), 6) / 6 })
}

/// dinp = 0 for inp < −3, dout·(inp/3 + 1/2) for −3 ≤ inp ≤ 3, dout above (PyTorch's rule).
public func hardSwishBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    parallelRanges(n) { r in
        for i in r {
            let x = inp[i]
            dinp[i] = x < -3 ? 0 : (x <= 3 ? dout[i] * (x / 3 + 0.5) : dout[i])
        }
    }
}

/// The end of an SE residual block in one pass (the Caffe release's "Axpy" plus the ReLU):
/// out[p, i] = max(x[p, i] · s[p] + r[p, i], 0).
public func scaleAddReLUPlanes(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, s: UnsafePointer<Float>,
                               residual r: UnsafePointer<Float>, planes: Int, size: Int) {
    let zero = SIMD8<Float>(repeating: 0)
    parallelRanges(planes, costPerItem: size * 3) { range in
        for p in range {
            let sv = SIMD8<Float>(repeating: s[p]), sc = s[p]
            let xo = x + p * size, ro = r + p * size, oo = out + p * size
            var i = 0
            while i + 8 <= size {
                let v = clampBelow(load8(xo, i) * sv + load8(ro, i), zero)
                UnsafeMutableRawPointer(oo + i).storeBytes(of: v, as: SIMD8<Float>.self)
                i += 8
            }
            while i < size { oo[i] = max(xo[i] * sc + ro[i], 0); i += 1 }
        }
    }
}

/// The backward pass of `scaleAddReLUPlanes`, given the output it wrote: dr = dout where
/// out > 0, else 0 (the ReLU's gradient, which is also the residual's), and dx = dr · s[p], in
/// one pass. The scale's gradient, Σ_i dr[p, i] · x[p, i], is `dotPlanes(dr, x)`; given `x` and
/// `ds` it is formed in the same pass, summed as `dotPlanes` sums (bit for bit the same).
public func scaleAddReLUBackwardPlanes(dx: UnsafeMutablePointer<Float>, dr: UnsafeMutablePointer<Float>,
                                       dout: UnsafePointer<Float>, out: UnsafePointer<Float>,
                                       s: UnsafePointer<Float>, x: UnsafePointer<Float>? = nil,
                                       ds: UnsafeMutablePointer<Float>? = nil, planes: Int, size: Int) {
    let zero = SIMD8<Float>(repeating: 0)
    parallelRanges(planes, costPerItem: size * (x == nil ? 2 : 3)) { range in
        for p in range {
            let sv = SIMD8<Float>(repeating: s[p]), sc = s[p]
            let go = dout + p * size, oo = out + p * size, dro = dr + p * size, dxo = dx + p * size
            var acc = SIMD8<Float>(repeating: 0)
            var i = 0
            while i + 8 <= size {
                let d = load8(go, i).replacing(with: zero, where: load8(oo, i) .<= zero)
                UnsafeMutableRawPointer(dro + i).storeBytes(of: d, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(dxo + i).storeBytes(of: d * sv, as: SIMD8<Float>.self)
                if let x { acc += d * load8(x + p * size, i) }
                i += 8
            }
            var t = Double(acc.sum())
            while i < size {
                let d: Float = oo[i] <= 0 ? 0 : go[i]
                dro[i] = d
                dxo[i] = d * sc
                if let x { t += Double(d * x[p * size + i]) }
                i += 1
            }
            if let ds { ds[p] = Float(t) }
        }
    }
}

/// In place, plane p of `planes` planes of `size`: y = y + bias[p], then max(·, 0) with `relu`
/// (NaN kept): a convolution's epilogue.
public func biasReLUPlanes(_ y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, relu: Bool, planes: Int, size: Int) {
    parallelRanges(planes, costPerItem: size * 2) { range in
        for p in range { affineSerial(y + p * size, y + p * size, 1, bias?[p] ?? 0, size, relu: relu) }
    }
}
