// Elementwise arithmetic with NumPy/PyTorch broadcasting, and the reductions its gradients need.
//
// Broadcasting aligns shapes at the right; each pair of dimensions must be equal or contain a 1.
// Fast paths cover equal shapes and the SE block's per-channel scale (N×C×H×W with N×C×1×1 or
// 1×C×1×1); other shapes take a general strided loop.

import Kernels

/// The broadcast result shape of `a` and `b`, or a trap naming `op` and both shapes.
public func broadcastShape(_ a: [Int], _ b: [Int], op: String) -> [Int] {
    let r = max(a.count, b.count)
    let pa = [Int](repeating: 1, count: r - a.count) + a
    let pb = [Int](repeating: 1, count: r - b.count) + b
    return zip(pa, pb).map { x, y in
        if x == y || y == 1 { return x }
        if x == 1 { return y }
        shapeFailure(op, "shapes \(a) and \(b) cannot be broadcast together")
    }
}

/// How a small operand maps onto a 4-D N×C×H×W one: per (n, c) plane, or per channel only.
enum PlaneBroadcast { case perPlane, perChannel }

func planeBroadcast(big: [Int], small: [Int]) -> PlaneBroadcast? {
    guard big.count == 4, small.count == 4, small[2] == 1, small[3] == 1, small[1] == big[1], big[2] * big[3] > 1 else { return nil }
    if small[0] == big[0] { return .perPlane }
    if small[0] == 1 { return .perChannel }
    return nil
}

/// Row-major strides of `shape` as seen from an `outShape`-shaped iteration (0 where broadcast).
func broadcastStrides(_ shape: [Int], to outShape: [Int]) -> [Int] {
    let padded = [Int](repeating: 1, count: outShape.count - shape.count) + shape
    var strides = [Int](repeating: 0, count: outShape.count)
    var s = 1
    for i in stride(from: padded.count - 1, through: 0, by: -1) {
        strides[i] = padded[i] == 1 ? 0 : s
        s *= padded[i]
    }
    return strides
}

/// The general broadcasting loop: out[i] = f(a[ia], b[ib]).
func broadcastLoop(_ a: Tensor, _ b: Tensor, _ outShape: [Int], _ f: (Float, Float) -> Float) -> Tensor {
    var out = Tensor(uninitializedShape: outShape)
    let sa = broadcastStrides(a.shape, to: outShape), sb = broadcastStrides(b.shape, to: outShape)
    let r = outShape.count, total = out.count
    out.withUnsafeMutablePointer { o in
        a.withUnsafePointer { pa in
            b.withUnsafePointer { pb in
                var idx = [Int](repeating: 0, count: r)
                var ia = 0, ib = 0
                for i in 0..<total {
                    o[i] = f(pa[ia], pb[ib])
                    var d = r - 1
                    while d >= 0 {
                        idx[d] += 1; ia += sa[d]; ib += sb[d]
                        if idx[d] < outShape[d] { break }
                        ia -= sa[d] * idx[d]; ib -= sb[d] * idx[d]; idx[d] = 0
                        d -= 1
                    }
                }
            }
        }
    }
    return out
}

/// Expands a per-channel (1×C×1×1) operand to per-plane (N·C values).
func expandChannels(_ small: Tensor, n: Int) -> Tensor {
    if small.shape[0] == n { return small }
    var out = Tensor(uninitializedShape: [n, small.shape[1], 1, 1])
    let c = small.shape[1]
    out.withUnsafeMutablePointer { o in small.withUnsafePointer { s in for b in 0..<n { (o + b * c).update(from: s, count: c) } } }
    return out
}

/// `t` broadcast up to `shape`, times `scale` (the adjoint of `sumToShape`); a per-plane
/// broadcast is written with channel block `block` when that divides the channels.
func broadcastTo(_ t: Tensor, _ shape: [Int], scale: Float = 1, block: Int = 1) -> Tensor {
    if planeBroadcast(big: shape, small: t.shape) == .perPlane, block > 1, shape[1] % block == 0 {
        var out = Tensor(uninitializedShape: shape, channelBlock: block)
        out.withUnsafeMutableStorage { o in t.withUnsafePointer {
            blockedBroadcastPlanes(out: o, value: $0, factor: scale, n: shape[0], c: shape[1], s: shape[2] * shape[3], block: block)
        } }
        return out
    }
    if planeBroadcast(big: shape, small: t.shape) == .perPlane {
        var out = Tensor(uninitializedShape: shape)
        let planes = shape[0] * shape[1], size = shape[2] * shape[3]
        out.withUnsafeMutablePointer { o in
            t.withUnsafePointer { p in for i in 0..<planes { (o + i * size).update(repeating: p[i] * scale, count: size) } }
        }
        return out
    }
    return broadcastLoop(t, Tensor(scale), shape, *)
}

/// Sums `g` down to `shape` (the adjoint of broadcasting `shape` up to `g.shape`).
public func sumToShape(_ g: Tensor, _ shape: [Int]) -> Tensor {
    if g.shape == shape { return g }
    if shape.reduce(1, *) == g.count { return g.viewing(as: shape) }
    if let kind = planeBroadcast(big: g.shape, small: shape) {
        let n = g.shape[0], c = g.shape[1], s = g.shape[2] * g.shape[3]
        var planes = Tensor(uninitializedShape: [n, c, 1, 1])
        if g.channelBlock > 1 {
            planes.withUnsafeMutablePointer { o in g.withUnsafeStorage {
                blockedSumPlanes(out: o, x: $0, n: n, c: c, s: s, block: g.channelBlock)
            } }
        } else {
            planes.withUnsafeMutablePointer { o in g.withUnsafePointer { sumPlanes(out: o, x: $0, planes: n * c, size: s) } }
        }
        if kind == .perPlane { return planes }
        var out = Tensor.zeros(shape)
        out.withUnsafeMutablePointer { o in planes.withUnsafePointer { p in for b in 0..<n { accumulate(o, p + b * c, n: c) } } }
        return out
    }
    // General path: accumulate every element of g into its broadcast source.
    var out = Tensor.zeros(shape)
    let st = broadcastStrides(shape, to: g.shape)
    let r = g.rank
    out.withUnsafeMutablePointer { o in
        g.withUnsafePointer { pg in
            var idx = [Int](repeating: 0, count: r)
            var io = 0
            for i in 0..<g.count {
                o[io] += pg[i]
                var d = r - 1
                while d >= 0 {
                    idx[d] += 1; io += st[d]
                    if idx[d] < g.shape[d] { break }
                    io -= st[d] * idx[d]; idx[d] = 0
                    d -= 1
                }
            }
        }
    }
    return out
}

// MARK: Raw (unrecorded) forward computations

func rawAdd(_ a: Tensor, _ b: Tensor) -> Tensor {
    if a.shape == b.shape {
        // In a's layout (a channel-blocked residual sum stays blocked).
        let b = b.inLayout(a.channelBlock)
        var out = Tensor(uninitializedShape: a.shape, channelBlock: a.channelBlock)
        out.withUnsafeMutableStorage { o in a.withUnsafeStorage { pa in b.withUnsafeStorage { add(out: o, a: pa, b: $0, n: a.count) } } }
        return out
    }
    return broadcastLoop(a, b, broadcastShape(a.shape, b.shape, op: "add"), +)
}

func rawMul(_ a: Tensor, _ b: Tensor) -> Tensor {
    if a.shape == b.shape {
        let b = b.inLayout(a.channelBlock)
        var out = Tensor(uninitializedShape: a.shape, channelBlock: a.channelBlock)
        out.withUnsafeMutableStorage { o in a.withUnsafeStorage { pa in b.withUnsafeStorage { mul(out: o, a: pa, b: $0, n: a.count) } } }
        return out
    }
    for (big, small) in [(a, b), (b, a)] where planeBroadcast(big: big.shape, small: small.shape) != nil {
        let n = big.shape[0], c = big.shape[1], s = big.shape[2] * big.shape[3]
        let scale = expandChannels(small, n: n)
        if big.channelBlock > 1 {
            var out = Tensor(uninitializedShape: big.shape, channelBlock: big.channelBlock)
            out.withUnsafeMutableStorage { o in big.withUnsafeStorage { x in scale.withUnsafePointer {
                blockedScalePlanes(out: o, x: x, scale: $0, n: n, c: c, s: s, block: big.channelBlock)
            } } }
            return out
        }
        var out = Tensor(uninitializedShape: big.shape)
        out.withUnsafeMutablePointer { o in
            big.withUnsafePointer { x in scale.withUnsafePointer { scalePlanes(out: o, x: x, s: $0, planes: n * c, size: s) } }
        }
        return out
    }
    return broadcastLoop(a, b, broadcastShape(a.shape, b.shape, op: "mul"), *)
}

func rawScale(_ a: Tensor, _ s: Float, _ shift: Float = 0) -> Tensor {
    var out = Tensor(uninitializedShape: a.shape)
    out.withUnsafeMutablePointer { o in a.withUnsafePointer { affine(out: o, a: $0, scale: s, shift: shift, n: a.count) } }
    return out
}

// MARK: Differentiable operators

extension Tensor {
    /// Elementwise a + b with broadcasting. ∂a = Σ_broadcast g, ∂b = Σ_broadcast g.
    public static func + (a: Tensor, b: Tensor) -> Tensor {
        var out = rawAdd(a, b)
        let (sa, sb) = (a.shape, b.shape)
        GradientTape.record(&out, [a, b]) { g, need in
            [need[0] ? sumToShape(g, sa) : nil, need[1] ? sumToShape(g, sb) : nil]
        }
        return out
    }

    /// Elementwise a − b with broadcasting.
    public static func - (a: Tensor, b: Tensor) -> Tensor {
        var out = broadcastLoop(a, b, broadcastShape(a.shape, b.shape, op: "sub"), -)
        let (sa, sb) = (a.shape, b.shape)
        GradientTape.record(&out, [a, b]) { g, need in
            [need[0] ? sumToShape(g, sa) : nil, need[1] ? rawScale(sumToShape(g, sb), -1) : nil]
        }
        return out
    }

    /// Elementwise a · b with broadcasting (the SE scale is N×C×H×W · N×C×1×1).
    /// ∂a = Σ_broadcast g·b, ∂b = Σ_broadcast g·a.
    public static func * (a: Tensor, b: Tensor) -> Tensor {
        var out = rawMul(a, b)
        GradientTape.record(&out, [a, b]) { g, need in
            [need[0] ? mulGrad(g, other: b, target: a.shape) : nil,
             need[1] ? mulGrad(g, other: a, target: b.shape) : nil]
        }
        return out
    }

    /// Elementwise a / b with broadcasting. ∂a = g/b, ∂b = −g·a/b².
    public static func / (a: Tensor, b: Tensor) -> Tensor {
        var out = broadcastLoop(a, b, broadcastShape(a.shape, b.shape, op: "div"), /)
        let y = out.detached
        GradientTape.record(&out, [a, b]) { g, need in
            let gb = broadcastLoop(g, b, g.shape, /)
            return [need[0] ? sumToShape(gb, a.shape) : nil,
                    need[1] ? sumToShape(rawMul(gb, y), b.shape).scaled(by: -1) : nil]
        }
        return out
    }

    /// a · s + t for scalars.
    public func scaled(by s: Float, adding t: Float = 0) -> Tensor {
        var out = rawScale(self, s, t)
        GradientTape.record(&out, [self]) { g, _ in [rawScale(g, s)] }
        return out
    }

    public static func * (a: Tensor, s: Float) -> Tensor { a.scaled(by: s) }
    public static func * (s: Float, a: Tensor) -> Tensor { a.scaled(by: s) }
    public static func + (a: Tensor, s: Float) -> Tensor { a.scaled(by: 1, adding: s) }
    public static func - (a: Tensor, s: Float) -> Tensor { a.scaled(by: 1, adding: -s) }
    public static prefix func - (a: Tensor) -> Tensor { a.scaled(by: -1) }
}

/// Σ_broadcast g · other, reduced to `target` (fast path for the per-channel SE scale).
func mulGrad(_ g: Tensor, other: Tensor, target: [Int]) -> Tensor {
    if let kind = planeBroadcast(big: g.shape, small: target), other.shape == g.shape {
        let n = g.shape[0], c = g.shape[1], s = g.shape[2] * g.shape[3]
        var planes = Tensor(uninitializedShape: [n, c, 1, 1])
        if other.channelBlock > 1 {
            let g = g.inLayout(other.channelBlock)
            planes.withUnsafeMutablePointer { o in g.withUnsafeStorage { pg in other.withUnsafeStorage {
                blockedDotPlanes(out: o, a: pg, b: $0, n: n, c: c, s: s, block: other.channelBlock)
            } } }
        } else {
            planes.withUnsafeMutablePointer { o in
                g.withUnsafePointer { pg in other.withUnsafePointer { dotPlanes(out: o, a: pg, b: $0, planes: n * c, size: s) } }
            }
        }
        return kind == .perPlane ? planes : sumToShape(planes.viewing(as: [n, c, 1, 1]), target)
    }
    return sumToShape(rawMul(g, other), target)
}

/// relu(x + residual) for tensors of one shape: the end of a plain residual block in one pass
/// over memory instead of two (the add's, then the ReLU's), and a backward pass that reads the
/// incoming gradient and the output once to write the one gradient both inputs receive. In x's
/// storage layout. Output and gradients are bit-identical to `relu(x + residual)`'s.
public func addReLU(_ x: Tensor, residual: Tensor) -> Tensor {
    guard residual.shape == x.shape else {
        shapeFailure("addReLU", "x \(x.shape), residual \(residual.shape): expected the same shape")
    }
    let block = x.channelBlock
    let r = residual.inLayout(block)
    var out = Tensor(uninitializedShape: x.shape, channelBlock: block)
    out.withUnsafeMutableStorage { o in
        x.withUnsafeStorage { px in r.withUnsafeStorage { addReLUForward(out: o, a: px, b: $0, n: x.count) } }
    }
    guard GradientTape.isRecording(x, residual) else { return out }
    let result = out.detached
    GradientTape.record(&out, [x, residual]) { g, need in
        let g = g.inLayout(block)
        var d = Tensor(uninitializedShape: g.shape, channelBlock: block)
        d.withUnsafeMutableStorage { pd in
            g.withUnsafeStorage { pg in result.withUnsafeStorage { reluBackward(dinp: pd, dout: pg, out: $0, n: g.count) } }
        }
        return [need[0] ? d : nil, need[1] ? d : nil]
    }
    return out
}

/// relu(x · s + residual) for x, residual [N, C, H, W] and s [N, C, 1, 1] (or [N, C]): the end of
/// an SE residual block in one pass over memory instead of three, with a backward pass that
/// reads the incoming gradient, the output and x once to write the gradients of x and of the
/// residual. Results and gradients are bit-identical to `relu(x * s + residual)`'s.
public func seScaleAddReLU(_ x: Tensor, scale s: Tensor, residual: Tensor) -> Tensor {
    let op = "seScaleAddReLU"
    guard x.rank == 4, residual.shape == x.shape, s.count == x.shape[0] * x.shape[1] else {
        shapeFailure(op, "x \(x.shape), scale \(s.shape), residual \(residual.shape): expected x and residual N×C×H×W and scale N×C")
    }
    let (n, c) = (x.shape[0], x.shape[1])
    let planes = n * c, size = x.shape[2] * x.shape[3]
    // In x's layout (channel-blocked: B channels at a time).
    let block = x.channelBlock
    let r = residual.inLayout(block)
    var out = Tensor(uninitializedShape: x.shape, channelBlock: block)
    out.withUnsafeMutableStorage { o in
        x.withUnsafeStorage { px in s.withUnsafePointer { ps in r.withUnsafeStorage {
            if block > 1 {
                blockedScaleAddReLU(out: o, x: px, scale: ps, residual: $0, n: n, c: c, s: size, block: block)
            } else {
                scaleAddReLUPlanes(out: o, x: px, s: ps, residual: $0, planes: planes, size: size)
            }
        } } }
    }
    guard GradientTape.isRecording(x, s, residual) else { return out }
    let (xs, ss, result) = (x.detached, s.detached, out.detached)
    GradientTape.record(&out, [x, s, residual]) { g, need in
        let g = g.inLayout(block)
        // Blocked: x's gradient is dr times the scale per plane, which the tape keeps in that
        // form over dr's storage (`pendingPlaneAffine`: the squeeze's gradient joins it without a
        // pass, and a batch norm's backward reads it as it is) instead of this pass writing it.
        let lazy = block > 1
        var dx: Tensor? = lazy ? nil : Tensor(uninitializedShape: xs.shape, channelBlock: block)
        var dr = Tensor(uninitializedShape: xs.shape, channelBlock: block)
        // The scale's gradient, Σ dr · x per plane, in the same pass when it is needed.
        var ds: Tensor? = need[1] ? Tensor(uninitializedShape: ss.shape) : nil
        optionalMutableStorage(&dx) { pdx in dr.withUnsafeMutableStorage { pdr in
            g.withUnsafeStorage { pg in result.withUnsafeStorage { po in ss.withUnsafePointer { ps in xs.withUnsafeStorage { px in
                optionalMutablePointer(&ds) { pds in
                    let x = pds == nil ? nil : px
                    if block > 1 {
                        blockedScaleAddReLUBackward(dx: pdx, dr: pdr, dout: pg, out: po, scale: ps,
                                                    x: x, ds: pds, n: n, c: c, s: size, block: block)
                    } else {
                        scaleAddReLUBackwardPlanes(dx: pdx!, dr: pdr, dout: pg, out: po, s: ps, x: x, ds: pds,
                                                   planes: planes, size: size)
                    }
                }
            } } } }
        } }
        if lazy {
            dx = dr
            dx!.pendingPlaneAffine = (ss.scalars, nil)
        }
        return [need[0] ? dx : nil, ds, need[2] ? dr : nil]
    }
    return out
}
