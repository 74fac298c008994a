// Every fast kernel against its slow twin in Sources/Kernels/Reference on seeded random inputs.
// Outputs start as NaN so an element a kernel forgets to write fails the comparison.
// Tolerances: rtol 1e-4 / atol 1e-5 where the fast kernel accumulates long sums in float32
// (conv, linear, batch norm, plane reductions); 1e-5 / 1e-6 elsewhere.

import Kernels
import Testing
import _TestSupport

/// n values uniform in [offset − scale, offset + scale) from a 64-bit LCG (Knuth's MMIX constants).
func randoms(_ n: Int, seed: UInt64, scale: Float = 1, offset: Float = 0) -> [Float] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<n).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return offset + scale * (Float(state >> 40) / Float(1 << 24) * 2 - 1)
    }
}

func nans(_ n: Int) -> [Float] { [Float](repeating: .nan, count: n) }

@Suite struct ReferenceTwinTests {
    // MARK: Convolution

    static let convShapes: [Conv2DShape] = [
        .init(n: 2, c: 32, h: 14, w: 14, o: 32, kh: 3, kw: 3, ph: 1, pw: 1),
        .init(n: 2, c: 64, h: 14, w: 14, o: 64, kh: 3, kw: 3, ph: 1, pw: 1),
        .init(n: 2, c: 64, h: 14, w: 14, o: 64, kh: 1, kw: 1),
        .init(n: 2, c: 32, h: 14, w: 14, o: 64, kh: 3, kw: 3, ph: 1, pw: 1, groups: 4),
        .init(n: 2, c: 64, h: 14, w: 14, o: 64, kh: 3, kw: 3, ph: 1, pw: 1, groups: 32),       // ResNeXt 32×2d
        .init(n: 2, c: 32, h: 14, w: 14, o: 32, kh: 3, kw: 3, ph: 1, pw: 1, groups: 32),       // depthwise
        .init(n: 2, c: 16, h: 14, w: 14, o: 32, kh: 3, kw: 3, ph: 1, pw: 1, groups: 16),       // depthwise ×2
        .init(n: 2, c: 16, h: 15, w: 13, o: 32, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1),     // stride 2, odd
        .init(n: 2, c: 64, h: 14, w: 14, o: 64, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1, groups: 32),
        .init(n: 1, c: 16, h: 12, w: 12, o: 16, kh: 3, kw: 3, ph: 2, pw: 2, dh: 2, dw: 2),     // dilation 2
        .init(n: 2, c: 3, h: 32, w: 32, o: 16, kh: 7, kw: 7, sh: 2, sw: 2, ph: 3, pw: 3),      // ResNet stem
        .init(n: 2, c: 32, h: 14, w: 14, o: 64, kh: 1, kw: 1, sh: 2, sw: 2),                   // downsample
        .init(n: 1, c: 8, h: 9, w: 7, o: 12, kh: 3, kw: 1, sh: 1, sw: 2, ph: 1, pw: 0),        // asymmetric
        .init(n: 3, c: 6, h: 9, w: 8, o: 6, kh: 3, kw: 3, sh: 2, sw: 2, ph: 2, pw: 1, dh: 2, dw: 2, groups: 3),
    ]

    @Test(arguments: convShapes)
    func conv2d(_ s: Conv2DShape) {
        let x = randoms(s.inputCount, seed: 1)
        let w = randoms(s.weightCount, seed: 2, scale: 1 / Float(s.c / s.groups * s.kh * s.kw).squareRoot())
        let b = randoms(s.o, seed: 3), dy = randoms(s.outputCount, seed: 4)
        let label = "\(s)"

        var y = nans(s.outputCount), yb = nans(s.outputCount)
        conv2dForward(out: &y, inp: x, weight: w, bias: nil, s)
        conv2dForward(out: &yb, inp: x, weight: w, bias: b, s)
        /// The tolerance for the plan the autotuner picked (`convolutionAtol`).
        func atol(_ pass: ConvPass, _ ref: [Float], bias: Bool = false) -> Float {
            convolutionAtol(conv2dImplementation(s, pass: pass, bias: bias) ?? "", expected: ref, atol: 1e-5)
        }
        let refY = Reference.conv2dForward(inp: x, weight: w, bias: nil, s)
        let refYb = Reference.conv2dForward(inp: x, weight: w, bias: b, s)
        expectClose(y, refY, rtol: 1e-4, atol: atol(.forward, refY), "\(label) forward")
        expectClose(yb, refYb, rtol: 1e-4, atol: atol(.forward, refYb, bias: true), "\(label) forward+bias")

        var dx = nans(s.inputCount)
        conv2dBackwardData(dinp: &dx, dout: dy, weight: w, s)
        let refDx = Reference.conv2dBackwardData(dout: dy, weight: w, s)
        expectClose(dx, refDx, rtol: 1e-4, atol: atol(.backwardData, refDx), "\(label) backwardData")

        let ref = Reference.conv2dBackwardWeights(inp: x, dout: dy, s)
        var dw = nans(s.weightCount), dw2 = nans(s.weightCount), db = nans(s.o)
        conv2dBackwardWeights(dweight: &dw, dbias: &db, inp: x, dout: dy, s)
        conv2dBackwardWeights(dweight: &dw2, dbias: nil, inp: x, dout: dy, s)
        expectClose(dw, ref.dweight, rtol: 1e-4, atol: atol(.backwardWeights, ref.dweight, bias: true), "\(label) dweight")
        expectClose(dw2, ref.dweight, rtol: 1e-4, atol: atol(.backwardWeights, ref.dweight), "\(label) dweight (no bias)")
        expectClose(db, ref.dbias, rtol: 1e-4, atol: 1e-5, "\(label) dbias")
    }

    /// The SE block's end in the convolution's epilogue: relu(scale[n, o] · (conv + bias) +
    /// residual), on plain and channel-blocked activations, against the reference convolution
    /// followed by the three elementwise steps. The machine's own block must have a fast kernel.
    /// On blocked 1×1 maps of at least 4·C pixels (the first three shapes) the scale goes into
    /// each image's weights instead of a post-op: that path must have run there, with weights
    /// converted per call and, twice, with converted weights kept in a `ConstantWeights`.
    @Test(arguments: [Conv2DShape(n: 1, c: 32, h: 14, w: 14, o: 64, kh: 1, kw: 1),
                      Conv2DShape(n: 2, c: 16, h: 12, w: 12, o: 48, kh: 1, kw: 1),
                      Conv2DShape(n: 3, c: 32, h: 16, w: 9, o: 64, kh: 1, kw: 1),
                      Conv2DShape(n: 3, c: 16, h: 9, w: 7, o: 32, kh: 1, kw: 1),
                      Conv2DShape(n: 2, c: 16, h: 10, w: 10, o: 32, kh: 3, kw: 3, ph: 1, pw: 1)])
    func convScaleAddReLU(_ s: Conv2DShape) {
        let x = randoms(s.inputCount, seed: 41)
        let w = randoms(s.weightCount, seed: 42, scale: 1 / Float(s.c * s.kh * s.kw).squareRoot())
        let b = randoms(s.o, seed: 43), scale = randoms(s.n * s.o, seed: 44, scale: 0.5, offset: 0.5)
        let r = randoms(s.outputCount, seed: 45)
        let plane = s.ho * s.wo
        for bias in [true, false] {
            let conv = Reference.conv2dForward(inp: x, weight: w, bias: bias ? b : nil, s)
            let expected = conv.indices.map { i in max(scale[i / plane] * conv[i] + r[i], 0) }
            for block in Set([1, 8, 16, activationBlock]) {
                let label = "\(s) block \(block) bias \(bias)"
                func blocked(_ v: [Float], _ c: Int, _ p: Int) -> [Float] {
                    block == 1 ? v : Reference.channelBlocked(v, n: s.n, c: c, s: p, block: block)
                }
                let constant = ConstantWeights()
                for kept in [nil, constant, constant] {
                    var y = nans(s.outputCount)
                    let ran = conv2dForwardScaleAddReLU(out: &y, inp: blocked(x, s.c, s.h * s.w), weight: w, bias: bias ? b : nil,
                                                        scale: scale, residual: blocked(r, s.o, plane), s,
                                                        inpBlock: block, outBlock: block, constantWeights: kept)
                    if block == activationBlock && activationBlock > 1 && s.kh == 1 {
                        #expect(ran, "\(label): no fast kernel on the machine's own layout")
                    }
                    guard ran else { continue }
                    if block > 1 && s.kh == 1 && s.ho * s.wo >= 4 * s.c {
                        let impl = conv2dScaleAddReLUImplementation(s, bias: bias, inpBlock: block, outBlock: block,
                                                                    constantWeights: kept != nil) ?? "none"
                        #expect(impl.hasSuffix("(weights scaled per image)"), "\(label): ran \(impl)")
                    }
                    let out = block == 1 ? y : Reference.fromChannelBlocked(y, n: s.n, c: s.o, s: plane, block: block)
                    expectClose(out, expected, rtol: 1e-4, atol: 1e-5, "\(label) weights kept \(kept != nil)")
                }
            }
        }
    }

    // MARK: Linear

    @Test(arguments: [(8, 300, 70), (1, 2048, 10), (32, 64, 1000), (3, 5, 7)])
    func linear(_ dims: (Int, Int, Int)) {
        let (b, i, o) = dims
        let x = randoms(b * i, seed: 5), w = randoms(o * i, seed: 6, scale: 1 / Float(i).squareRoot())
        let bias = randoms(o, seed: 7), dy = randoms(b * o, seed: 8)
        var y = nans(b * o), yb = nans(b * o), dx = nans(b * i), dw = nans(o * i), db = nans(o)
        linearForward(out: &y, inp: x, weight: w, bias: nil, b: b, i: i, o: o)
        linearForward(out: &yb, inp: x, weight: w, bias: bias, b: b, i: i, o: o)
        linearBackwardData(dinp: &dx, dout: dy, weight: w, b: b, i: i, o: o)
        linearBackwardWeights(dweight: &dw, dbias: &db, inp: x, dout: dy, b: b, i: i, o: o)
        let ref = Reference.linearBackwardWeights(inp: x, dout: dy, b: b, i: i, o: o)
        let label = "linear B\(b) I\(i) O\(o)"
        expectClose(y, Reference.linearForward(inp: x, weight: w, bias: nil, b: b, i: i, o: o), rtol: 1e-4, atol: 1e-5, label)
        expectClose(yb, Reference.linearForward(inp: x, weight: w, bias: bias, b: b, i: i, o: o), rtol: 1e-4, atol: 1e-5, label)
        expectClose(dx, Reference.linearBackwardData(dout: dy, weight: w, b: b, i: i, o: o), rtol: 1e-4, atol: 1e-5, label)
        expectClose(dw, ref.dweight, rtol: 1e-4, atol: 1e-5, "\(label) dweight")
        expectClose(db, ref.dbias, rtol: 1e-4, atol: 1e-5, "\(label) dbias")
    }

    /// The matrix-vector product of batch-1 FCs (an SE block's, and 1×1 convolutions on 1×1
    /// maps) against the Double twin: rows split between the threads (2048×128), serial ones,
    /// columns that leave an 8-lane and a scalar tail (19, 27), bias and ReLU each on and off.
    @Test(arguments: [(2048, 128), (37, 19), (16, 256), (300, 27)])
    func gemvMatchesTwin(_ dims: (Int, Int)) {
        let (o, i) = dims
        let x = randoms(i, seed: 41), w = randoms(o * i, seed: 42, scale: 1 / Float(i).squareRoot())
        let bias = randoms(o, seed: 43)
        for (withBias, relu) in [(false, false), (true, false), (true, true), (false, true)] {
            var y = nans(o)
            bias.withUnsafeBufferPointer { bp in
                gemv(rows: o, cols: i, w: w, x: x, bias: withBias ? bp.baseAddress : nil, relu: relu, y: &y)
            }
            var ref = Reference.linearForward(inp: x, weight: w, bias: withBias ? bias : nil, b: 1, i: i, o: o)
            if relu { ref = ref.map { max($0, 0) } }
            expectClose(y, ref, rtol: 1e-5, atol: 1e-6, "gemv O\(o) I\(i) bias \(withBias) relu \(relu)")
        }
    }

    // MARK: Batch norm

    @Test(arguments: [(4, 8, 49, true), (8, 16, 13, true), (2, 3, 1, true), (1, 5, 64, false), (3, 4, 3136, true)])
    func batchNorm(_ dims: (Int, Int, Int, Bool)) {
        let (n, c, s, affine) = dims
        let count = n * c * s, label = "batchNorm N\(n) C\(c) S\(s) affine \(affine)"
        let x = randoms(count, seed: 9, scale: 2, offset: 3), dy = randoms(count, seed: 10)
        let gamma: [Float]? = affine ? randoms(c, seed: 11, scale: 0.5, offset: 1) : nil
        let beta: [Float]? = affine ? randoms(c, seed: 12) : nil
        let rm0 = randoms(c, seed: 13), rv0 = randoms(c, seed: 14, scale: 0.5, offset: 1)
        let tol: (rtol: Float, atol: Float) = (1e-4, 1e-5)

        // Training forward and the running-statistics update.
        var out = nans(count), mean = nans(c), invStd = nans(c), rm = rm0, rv = rv0
        var refRM = rm0, refRV = rv0
        let ref = Reference.batchNormTrainForward(runningMean: &refRM, runningVar: &refRV, inp: x, weight: gamma,
                                                  bias: beta, n: n, c: c, s: s, eps: 1e-5, momentum: 0.1)
        if let gamma, let beta {
            batchNormTrainForward(out: &out, saveMean: &mean, saveInvStd: &invStd, runningMean: &rm, runningVar: &rv,
                                  inp: x, weight: gamma, bias: beta, n: n, c: c, s: s, eps: 1e-5, momentum: 0.1)
        } else {
            batchNormTrainForward(out: &out, saveMean: &mean, saveInvStd: &invStd, runningMean: &rm, runningVar: &rv,
                                  inp: x, weight: nil, bias: nil, n: n, c: c, s: s, eps: 1e-5, momentum: 0.1)
        }
        expectClose(out, ref.out, rtol: tol.rtol, atol: tol.atol, "\(label) train out")
        expectClose(mean, ref.mean, rtol: tol.rtol, atol: tol.atol, "\(label) mean")
        expectClose(invStd, ref.invStd, rtol: tol.rtol, atol: tol.atol, "\(label) invStd")
        expectClose(rm, refRM, rtol: tol.rtol, atol: tol.atol, "\(label) running mean")
        expectClose(rv, refRV, rtol: tol.rtol, atol: tol.atol, "\(label) running var")

        // Evaluation forward on the initial running statistics.
        var eval = nans(count)
        batchNormEvalForward(out: &eval, inp: x, runningMean: rm0, runningVar: rv0, weight: gamma, bias: beta,
                             n: n, c: c, s: s, eps: 1e-5)
        expectClose(eval, Reference.batchNormEvalForward(inp: x, runningMean: rm0, runningVar: rv0, weight: gamma,
                                                         bias: beta, n: n, c: c, s: s, eps: 1e-5),
                    rtol: tol.rtol, atol: tol.atol, "\(label) eval out")

        // Backward in both modes, each side with the statistics its own forward produced.
        let evalInvStd = rv0.map { 1 / ($0 + 1e-5).squareRoot() }
        for (training, mu, istd, refMu, refIstd) in [(true, mean, invStd, ref.mean, ref.invStd),
                                                     (false, rm0, evalInvStd, rm0, evalInvStd)] {
            var dx = nans(count), dg = nans(c), db = nans(c)
            batchNormBackward(dinp: &dx, dweight: &dg, dbias: &db, dout: dy, inp: x, mean: mu, invStd: istd,
                              weight: gamma, n: n, c: c, s: s, training: training)
            let r = Reference.batchNormBackward(dout: dy, inp: x, mean: refMu, invStd: refIstd, weight: gamma,
                                                n: n, c: c, s: s, training: training)
            expectClose(dx, r.dinp, rtol: tol.rtol, atol: tol.atol, "\(label) training \(training) dinp")
            expectClose(dg, r.dweight, rtol: tol.rtol, atol: tol.atol, "\(label) training \(training) dweight")
            expectClose(db, r.dbias, rtol: tol.rtol, atol: tol.atol, "\(label) training \(training) dbias")
        }

        // BatchNorm + ReLU fused: the reference batch norm followed by the reference ReLU, and
        // backward as the ReLU's backward (dout zeroed where the output is not positive) then the
        // reference batch-norm backward.
        var fused = nans(count), fm = nans(c), fi = nans(c), frm = rm0, frv = rv0
        batchNormTrainForward(out: &fused, saveMean: &fm, saveInvStd: &fi, runningMean: &frm, runningVar: &frv,
                              inp: x, weight: gamma, bias: beta, n: n, c: c, s: s, eps: 1e-5, momentum: 0.1, relu: true)
        let refRelu = Reference.reluForward(inp: ref.out)
        expectClose(fused, refRelu, rtol: tol.rtol, atol: tol.atol, "\(label) fused relu out")
        #expect(frm == rm && frv == rv, "\(label) fused relu running statistics")
        let maskedDy = Reference.reluBackward(dout: dy, out: refRelu)
        for training in [true, false] {
            let (mu, istd) = training ? (fm, fi) : (rm0, evalInvStd)
            var dx = nans(count), dg = nans(c), db = nans(c)
            batchNormBackward(dinp: &dx, dweight: &dg, dbias: &db, dout: dy, inp: x, mean: mu, invStd: istd,
                              weight: gamma, n: n, c: c, s: s, training: training, reluOutput: fused)
            let r = Reference.batchNormBackward(dout: maskedDy, inp: x, mean: training ? ref.mean : rm0,
                                                invStd: training ? ref.invStd : evalInvStd, weight: gamma,
                                                n: n, c: c, s: s, training: training)
            expectClose(dx, r.dinp, rtol: tol.rtol, atol: tol.atol, "\(label) fused relu training \(training) dinp")
            expectClose(dg, r.dweight, rtol: tol.rtol, atol: tol.atol, "\(label) fused relu training \(training) dweight")
            expectClose(db, r.dbias, rtol: tol.rtol, atol: tol.atol, "\(label) fused relu training \(training) dbias")
        }
    }

    // MARK: Pooling

    /// (H, k, s, p, ceil_mode) → PyTorch's output size: ⌈(H + 2p − k)/s⌉ + 1 with ceil_mode, less one
    /// when (out − 1)·s ≥ H + p (a last window starting in the padding is dropped).
    @Test(arguments: [(6, 3, 2, 1, true, 4), (6, 3, 2, 1, false, 3),
                      (5, 3, 3, 1, true, 2),     // windows start at −1, 2, 5: the one at 5 = H is dropped
                      (5, 2, 2, 1, true, 3),     // likewise (−1, 1, 3, [5])
                      (7, 2, 2, 0, true, 4),     // the last window hangs past the input but starts inside
                      (112, 3, 2, 1, false, 56), (112, 3, 2, 0, true, 56), (56, 3, 2, 0, true, 28),
                      (7, 3, 2, 0, true, 3), (8, 3, 2, 0, true, 4), (7, 7, 1, 0, false, 1)])
    func poolOutputSize(_ c: (Int, Int, Int, Int, Bool, Int)) {
        let (h, k, s, p, ceil, expected) = c
        let shape = Pool2DShape(planes: 1, h: h, w: h, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p, ceilMode: ceil)
        #expect(shape.ho == expected, "H\(h) k\(k) s\(s) p\(p) ceil \(ceil)")
        #expect(shape.wo == expected)
        #expect(Reference.poolOutputSize(h, k: k, s: s, p: p, ceilMode: ceil) == expected)
    }

    static let poolShapes: [Pool2DShape] = [
        .init(planes: 3, h: 6, w: 6, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1, ceilMode: true),
        .init(planes: 3, h: 5, w: 5, kh: 3, kw: 3, sh: 3, sw: 3, ph: 1, pw: 1, ceilMode: true),
        .init(planes: 3, h: 5, w: 7, kh: 2, kw: 2, sh: 2, sw: 2, ph: 1, pw: 1, ceilMode: true),
        .init(planes: 2, h: 56, w: 56, kh: 3, kw: 3, sh: 2, sw: 2, ceilMode: true),
        .init(planes: 2, h: 7, w: 11, kh: 3, kw: 3, sh: 2, sw: 2, ceilMode: true),
        .init(planes: 2, h: 8, w: 9, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1, ceilMode: true),
        .init(planes: 2, h: 9, w: 10, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1),
        .init(planes: 2, h: 5, w: 8, kh: 2, kw: 3, sh: 1, sw: 2, ph: 1, pw: 1, ceilMode: true),
        .init(planes: 4, h: 7, w: 7, kh: 7, kw: 7, sh: 1, sw: 1),                           // global
    ]

    @Test(arguments: poolShapes)
    func pooling(_ s: Pool2DShape) {
        let label = "pool \(s)"
        let x = randoms(s.planes * s.h * s.w, seed: 15), dy = randoms(s.planes * s.ho * s.wo, seed: 16)
        #expect(s.ho == Reference.poolOutputSize(s.h, k: s.kh, s: s.sh, p: s.ph, ceilMode: s.ceilMode), "\(label)")
        #expect(s.wo == Reference.poolOutputSize(s.w, k: s.kw, s: s.sw, p: s.pw, ceilMode: s.ceilMode), "\(label)")

        var y = nans(dy.count), arg = [Int32](repeating: -7, count: dy.count), dx = nans(x.count)
        maxPoolForward(out: &y, argmax: &arg, inp: x, s)
        let ref = Reference.maxPoolForward(inp: x, s)
        #expect(y == ref.out, "\(label) max forward")
        #expect(arg == ref.argmax, "\(label) argmax")
        var yi = nans(dy.count)
        maxPoolForward(out: &yi, argmax: nil, inp: x, s)
        #expect(yi == ref.out, "\(label) max forward without argmax (inference)")
        maxPoolBackward(dinp: &dx, dout: dy, argmax: arg, s)
        expectClose(dx, Reference.maxPoolBackward(dout: dy, argmax: ref.argmax, s), "\(label) max backward")

        for include in [true, false] {
            var ya = nans(dy.count), dxa = nans(x.count)
            avgPoolForward(out: &ya, inp: x, s, countIncludePad: include)
            avgPoolBackward(dinp: &dxa, dout: dy, s, countIncludePad: include)
            expectClose(ya, Reference.avgPoolForward(inp: x, s, countIncludePad: include), "\(label) avg(\(include)) forward")
            expectClose(dxa, Reference.avgPoolBackward(dout: dy, s, countIncludePad: include), "\(label) avg(\(include)) backward")
        }
    }

    @Test(arguments: [(10, 9, 7, 7), (5, 6, 7, 7), (14, 14, 7, 7), (13, 8, 3, 5)])
    func adaptiveAvgPool(_ d: (Int, Int, Int, Int)) {
        let (h, w, oh, ow) = d
        let planes = 3
        let x = randoms(planes * h * w, seed: 41), dy = randoms(planes * oh * ow, seed: 42)
        var y = nans(planes * oh * ow), dx = nans(planes * h * w)
        adaptiveAvgPoolForward(out: &y, inp: x, planes: planes, h: h, w: w, oh: oh, ow: ow)
        adaptiveAvgPoolBackward(dinp: &dx, dout: dy, planes: planes, h: h, w: w, oh: oh, ow: ow)
        expectClose(y, Reference.adaptiveAvgPoolForward(inp: x, planes: planes, h: h, w: w, oh: oh, ow: ow), "adaptive \(d)")
        expectClose(dx, Reference.adaptiveAvgPoolBackward(dout: dy, planes: planes, h: h, w: w, oh: oh, ow: ow), "adaptive back \(d)")
    }

    @Test func globalMaxPool() {
        let x = randoms(6 * 49, seed: 17)
        var y = nans(6), arg = [Int32](repeating: -7, count: 6)
        globalMaxPoolForward(out: &y, argmax: &arg, inp: x, planes: 6, size: 49)
        let ref = Reference.maxPoolForward(inp: x, Pool2DShape(planes: 6, h: 7, w: 7, kh: 7, kw: 7, sh: 1, sw: 1))
        #expect(y == ref.out)
        #expect(arg == ref.argmax)
    }

    /// A NaN wins its window and is reported as the argmax, as PyTorch's `val > max || isnan(val)`.
    /// (With two NaNs in one window PyTorch's index is the last, the fast kernel's the first.)
    @Test func maxPoolPropagatesNaN() {
        let s = Pool2DShape(planes: 1, h: 4, w: 4, kh: 2, kw: 2, sh: 2, sw: 2)
        var x = randoms(16, seed: 29)
        x[5] = .nan
        var y = nans(4), arg = [Int32](repeating: -7, count: 4)
        maxPoolForward(out: &y, argmax: &arg, inp: x, s)
        let ref = Reference.maxPoolForward(inp: x, s)
        #expect(y[0].isNaN && ref.out[0].isNaN)
        #expect(Array(y[1...]) == Array(ref.out[1...]))
        #expect(arg == ref.argmax)
        var yi = nans(4)
        maxPoolForward(out: &yi, argmax: nil, inp: x, s)
        #expect(yi[0].isNaN && Array(yi[1...]) == Array(ref.out[1...]))
        // The blocked kernel (8 channels, the NaN in channel 3 only), with indices and without.
        let clean = randoms(16, seed: 29), cleanRef = Reference.maxPoolForward(inp: clean, s).out
        let xb: [Float] = (0..<16 * 8).map { (i: Int) -> Float in i == 5 * 8 + 3 ? .nan : clean[i / 8] }
        for withIndices in [true, false] {
            var yb = nans(4 * 8), ab = [Int32](repeating: -7, count: 4 * 8)
            ab.withUnsafeMutableBufferPointer { a in
                maxPoolForwardBlocked(out: &yb, argmax: withIndices ? a.baseAddress : nil, inp: xb, s, block: 8)
            }
            let expected: [Float] = (0..<32).map { (i: Int) -> Float in i == 3 ? .nan : cleanRef[i / 8] }
            #expect(zip(yb, expected).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) },
                    "blocked max pool, indices \(withIndices): \(yb)")
        }
    }

    // MARK: Softmax and cross-entropy

    @Test(arguments: [(5, 10, Float(0)), (5, 10, 0.1), (3, 1000, 0.1), (4, 1, 0.2)])
    func softmaxCrossEntropy(_ dims: (Int, Int, Float)) {
        let (rows, k, eps) = dims, label = "rows \(rows) K\(k) ε \(eps)"
        var x = randoms(rows * k, seed: 18, scale: 5)
        x[0] += 80  // a large logit: only a max-shifted softmax survives it
        let dy = randoms(rows * k, seed: 19)
        let targets = randoms(rows, seed: 20).map { Int32((($0 + 1) / 2 * Float(k)).rounded(.down)) % Int32(k) }

        var lp = nans(rows * k), dx = nans(rows * k), dl = nans(rows * k)
        logSoftmaxForward(out: &lp, inp: x, rows: rows, k: k)
        let refLP = Reference.logSoftmaxForward(inp: x, rows: rows, k: k)
        expectClose(lp, refLP, "\(label) logSoftmax")
        logSoftmaxBackward(dinp: &dx, dout: dy, out: lp, rows: rows, k: k)
        expectClose(dx, Reference.logSoftmaxBackward(dout: dy, out: refLP, rows: rows, k: k), "\(label) logSoftmax backward")

        let loss = crossEntropyForward(logProbs: lp, targets: targets, rows: rows, k: k, labelSmoothing: eps)
        let refLoss = Reference.crossEntropyForward(logProbs: refLP, targets: targets, rows: rows, k: k, labelSmoothing: eps)
        expectClose([loss], [refLoss], "\(label) cross-entropy")
        crossEntropyBackward(dlogits: &dl, logProbs: lp, targets: targets, rows: rows, k: k, labelSmoothing: eps, dloss: 0.7)
        expectClose(dl, Reference.crossEntropyBackward(logProbs: refLP, targets: targets, rows: rows, k: k,
                                                       labelSmoothing: eps, dloss: 0.7), "\(label) cross-entropy backward")
    }

    // MARK: Elementwise

    @Test(arguments: [1, 8, 1003])
    func activations(_ n: Int) {
        var x = randoms(n, seed: 21, scale: 5)
        for (i, v) in [0, -3, 3, 2.9999, -80, 80].enumerated() where i < n { x[i] = Float(v) }
        let dy = randoms(n, seed: 22)
        typealias Fwd = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int) -> Void
        typealias Bwd = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Void
        let cases: [(String, Fwd, Bwd, ([Float]) -> [Float], ([Float], [Float]) -> [Float], Bool)] = [
            ("relu", { reluForward(out: $0, inp: $1, n: $2) }, { reluBackward(dinp: $0, dout: $1, out: $2, n: $3) },
             Reference.reluForward, Reference.reluBackward, false),
            ("sigmoid", { sigmoidForward(out: $0, inp: $1, n: $2) }, { sigmoidBackward(dinp: $0, dout: $1, out: $2, n: $3) },
             Reference.sigmoidForward, Reference.sigmoidBackward, false),
            ("tanh", { tanhForward(out: $0, inp: $1, n: $2) }, { tanhBackward(dinp: $0, dout: $1, out: $2, n: $3) },
             Reference.tanhForward, Reference.tanhBackward, false),
            ("hardSigmoid", { hardSigmoidForward(out: $0, inp: $1, n: $2) },
             { hardSigmoidBackward(dinp: $0, dout: $1, inp: $2, n: $3) },
             Reference.hardSigmoidForward, { Reference.hardSigmoidBackward(dout: $0, inp: $1) }, true),
            ("relu6", { relu6Forward(out: $0, inp: $1, n: $2) }, { relu6Backward(dinp: $0, dout: $1, inp: $2, n: $3) },
             Reference.relu6Forward, { Reference.relu6Backward(dout: $0, inp: $1) }, true),
            ("hardSwish", { hardSwishForward(out: $0, inp: $1, n: $2) }, { hardSwishBackward(dinp: $0, dout: $1, inp: $2, n: $3) },
             Reference.hardSwishForward, { Reference.hardSwishBackward(dout: $0, inp: $1) }, true),
        ]
        for (name, fwd, bwd, refFwd, refBwd, backwardTakesInput) in cases {
            var y = nans(n), dx = nans(n)
            fwd(&y, x, n)
            let refY = refFwd(x)
            expectClose(y, refY, "\(name) forward n\(n)")
            bwd(&dx, dy, backwardTakesInput ? x : y, n)
            expectClose(dx, refBwd(dy, backwardTakesInput ? x : refY), "\(name) backward n\(n)")
        }
    }

    /// The residual add + ReLU pass against its twin: the same bits (a parallel size with a tail,
    /// and a small one), with exact zeros of a + b and a NaN in the 8-lane body and in the tail.
    @Test(arguments: [11, 100_003])
    func addReLUMatchesTwin(_ n: Int) {
        let a = randoms(n, seed: 51)
        var b = randoms(n, seed: 52)
        for i in stride(from: 0, to: n, by: 5) { b[i] = -a[i] }
        b[2] = .nan
        b[n - 1] = .nan
        var y = nans(n)
        addReLUForward(out: &y, a: a, b: b, n: n)
        let ref = Reference.addReLUForward(a: a, b: b)
        let wrong = y.indices.first { y[$0].bitPattern != ref[$0].bitPattern }
        #expect(wrong == nil, "addReLU n\(n): element \(wrong ?? 0) is \(y[wrong ?? 0]), twin \(ref[wrong ?? 0])")
    }

    /// The SGD update, vectorised on both cores, against the one-element-at-a-time Float twin: the
    /// same bits, on a size that runs in parallel with an 8-lane body and a scalar tail (100 003)
    /// and on a small one (5). First step, later steps, Nesterov, and no momentum (no buffer).
    @Test(arguments: [5, 100_003])
    func sgdUpdateMatchesTwin(_ n: Int) {
        let w0 = randoms(n, seed: 31), g = randoms(n, seed: 32, scale: 0.1), b0 = randoms(n, seed: 33, scale: 0.5)
        for (mu, nesterov, first) in [(Float(0.9), false, true), (0.9, false, false), (0.9, true, false),
                                      (0.9, true, true), (0, false, false)] {
            var w = w0, b = first ? nans(n) : b0
            w.withUnsafeMutableBufferPointer { wp in
                b.withUnsafeMutableBufferPointer { bp in
                    sgdUpdate(weights: wp.baseAddress!, gradient: g, buffer: mu == 0 ? nil : bp.baseAddress!, n: n,
                              learningRate: 0.1, momentum: mu, decay: 1e-4, nesterov: nesterov, first: first)
                }
            }
            let ref = Reference.sgdUpdate(weights: w0, gradient: g, buffer: first ? nil : b0, learningRate: 0.1,
                                          momentum: mu, decay: 1e-4, nesterov: nesterov)
            let label = "sgd n\(n) μ\(mu) nesterov \(nesterov) first \(first)"
            let wrong = w.indices.first { w[$0].bitPattern != ref.weights[$0].bitPattern }
            #expect(wrong == nil, "\(label): weight \(wrong ?? 0) is \(w[wrong ?? 0]), twin \(ref.weights[wrong ?? 0])")
            if mu != 0 {
                let wrongB = b.indices.first { b[$0].bitPattern != ref.buffer![$0].bitPattern }
                #expect(wrongB == nil, "\(label): buffer \(wrongB ?? 0) is \(b[wrongB ?? 0]), twin \(ref.buffer![wrongB ?? 0])")
            } else {
                #expect(ref.buffer == nil)
            }
        }
    }

    /// A NaN input gives a NaN output, as PyTorch's relu, clamp-based activations and the SE
    /// block's scale + add + ReLU — in the 8-lane body (index 3) and in the scalar tail (index 16).
    @Test func activationsPropagateNaN() {
        var x = randoms(17, seed: 27, scale: 5)
        x[3] = .nan
        x[16] = .nan
        let kernels: [(String, (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int) -> Void)] = [
            ("relu", { reluForward(out: $0, inp: $1, n: $2) }), ("relu6", { relu6Forward(out: $0, inp: $1, n: $2) }),
            ("hardSigmoid", { hardSigmoidForward(out: $0, inp: $1, n: $2) }),
            ("hardSwish", { hardSwishForward(out: $0, inp: $1, n: $2) }),
            ("scaleAddReLU", { scaleAddReLUPlanes(out: $0, x: $1, s: [Float(0.5)], residual: [Float](repeating: 1, count: 17), planes: 1, size: $2) }),
        ]
        for (name, kernel) in kernels {
            var y = [Float](repeating: 0, count: 17)
            kernel(&y, x, 17)
            #expect(y[3].isNaN && y[16].isNaN, "\(name): \(y[3]), \(y[16])")
            #expect(y.indices.filter { $0 != 3 && $0 != 16 }.allSatisfy { !y[$0].isNaN }, "\(name)")
        }
    }

    @Test(arguments: [(1, 1), (6, 49), (4, 3136), (3, 13)])
    func arithmeticAndPlanes(_ dims: (Int, Int)) {
        let (planes, size) = dims, n = planes * size, label = "planes \(planes) size \(size)"
        let a = randoms(n, seed: 23), b = randoms(n, seed: 24), s = randoms(planes, seed: 25)
        var out = nans(n), acc = a
        add(out: &out, a: a, b: b, n: n); expectClose(out, Reference.add(a: a, b: b), "\(label) add")
        mul(out: &out, a: a, b: b, n: n); expectClose(out, Reference.mul(a: a, b: b), "\(label) mul")
        affine(out: &out, a: a, scale: 1.5, shift: -0.25, n: n)
        expectClose(out, Reference.affine(a: a, scale: 1.5, shift: -0.25), "\(label) affine")
        accumulate(&acc, b, n: n); expectClose(acc, Reference.add(a: a, b: b), "\(label) accumulate")
        scalePlanes(out: &out, x: a, s: s, planes: planes, size: size)
        expectClose(out, Reference.scalePlanes(x: a, s: s, size: size), "\(label) scalePlanes")
        scaleAddReLUPlanes(out: &out, x: a, s: s, residual: b, planes: planes, size: size)
        expectClose(out, Reference.scaleAddReLUPlanes(x: a, s: s, residual: b, size: size), "\(label) scaleAddReLUPlanes")
        // Plane reductions sum `size` floats in float32 lanes: the looser tolerance.
        var red = nans(planes)
        sumPlanes(out: &red, x: a, planes: planes, size: size)
        expectClose(red, Reference.sumPlanes(x: a, size: size), rtol: 1e-4, atol: 1e-5, "\(label) sumPlanes")
        expectClose([Float(sum(a, n: n))], [Reference.sumPlanes(x: a, size: n)[0]], rtol: 1e-4, atol: 1e-5, "\(label) sum")
        dotPlanes(out: &red, a: a, b: b, planes: planes, size: size)
        expectClose(red, Reference.dotPlanes(a: a, b: b, size: size), rtol: 1e-4, atol: 1e-5, "\(label) dotPlanes")
        // The SE end's backward with the scale's gradient in the same pass: the same gradients,
        // and the dot product summed exactly as `dotPlanes(dr, x)` sums it.
        scaleAddReLUPlanes(out: &out, x: a, s: s, residual: b, planes: planes, size: size)
        let dy = randoms(n, seed: 26)
        var dx = nans(n), dr = nans(n), dx2 = nans(n), dr2 = nans(n), ds = nans(planes), dot = nans(planes)
        scaleAddReLUBackwardPlanes(dx: &dx, dr: &dr, dout: dy, out: out, s: s, planes: planes, size: size)
        scaleAddReLUBackwardPlanes(dx: &dx2, dr: &dr2, dout: dy, out: out, s: s, x: a, ds: &ds, planes: planes, size: size)
        let refDr = Reference.reluBackward(dout: dy, out: out)
        expectClose(dr, refDr, "\(label) scaleAddReLU backward dr")
        expectClose(dx, Reference.scalePlanes(x: refDr, s: s, size: size), "\(label) scaleAddReLU backward dx")
        #expect(dx2 == dx && dr2 == dr, "\(label) fused dot changes dx or dr")
        dotPlanes(out: &dot, a: dr, b: a, planes: planes, size: size)
        #expect(ds == dot, "\(label) fused dot differs from dotPlanes")
        expectClose(ds, Reference.dotPlanes(a: refDr, b: a, size: size), rtol: 1e-4, atol: 1e-5, "\(label) fused dot")
        // A per-plane gradient added in place: acc + value · factor, as broadcast then accumulate.
        acc = a
        accumulatePlanes(&acc, value: s, factor: 0.25, planes: planes, size: size)
        #expect(acc == (0..<n).map { a[$0] + s[$0 / size] * 0.25 }, "\(label) accumulatePlanes")
    }

    // MARK: Layout

    @Test(arguments: [(2, 12, 5, 3), (2, 12, 5, 4), (1, 8, 1, 2), (3, 6, 7, 1)])
    func channelShuffle(_ dims: (Int, Int, Int, Int)) {
        let (n, c, s, g) = dims, x = randoms(n * c * s, seed: 26), label = "shuffle N\(n) C\(c) S\(s) g\(g)"
        var y = nans(x.count), back = nans(x.count), inv = nans(x.count)
        Kernels.channelShuffle(out: &y, inp: x, n: n, c: c, s: s, groups: g)
        Kernels.channelShuffle(out: &back, inp: y, n: n, c: c, s: s, groups: g, inverse: true)
        Kernels.channelShuffle(out: &inv, inp: x, n: n, c: c, s: s, groups: g, inverse: true)
        #expect(y == Reference.channelShuffle(inp: x, n: n, c: c, s: s, groups: g), "\(label)")
        #expect(inv == Reference.channelShuffle(inp: x, n: n, c: c, s: s, groups: g, inverse: true), "\(label) inverse")
        #expect(back == x, "\(label) round trip")
    }

    @Test func concatAndSlice() {
        let (n, s, c1, c2) = (2, 6, 3, 5)
        let p1 = randoms(n * c1 * s, seed: 27), p2 = randoms(n * c2 * s, seed: 28)
        var cat = nans(n * (c1 + c2) * s), back1 = nans(p1.count), back2 = nans(p2.count)
        copyChannels(dst: &cat, dstChannels: c1 + c2, offset: 0, src: p1, srcChannels: c1, n: n, s: s)
        copyChannels(dst: &cat, dstChannels: c1 + c2, offset: c1, src: p2, srcChannels: c2, n: n, s: s)
        #expect(cat == Reference.concatChannels([p1, p2], channels: [c1, c2], n: n, s: s))
        sliceChannels(out: &back1, src: cat, srcChannels: c1 + c2, offset: 0, channels: c1, n: n, s: s)
        sliceChannels(out: &back2, src: cat, srcChannels: c1 + c2, offset: c1, channels: c2, n: n, s: s)
        #expect(back1 == p1)
        #expect(back2 == p2)
    }
}

/// The channel-blocked kernels (Blocked.swift) against the NCHW reference twins: inputs are put in
/// the blocked layout by the reference conversion, each kernel runs there, and its result, read
/// back by the reference conversion, must equal the NCHW reference's.
@Suite struct BlockedTwinTests {
    // (N, C, H, W, block): odd plane sizes, planes longer than one 64-position run, both blocks.
    static let shapes = [(2, 16, 5, 3, 8), (2, 32, 7, 9, 16), (3, 16, 13, 11, 16), (1, 8, 1, 1, 8)]

    @Test(arguments: shapes)
    func kernels(_ dims: (Int, Int, Int, Int, Int)) {
        let (n, c, h, w, b) = dims
        let s = h * w, count = n * c * s, label = "N\(n) C\(c) \(h)×\(w) block \(b)"
        func blocked(_ x: [Float]) -> [Float] { Reference.channelBlocked(x, n: n, c: c, s: s, block: b) }
        func plain(_ x: [Float]) -> [Float] { Reference.fromChannelBlocked(x, n: n, c: c, s: s, block: b) }
        let x = randoms(count, seed: 31, scale: 2, offset: 1), r = randoms(count, seed: 32), dy = randoms(count, seed: 33)
        let (xb, rb, dyb) = (blocked(x), blocked(r), blocked(dy))

        // oneDNN's reorder, both ways.
        var conv = nans(count)
        convertChannelBlocks(out: &conv, inp: x, n: n, c: c, s: s, from: 1, to: b)
        #expect(conv == xb, "\(label) NCHW → blocked")
        convertChannelBlocks(out: &conv, inp: xb, n: n, c: c, s: s, from: b, to: 1)
        #expect(conv == x, "\(label) blocked → NCHW")

        // Batch norm: training forward (+ ReLU), evaluation forward, backward in both modes.
        let gamma = randoms(c, seed: 34, scale: 0.5, offset: 1), beta = randoms(c, seed: 35)
        let rm0 = randoms(c, seed: 36), rv0 = randoms(c, seed: 37, scale: 0.5, offset: 1)
        let tol: (rtol: Float, atol: Float) = (1e-4, 1e-5)
        var refRM = rm0, refRV = rv0, rm = rm0, rv = rv0
        let ref = Reference.batchNormTrainForward(runningMean: &refRM, runningVar: &refRV, inp: x, weight: gamma, bias: beta,
                                                  n: n, c: c, s: s, eps: 1e-5, momentum: 0.1)
        for relu in [false, true] {
            var out = nans(count), mean = nans(c), invStd = nans(c)
            (rm, rv) = (rm0, rv0)
            batchNormTrainForwardBlocked(out: &out, saveMean: &mean, saveInvStd: &invStd, runningMean: &rm, runningVar: &rv,
                                         inp: xb, weight: gamma, bias: beta, n: n, c: c, s: s, block: b, eps: 1e-5,
                                         momentum: 0.1, relu: relu)
            // The output's plane sums formed in the same pass: as `blockedSumPlanes` forms them.
            var out2 = nans(count), sums = nans(n * c), sums2 = nans(n * c)
            (rm, rv) = (rm0, rv0)
            batchNormTrainForwardBlocked(out: &out2, saveMean: &mean, saveInvStd: &invStd, runningMean: &rm, runningVar: &rv,
                                         inp: xb, weight: gamma, bias: beta, n: n, c: c, s: s, block: b, eps: 1e-5,
                                         momentum: 0.1, relu: relu, planeSums: &sums)
            blockedSumPlanes(out: &sums2, x: out, n: n, c: c, s: s, block: b)
            #expect(out2 == out && sums == sums2, "\(label) plane sums in the normalisation pass, relu \(relu)")
            expectClose(plain(out), relu ? Reference.reluForward(inp: ref.out) : ref.out, rtol: tol.rtol, atol: tol.atol,
                        "\(label) train out relu \(relu)")
            expectClose(mean, ref.mean, rtol: tol.rtol, atol: tol.atol, "\(label) mean")
            expectClose(invStd, ref.invStd, rtol: tol.rtol, atol: tol.atol, "\(label) invStd")
            expectClose(rm, refRM, rtol: tol.rtol, atol: tol.atol, "\(label) running mean")
            expectClose(rv, refRV, rtol: tol.rtol, atol: tol.atol, "\(label) running var")
            // Backward; with the fused ReLU the reference gradient is masked first.
            let mask = relu ? out : nil
            let refDy = relu ? Reference.reluBackward(dout: dy, out: Reference.reluForward(inp: ref.out)) : dy
            let refB = Reference.batchNormBackward(dout: refDy, inp: x, mean: mean, invStd: invStd, weight: gamma,
                                                   n: n, c: c, s: s, training: true)
            var dx = nans(count), dg = nans(c), db = nans(c)
            batchNormBackwardBlocked(dinp: &dx, dweight: &dg, dbias: &db, dout: dyb, inp: xb, mean: mean, invStd: invStd,
                                     weight: gamma, n: n, c: c, s: s, block: b, training: true, reluOutput: mask)
            expectClose(plain(dx), refB.dinp, rtol: tol.rtol, atol: tol.atol, "\(label) dx relu \(relu)")
            expectClose(dg, refB.dweight, rtol: tol.rtol, atol: tol.atol, "\(label) dweight relu \(relu)")
            expectClose(db, refB.dbias, rtol: tol.rtol, atol: tol.atol, "\(label) dbias relu \(relu)")
            if relu {
                // The mask recomputed from the input with the forward's scale and shift (what
                // training does): the reference's gradients, and bit for bit those of the mask read
                // from the output.
                var scale = nans(c), shift = nans(c)
                for ch in 0..<c {
                    (scale[ch], shift[ch]) = batchNormScaleShift(ch, mean: mean[ch], invStd: invStd[ch], weight: gamma, bias: beta)
                }
                var dx2 = nans(count), dg2 = nans(c), db2 = nans(c)
                batchNormBackwardBlocked(dinp: &dx2, dweight: &dg2, dbias: &db2, dout: dyb, inp: xb, mean: mean, invStd: invStd,
                                         weight: gamma, n: n, c: c, s: s, block: b, training: true,
                                         reluScale: scale, reluShift: shift)
                expectClose(plain(dx2), refB.dinp, rtol: tol.rtol, atol: tol.atol, "\(label) dx, mask recomputed")
                expectClose(dg2, refB.dweight, rtol: tol.rtol, atol: tol.atol, "\(label) dweight, mask recomputed")
                expectClose(db2, refB.dbias, rtol: tol.rtol, atol: tol.atol, "\(label) dbias, mask recomputed")
                #expect(dx2 == dx && dg2 == dg && db2 == db, "\(label) mask recomputed = mask read")
            }
        }
        let evalInvStd = rv0.map { 1 / ($0 + 1e-5).squareRoot() }
        var dx = nans(count), dg = nans(c), db = nans(c)
        batchNormBackwardBlocked(dinp: &dx, dweight: &dg, dbias: &db, dout: dyb, inp: xb, mean: rm0, invStd: evalInvStd,
                                 weight: gamma, n: n, c: c, s: s, block: b, training: false)
        let refE = Reference.batchNormBackward(dout: dy, inp: x, mean: rm0, invStd: evalInvStd, weight: gamma,
                                               n: n, c: c, s: s, training: false)
        expectClose(plain(dx), refE.dinp, rtol: tol.rtol, atol: tol.atol, "\(label) eval dx")
        expectClose(dg, refE.dweight, rtol: tol.rtol, atol: tol.atol, "\(label) eval dweight")

        // The SE squeeze, scale, scale + residual + ReLU and its backward, the per-plane dot product.
        let scale = randoms(n * c, seed: 38)
        var out = nans(count), planes = nans(n * c)
        blockedScalePlanes(out: &out, x: xb, scale: scale, n: n, c: c, s: s, block: b)
        expectClose(plain(out), Reference.scalePlanes(x: x, s: scale, size: s), "\(label) scale")
        blockedScaleAddReLU(out: &out, x: xb, scale: scale, residual: rb, n: n, c: c, s: s, block: b)
        let refOut = Reference.scaleAddReLUPlanes(x: x, s: scale, residual: r, size: s)
        expectClose(plain(out), refOut, "\(label) scale + add + ReLU")
        var gx = nans(count), gr = nans(count)
        blockedScaleAddReLUBackward(dx: &gx, dr: &gr, dout: dyb, out: out, scale: scale, n: n, c: c, s: s, block: b)
        let refGr = Reference.reluBackward(dout: dy, out: refOut)
        expectClose(plain(gr), refGr, "\(label) scale + add + ReLU, residual gradient")
        expectClose(plain(gx), Reference.scalePlanes(x: refGr, s: scale, size: s), "\(label) scale + add + ReLU, x gradient")
        blockedSumPlanes(out: &planes, x: xb, n: n, c: c, s: s, block: b)
        expectClose(planes, Reference.sumPlanes(x: x, size: s), rtol: 1e-4, atol: 1e-5, "\(label) squeeze sums")
        blockedDotPlanes(out: &planes, a: xb, b: dyb, n: n, c: c, s: s, block: b)
        expectClose(planes, Reference.dotPlanes(a: x, b: dy, size: s), rtol: 1e-4, atol: 1e-5, "\(label) dot")
        blockedBroadcastPlanes(out: &out, value: scale, factor: 0.5, n: n, c: c, s: s, block: b)
        expectClose(plain(out), (0..<count).map { scale[$0 / s] * 0.5 }, "\(label) broadcast")
        var acc = xb
        blockedAccumulatePlanes(&acc, value: scale, factor: 0.5, n: n, c: c, s: s, block: b)
        #expect(plain(acc) == (0..<count).map { x[$0] + scale[$0 / s] * 0.5 }, "\(label) accumulate planes")
        // The backward with the scale's gradient in the same pass, bit for bit `blockedDotPlanes(dr, x)`.
        blockedScaleAddReLU(out: &out, x: xb, scale: scale, residual: rb, n: n, c: c, s: s, block: b)
        var gx2 = nans(count), gr2 = nans(count), ds = nans(n * c), dot = nans(n * c)
        blockedScaleAddReLUBackward(dx: &gx2, dr: &gr2, dout: dyb, out: out, scale: scale, x: xb, ds: &ds,
                                    n: n, c: c, s: s, block: b)
        #expect(gx2 == gx && gr2 == gr, "\(label) fused dot changes dx or dr")
        blockedDotPlanes(out: &dot, a: gr, b: xb, n: n, c: c, s: s, block: b)
        #expect(ds == dot, "\(label) fused dot differs from blockedDotPlanes")
        expectClose(ds, Reference.dotPlanes(a: refGr, b: x, size: s), rtol: 1e-4, atol: 1e-5, "\(label) fused dot")

        // Global max pooling (each plane seen as one row of S positions), forward and backward.
        let gp = Pool2DShape(planes: n * c, h: 1, w: s, kh: 1, kw: s, sh: 1, sw: s)
        var gbp = gp
        gbp.planes = n * c / b
        let refGlobal = Reference.maxPoolForward(inp: x, gp)
        var gy = nans(n * c), garg = [Int32](repeating: -7, count: n * c), gdx = nans(count)
        maxPoolForwardBlocked(out: &gy, argmax: &garg, inp: xb, gbp, block: b)
        #expect(gy == refGlobal.out, "\(label) global max pool")  // one position per plane: the same order
        maxPoolBackwardBlocked(dinp: &gdx, dout: scale, argmax: garg, gbp, block: b)
        expectClose(plain(gdx), Reference.maxPoolBackward(dout: scale, argmax: refGlobal.argmax, gp), "\(label) global max pool backward")

        // Max pooling 3×3 stride 2 padding 1, forward with indices and backward.
        guard h > 1 else { return }
        let p = Pool2DShape(planes: n * c, h: h, w: w, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1)
        var bp = p
        bp.planes = n * c / b
        let outCount = n * c * p.ho * p.wo
        func plainOut(_ v: [Float]) -> [Float] { Reference.fromChannelBlocked(v, n: n, c: c, s: p.ho * p.wo, block: b) }
        let refPool = Reference.maxPoolForward(inp: x, p)
        var y = nans(outCount), arg = [Int32](repeating: -7, count: outCount)
        maxPoolForwardBlocked(out: &y, argmax: &arg, inp: xb, bp, block: b)
        #expect(plainOut(y) == refPool.out, "\(label) max pool")
        var yNoIndices = nans(outCount)
        maxPoolForwardBlocked(out: &yNoIndices, argmax: nil, inp: xb, bp, block: b)
        #expect(plainOut(yNoIndices) == refPool.out, "\(label) max pool without indices")
        let dyPool = randoms(outCount, seed: 39)
        var dxPool = nans(count)
        maxPoolBackwardBlocked(dinp: &dxPool, dout: Reference.channelBlocked(dyPool, n: n, c: c, s: p.ho * p.wo, block: b),
                               argmax: arg, bp, block: b)
        expectClose(plain(dxPool), Reference.maxPoolBackward(dout: dyPool, argmax: refPool.argmax, p), "\(label) max pool backward")
        for include in [true, false] {
            var ya = nans(outCount), dxa = nans(count)
            avgPoolForwardBlocked(out: &ya, inp: xb, bp, block: b, countIncludePad: include)
            expectClose(plainOut(ya), Reference.avgPoolForward(inp: x, p, countIncludePad: include), "\(label) avg pool (\(include))")
            avgPoolBackwardBlocked(dinp: &dxa, dout: Reference.channelBlocked(dyPool, n: n, c: c, s: p.ho * p.wo, block: b),
                                   bp, block: b, countIncludePad: include)
            expectClose(plain(dxa), Reference.avgPoolBackward(dout: dyPool, p, countIncludePad: include),
                        "\(label) avg pool backward (\(include))")
        }
    }
}
