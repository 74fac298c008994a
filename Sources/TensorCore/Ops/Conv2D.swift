// 2-D convolution as PyTorch's `F.conv2d` (cross-correlation), on oneDNN.

import Kernels

/// Convolution of `x` [N, C, H, W] with `weight` [O, C/groups, kh, kw] plus optional `bias` [O].
///
/// Output [N, O, Ho, Wo] with `Ho = ⌊(H + 2·padding.0 − dilation.0·(kh − 1) − 1) / stride.0⌋ + 1`
/// (same for W). `groups` splits channels into independent convolutions (ResNeXt's cardinality;
/// `groups == C == O` is depthwise). Gradients: input, weight and bias, each on oneDNN.
///
/// `fusedReLU` returns relu(conv(x)) computed in the convolution's epilogue (the inference
/// engine's fusion). It applies only when nothing records gradients; otherwise the convolution
/// and the ReLU run as two recorded ops.
///
/// `constantWeights`: the caller promises that `weight` never changes while that object lives
/// (the inference engine's folded weights); the convolution then keeps its weights converted to
/// the kernel's layout there instead of converting them at every call. Ignored when gradients
/// are recorded.
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1),
                   padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1,
                   fusedReLU: Bool, constantWeights: ConstantWeights? = nil) -> Tensor {
    guard !GradientTape.isRecording(x, weight, bias ?? weight) else {
        let y = conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
        return fusedReLU ? relu(y) : y
    }
    return convolve(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups,
                    relu: fusedReLU, constantWeights: constantWeights)
}

/// Convolution weights converted once and kept (see `conv2d(_:weight:…:constantWeights:)`).
public typealias ConstantWeights = Kernels.ConstantWeights

public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1),
                   padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1) -> Tensor {
    convolve(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups, relu: false)
}

/// The geometry of conv(x, weight), after checking the shapes (the messages name `op` and both
/// shapes).
private func convolutionShape(_ op: String, _ x: Tensor, weight: Tensor, bias: Tensor?, stride: (Int, Int), padding: (Int, Int),
                              dilation: (Int, Int), groups: Int) -> Conv2DShape {
    if x.rank != 4 || weight.rank != 4 {
        shapeFailure(op, "input \(x.shape) and weight \(weight.shape) must both be 4-D (N×C×H×W, O×C/groups×kh×kw)")
    }
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, cg, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
    if groups < 1 || c % groups != 0 || o % groups != 0 || cg * groups != c {
        shapeFailure(op, "input \(x.shape) has \(c) channels but weight \(weight.shape) expects \(cg) per group × \(groups) groups")
    }
    if let b = bias, b.shape != [o] {
        shapeFailure(op, "bias \(b.shape) does not match weight \(weight.shape) (expected [\(o)])")
    }
    let s = Conv2DShape(n: n, c: c, h: h, w: w, o: o, kh: kh, kw: kw, sh: stride.0, sw: stride.1,
                        ph: padding.0, pw: padding.1, dh: dilation.0, dw: dilation.1, groups: groups)
    if s.ho < 1 || s.wo < 1 {
        shapeFailure(op, "input \(x.shape) is smaller than the dilated kernel of weight \(weight.shape) with padding \(padding)")
    }
    return s
}

/// The layout a convolution writes: channel-blocked when the input was, or when the input is an
/// image (≤ 4 channels: the network's stem), so that activations stay blocked from layer to layer
/// — for a map (not N×O×1×1) with whole blocks of output channels. (Grouped convolutions whose
/// groups are narrower than a block have no blocked oneDNN kernel: their plan reorders at its
/// edges, and the layers around them stay blocked.)
private func convolutionOutputBlock(_ x: Tensor, _ s: Conv2DShape) -> Int {
    let block = ActivationLayout.current == .nchw ? 1 : activationBlock
    return block > 1 && s.o % block == 0 && s.ho * s.wo > 1 && (x.channelBlock > 1 || s.c <= 4) ? block : 1
}

private func convolve(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: (Int, Int), padding: (Int, Int),
                      dilation: (Int, Int), groups: Int, relu: Bool,
                      constantWeights: ConstantWeights? = nil) -> Tensor {
    let s = convolutionShape("conv2d", x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation,
                             groups: groups)
    let (n, c, h, w, o) = (s.n, s.c, s.h, s.w, s.o)
    // Batch-invariant mode: one image at a time (oneDNN's kernel choice can depend on N).
    let invariant = batchInvariantReductions && n > 1
    var one = s
    one.n = 1
    let (inStride, outStride) = (c * h * w, o * s.ho * s.wo)
    // Layouts: a channel-blocked input is read as it is (see `convolutionOutputBlock`).
    let inBlock = x.channelBlock
    let outBlock = convolutionOutputBlock(x, s)
    var out = Tensor(uninitializedShape: [n, o, s.ho, s.wo], channelBlock: outBlock)
    out.withUnsafeMutableStorage { po in
        x.withUnsafeStorage { px in
            weight.withUnsafePointer { pw in
                optionalPointer(bias) { pb in
                    if invariant {
                        for i in 0..<n {
                            conv2dForward(out: po + i * outStride, inp: px + i * inStride, weight: pw, bias: pb, relu: relu, one,
                                          inpBlock: inBlock, outBlock: outBlock, constantWeights: constantWeights)
                        }
                    } else {
                        conv2dForward(out: po, inp: px, weight: pw, bias: pb, relu: relu, s, inpBlock: inBlock, outBlock: outBlock,
                                      constantWeights: constantWeights)
                    }
                }
            }
        }
    }
    if relu {
        out.isRectified = true
        return out
    }
    var inputs = [x, weight]
    if let b = bias { inputs.append(b) }
    let (xs, ws) = (x.detached, weight.detached)
    let bs = bias?.detached
    GradientTape.record(&out, inputs) { g, need in
        var dx: Tensor?, dw: Tensor?, db: Tensor?
        // The gradient arrives in whatever layout its producer wrote; it is read as it is when
        // that is NCHW or this convolution's own block (gradients leave in the input's layout).
        let g = g.channelBlock == 1 || g.channelBlock == outBlock ? g : g.inLayout(1)
        let gBlock = g.channelBlock
        if need[0] {
            var t = Tensor(uninitializedShape: xs.shape, channelBlock: inBlock)
            t.withUnsafeMutableStorage { d in g.withUnsafeStorage { pg in ws.withUnsafePointer { pw in
                if invariant {
                    for i in 0..<n {
                        conv2dBackwardData(dinp: d + i * inStride, dout: pg + i * outStride, weight: pw, one,
                                           inpBlock: inBlock, outBlock: gBlock)
                    }
                } else {
                    conv2dBackwardData(dinp: d, dout: pg, weight: pw, s, inpBlock: inBlock, outBlock: gBlock)
                }
            } } }
            dx = t
        }
        if invariant && (need[1] || (need.count > 2 && need[2])) {
            // Per-image gradients summed in float64, in image order; the sums are published for
            // data-parallel reduction (BatchInvariance.swift).
            var sw = [Double](repeating: 0, count: ws.count), sb = [Double](repeating: 0, count: bs == nil ? 0 : o)
            var tw = Tensor(uninitializedShape: ws.shape)
            var tb: Tensor? = bs == nil ? nil : Tensor(uninitializedShape: [o])
            tw.withUnsafeMutablePointer { pdw in g.withUnsafeStorage { pg in xs.withUnsafeStorage { px in
                for i in 0..<n {
                    let (inp, dout) = (px + i * inStride, pg + i * outStride)
                    if tb != nil {
                        tb!.withUnsafeMutablePointer { pdb in
                            conv2dBackwardWeights(dweight: pdw, dbias: pdb, inp: inp, dout: dout, one, inpBlock: inBlock, outBlock: gBlock)
                            accumulateDouble(&sb, pdb, n: o)
                        }
                    } else {
                        conv2dBackwardWeights(dweight: pdw, dbias: nil, inp: inp, dout: dout, one, inpBlock: inBlock, outBlock: gBlock)
                    }
                    accumulateDouble(&sw, pdw, n: sw.count)
                }
            } } }
            dw = ExactGradientSums.gradient(sw, for: ws)
            if let bs { db = ExactGradientSums.gradient(sb, for: bs) }
        } else if need[1] || (need.count > 2 && need[2]) {
            var t = Tensor(uninitializedShape: ws.shape)
            var tb = need.count > 2 ? Tensor(uninitializedShape: [o]) : nil
            t.withUnsafeMutablePointer { d in
                g.withUnsafeStorage { pg in
                    xs.withUnsafeStorage { px in
                        if tb != nil {
                            tb!.withUnsafeMutablePointer {
                                conv2dBackwardWeights(dweight: d, dbias: $0, inp: px, dout: pg, s, inpBlock: inBlock, outBlock: gBlock)
                            }
                        } else {
                            conv2dBackwardWeights(dweight: d, dbias: nil, inp: px, dout: pg, s, inpBlock: inBlock, outBlock: gBlock)
                        }
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

/// relu(scale ⊙ (conv(x) + bias) + residual) in one convolution pass, the end of an SE residual
/// block (the inference engine's fusion): `scale` is N×O×1×1 (the block's excitations), `residual`
/// has the output's shape and is read in the layout the convolution writes. Forward only, and only
/// outside gradient recording. Returns nil where it does not apply — gradients recorded, a
/// residual in another layout, or no fast oneDNN kernel for the chain — and the caller composes the
/// ops instead.
public func conv2dScaleAddReLU(_ x: Tensor, weight: Tensor, bias: Tensor?, scale: Tensor, residual: Tensor,
                               stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1),
                               groups: Int = 1, constantWeights: ConstantWeights? = nil) -> Tensor? {
    let op = "conv2dScaleAddReLU"
    let s = convolutionShape(op, x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
    if scale.shape != [s.n, s.o, 1, 1] {
        shapeFailure(op, "scale \(scale.shape) does not match the output [\(s.n), \(s.o), \(s.ho), \(s.wo)] (expected [\(s.n), \(s.o), 1, 1])")
    }
    return convolutionWithResidual(op, x, weight: weight, bias: bias, residual: residual, s) { po, px, pw, pb, pr, outBlock in
        guard scale.channelBlock == 1, !GradientTape.isRecording(scale) else { return false }
        return scale.withUnsafeStorage { ps in
            conv2dForwardScaleAddReLU(out: po, inp: px, weight: pw, bias: pb, scale: ps, residual: pr, s,
                                      inpBlock: x.channelBlock, outBlock: outBlock, constantWeights: constantWeights)
        }
    }
}

/// relu(conv(x) + bias + residual) in one convolution pass, the end of a plain residual block
/// (the inference engine's fusion): `residual` has the output's shape and is read in the layout
/// the convolution writes. Forward only, and only outside gradient recording. Returns nil where
/// it does not apply — gradients recorded, a residual in another layout, or no fast oneDNN
/// kernel for the chain — and the caller composes the ops instead.
public func conv2dAddReLU(_ x: Tensor, weight: Tensor, bias: Tensor?, residual: Tensor,
                          stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1),
                          groups: Int = 1, constantWeights: ConstantWeights? = nil) -> Tensor? {
    let op = "conv2dAddReLU"
    let s = convolutionShape(op, x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
    return convolutionWithResidual(op, x, weight: weight, bias: bias, residual: residual, s) { po, px, pw, pb, pr, outBlock in
        conv2dForwardAddReLU(out: po, inp: px, weight: pw, bias: pb, residual: pr, s,
                             inpBlock: x.channelBlock, outBlock: outBlock, constantWeights: constantWeights)
    }
}

/// The frame of the residual blocks' end convolutions (`conv2dAddReLU`, `conv2dScaleAddReLU`):
/// checks `residual` against the output of `s` (the message names `op` and both shapes), returns
/// nil under gradient recording or when `residual` is not in the layout the convolution writes,
/// and otherwise runs `kernel` on the output, input, weight, bias and residual buffers and the
/// output's channel block (nil when the kernel wrote nothing). The output is rectified.
private func convolutionWithResidual(
    _ op: String, _ x: Tensor, weight: Tensor, bias: Tensor?, residual: Tensor, _ s: Conv2DShape,
    _ kernel: (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>?,
               UnsafePointer<Float>, Int) -> Bool
) -> Tensor? {
    if residual.shape != [s.n, s.o, s.ho, s.wo] {
        shapeFailure(op, "residual \(residual.shape) does not match the output [\(s.n), \(s.o), \(s.ho), \(s.wo)]")
    }
    guard !GradientTape.isRecording(x, weight, bias ?? weight, residual) else { return nil }
    let outBlock = convolutionOutputBlock(x, s)
    guard residual.channelBlock == outBlock else { return nil }
    var out = Tensor(uninitializedShape: [s.n, s.o, s.ho, s.wo], channelBlock: outBlock)
    let done = out.withUnsafeMutableStorage { po in
        x.withUnsafeStorage { px in
            weight.withUnsafePointer { pw in
                optionalPointer(bias) { pb in
                    residual.withUnsafeStorage { pr in kernel(po, px, pw, pb, pr, outBlock) }
                }
            }
        }
    }
    guard done else { return nil }
    out.isRectified = true
    return out
}

/// Where convolutions leave their activations (see `Tensor.channelBlock`).
public enum ActivationLayout: Sendable {
    /// oneDNN's channel-blocked layout from the stem on, when the machine has blocked kernels
    /// (the default; SENET_ACTIVATION_LAYOUT=nchw makes `.nchw` the default for the process).
    case blocked
    /// NCHW everywhere (the reference path, and what `.blocked` computes up to rounding).
    case nchw

    @TaskLocal static var current: ActivationLayout = .blocked

    /// Runs `body` with convolutions keeping activations in `layout` (tests and comparisons).
    public static func with<R>(_ layout: ActivationLayout, _ body: () throws -> R) rethrows -> R {
        try $current.withValue(layout, operation: body)
    }
}

/// How convolution implementations are chosen (see `Kernels.ConvSelection`): `.autotune` times
/// the candidates (fastest), `.deterministic` uses a fixed rule (bit-identical results from run to
/// run, which training needs to resume exactly).
public typealias ConvSelection = Kernels.ConvSelection

/// Sets how convolution implementations are chosen for shapes not seen yet.
public func setConvolutionSelection(_ mode: ConvSelection) { Kernels.setConvSelection(mode) }
