// Max and average pooling as PyTorch's `F.max_pool2d` / `F.avg_pool2d`, and global pooling (the
// SE squeeze is a global average pool, paper §3.1).

import Kernels

func poolShape(_ op: String, _ x: Tensor, _ k: (Int, Int), _ s: (Int, Int), _ p: (Int, Int), _ ceil: Bool) -> Pool2DShape {
    if x.rank != 4 { shapeFailure(op, "input \(x.shape) must be 4-D (N×C×H×W)") }
    if p.0 * 2 > k.0 || p.1 * 2 > k.1 { shapeFailure(op, "padding \(p) must be at most half the kernel \(k)") }
    let shape = Pool2DShape(planes: x.shape[0] * x.shape[1], h: x.shape[2], w: x.shape[3], kh: k.0, kw: k.1,
                            sh: s.0, sw: s.1, ph: p.0, pw: p.1, ceilMode: ceil)
    if shape.ho < 1 || shape.wo < 1 { shapeFailure(op, "input \(x.shape) is smaller than the kernel \(k)") }
    return shape
}

/// Max pooling of `x` [N, C, H, W] → [N, C, Ho, Wo]; `Ho = ⌊(H + 2p − k)/s⌋ + 1` (⌈⌉ with
/// `ceilMode`, dropping a last window that would start in the padding). Padding is −∞.
/// The gradient flows to each window's maximum.
public func maxPool2d(_ x: Tensor, kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0),
                      ceilMode: Bool = false) -> Tensor {
    let s = poolShape("maxPool2d", x, kernel, stride ?? kernel, padding, ceilMode)
    return maxPool(x, s, outShape: [x.shape[0], x.shape[1], s.ho, s.wo])
}

func maxPool(_ x: Tensor, _ s: Pool2DShape, outShape: [Int]) -> Tensor {
    // A channel-blocked input is pooled in its layout, B channels at a time. A 1×1 output (global
    // max pooling) is labelled NCHW: with one position per plane the two layouts store the same order.
    let block = x.channelBlock
    var bs = s
    bs.planes = s.planes / block
    func forward(_ o: UnsafeMutablePointer<Float>, _ argmax: UnsafeMutablePointer<Int32>?) {
        if block > 1 {
            x.withUnsafeStorage { maxPoolForwardBlocked(out: o, argmax: argmax, inp: $0, bs, block: block) }
        } else {
            x.withUnsafePointer { maxPoolForward(out: o, argmax: argmax, inp: $0, s) }
        }
    }
    var out = Tensor(uninitializedShape: outShape, channelBlock: outShape[2] * outShape[3] > 1 ? block : 1)
    guard GradientTape.isRecording(x) else {
        out.withUnsafeMutableStorage { forward($0, nil) }
        return out
    }
    let argmax = UnsafeMutablePointer<Int32>.allocate(capacity: max(out.count, 1))
    out.withUnsafeMutableStorage { forward($0, argmax) }
    let indices = ArgmaxBox(argmax)
    let inShape = x.shape, outBlock = out.channelBlock
    GradientTape.record(&out, [x]) { g, _ in
        var dx = Tensor(uninitializedShape: inShape, channelBlock: block)
        if block > 1 {
            let g = g.inLayout(outBlock)
            dx.withUnsafeMutableStorage { d in g.withUnsafeStorage { maxPoolBackwardBlocked(dinp: d, dout: $0, argmax: indices.pointer, bs, block: block) } }
        } else {
            dx.withUnsafeMutablePointer { d in g.withUnsafePointer { maxPoolBackward(dinp: d, dout: $0, argmax: indices.pointer, s) } }
        }
        return [dx]
    }
    return out
}

/// Owns the argmax indices a max-pool keeps for its backward pass.
final class ArgmaxBox {
    let pointer: UnsafeMutablePointer<Int32>
    init(_ p: UnsafeMutablePointer<Int32>) { pointer = p }
    deinit { pointer.deallocate() }
}

/// Average pooling of `x` [N, C, H, W] → [N, C, Ho, Wo] (output size as `maxPool2d`). With
/// `countIncludePad` the divisor counts zero padding (PyTorch's default), else only real cells.
public func avgPool2d(_ x: Tensor, kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0),
                      ceilMode: Bool = false, countIncludePad: Bool = true) -> Tensor {
    let s = poolShape("avgPool2d", x, kernel, stride ?? kernel, padding, ceilMode)
    // A channel-blocked input is pooled in its layout, B channels at a time. A 1×1 output is
    // labelled NCHW: with one position per plane the two layouts store the same order.
    let block = x.channelBlock
    var bs = s
    bs.planes = s.planes / block
    var out = Tensor(uninitializedShape: [x.shape[0], x.shape[1], s.ho, s.wo], channelBlock: s.ho * s.wo > 1 ? block : 1)
    out.withUnsafeMutableStorage { o in x.withUnsafeStorage {
        if block > 1 {
            avgPoolForwardBlocked(out: o, inp: $0, bs, block: block, countIncludePad: countIncludePad)
        } else {
            avgPoolForward(out: o, inp: $0, s, countIncludePad: countIncludePad)
        }
    } }
    let inShape = x.shape, outBlock = out.channelBlock
    GradientTape.record(&out, [x]) { g, _ in
        let g = g.inLayout(outBlock)
        var dx = Tensor(uninitializedShape: inShape, channelBlock: block)
        dx.withUnsafeMutableStorage { d in g.withUnsafeStorage {
            if block > 1 {
                avgPoolBackwardBlocked(dinp: d, dout: $0, bs, block: block, countIncludePad: countIncludePad)
            } else {
                avgPoolBackward(dinp: d, dout: $0, s, countIncludePad: countIncludePad)
            }
        } }
        return [dx]
    }
    return out
}

/// Global average pool: [N, C, H, W] → [N, C, 1, 1] (the SE squeeze z_c = mean of u_c).
public func globalAvgPool2d(_ x: Tensor) -> Tensor {
    if x.rank != 4 { shapeFailure("globalAvgPool2d", "input \(x.shape) must be 4-D (N×C×H×W)") }
    return x.mean(axes: [2, 3], keepDims: true)
}

/// Global max pool: [N, C, H, W] → [N, C, 1, 1].
public func globalMaxPool2d(_ x: Tensor) -> Tensor {
    if x.rank != 4 { shapeFailure("globalMaxPool2d", "input \(x.shape) must be 4-D (N×C×H×W)") }
    let (h, w) = (x.shape[2], x.shape[3])
    let s = Pool2DShape(planes: x.shape[0] * x.shape[1], h: 1, w: h * w, kh: 1, kw: h * w, sh: 1, sw: h * w)
    return maxPool(x, s, outShape: [x.shape[0], x.shape[1], 1, 1])
}

/// Adaptive average pool of [N, C, H, W] to [N, C, oh, ow] as PyTorch's `adaptive_avg_pool2d`:
/// output cell i averages rows ⌊i·H/oh⌋ ..< ⌈(i+1)·H/oh⌉ (likewise columns). VGG's classifier
/// input (7×7) at any input size.
public func adaptiveAvgPool2d(_ x: Tensor, outputSize: (Int, Int)) -> Tensor {
    if x.rank != 4 || outputSize.0 < 1 || outputSize.1 < 1 {
        shapeFailure("adaptiveAvgPool2d", "input \(x.shape) must be 4-D and the output size \(outputSize) positive")
    }
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (oh, ow) = outputSize
    var out = Tensor(uninitializedShape: [n, c, oh, ow])
    out.withUnsafeMutablePointer { o in x.withUnsafePointer { adaptiveAvgPoolForward(out: o, inp: $0, planes: n * c, h: h, w: w, oh: oh, ow: ow) } }
    GradientTape.record(&out, [x]) { g, _ in
        var dx = Tensor(uninitializedShape: [n, c, h, w])
        dx.withUnsafeMutablePointer { d in g.withUnsafePointer { adaptiveAvgPoolBackward(dinp: d, dout: $0, planes: n * c, h: h, w: w, oh: oh, ow: ow) } }
        return [dx]
    }
    return out
}
