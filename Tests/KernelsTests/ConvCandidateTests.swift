// Every convolution plan the autotuner may pick (oneDNN plain, oneDNN blocked, per-image GEMM
// for 1×1, sub-batches) is checked on its own against the reference twin: the autotuner's choice depends on
// timing, so each path must be right independently of which one wins here.

@testable import Kernels
import Testing
import _TestSupport

/// Runs `plan` on copies of `arrays` and returns the copies afterwards.
private func run(_ plan: KernelPlan, _ arrays: [[Float]], constant: ConstantWeights? = nil) -> [[Float]] {
    let bufs = arrays.map { a -> UnsafeMutablePointer<Float> in
        let p = UnsafeMutablePointer<Float>.allocate(capacity: a.count)
        p.initialize(from: a, count: a.count)
        return p
    }
    defer { bufs.forEach { $0.deallocate() } }
    plan.execute(bufs.map { UnsafeMutableRawPointer($0) }, constant: constant)
    return zip(bufs, arrays).map { Array(UnsafeBufferPointer(start: $0, count: $1.count)) }
}

/// `count` values uniform in [−1, 1) from a 64-bit LCG with the given state.
private func lcgUniform(_ count: Int, state: inout UInt64) -> [Float] {
    (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Float(state >> 40) / Float(1 << 23) - 1
    }
}

/// A 3×3, padding-1, stride-1 convolution computed directly in float64: the output, the input
/// gradient and the weight gradient for the output gradient `dy`.
private func float64Conv3x3(_ s: Conv2DShape, x: [Float], w: [Float], dy: [Float]) -> (y: [Double], dx: [Double], dw: [Double]) {
    var y = [Double](repeating: 0, count: s.outputCount), dx = [Double](repeating: 0, count: s.inputCount)
    var dw = [Double](repeating: 0, count: s.weightCount)
    for n in 0..<s.n { for o in 0..<s.o { for i in 0..<s.h { for j in 0..<s.w {
        var acc = 0.0
        let g = Double(dy[((n * s.o + o) * s.h + i) * s.w + j])
        for c in 0..<s.c { for a in 0..<3 { for b in 0..<3 {
            let (yy, xx) = (i + a - 1, j + b - 1)
            guard yy >= 0, yy < s.h, xx >= 0, xx < s.w else { continue }
            let wi = ((o * s.c + c) * 3 + a) * 3 + b, xi = ((n * s.c + c) * s.h + yy) * s.w + xx
            acc += Double(w[wi]) * Double(x[xi])
            dx[xi] += Double(w[wi]) * g
            dw[wi] += Double(x[xi]) * g
        } } }
        y[((n * s.o + o) * s.h + i) * s.w + j] = acc
    } } } }
    return (y, dx, dw)
}

/// max |a − b| relative to max |b|.
private func relativeError(_ a: [Float], _ b: [Double]) -> Double {
    zip(a, b).map { abs(Double($0) - $1) }.max()! / b.map(abs).max()!
}

@Suite struct ConvCandidateTests {
    static let shapes: [Conv2DShape] = [
        .init(n: 2, c: 32, h: 7, w: 7, o: 48, kh: 1, kw: 1),
        .init(n: 3, c: 16, h: 5, w: 6, o: 8, kh: 1, kw: 1),
        .init(n: 2, c: 16, h: 9, w: 8, o: 24, kh: 1, kw: 1, sh: 2, sw: 2),
        .init(n: 2, c: 32, h: 14, w: 14, o: 32, kh: 3, kw: 3, ph: 1, pw: 1),
        // Odd sizes: the Winograd plan's partial last tile row and column.
        .init(n: 3, c: 16, h: 7, w: 9, o: 24, kh: 3, kw: 3, ph: 1, pw: 1),
        .init(n: 2, c: 16, h: 9, w: 9, o: 32, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1, groups: 4),
        // An SE block's first FC (1×1 on the squeezed 1×1 map) and a CIFAR ResNet convolution.
        .init(n: 2, c: 64, h: 1, w: 1, o: 4, kh: 1, kw: 1),
        .init(n: 2, c: 16, h: 1, w: 1, o: 1, kh: 1, kw: 1),
        .init(n: 2, c: 1, h: 1, w: 1, o: 16, kh: 1, kw: 1),
        .init(n: 2, c: 32, h: 1, w: 1, o: 2, kh: 1, kw: 1),
        // The same FCs at batch 20 and 24 (one product over all the images).
        .init(n: 20, c: 24, h: 1, w: 1, o: 30, kh: 1, kw: 1),
        .init(n: 24, c: 40, h: 1, w: 1, o: 13, kh: 1, kw: 1),
        .init(n: 2, c: 16, h: 12, w: 12, o: 16, kh: 3, kw: 3, ph: 1, pw: 1),
        // Batches of 8: the plans that run sub-batches of 1 and 4 (BatchChunkPlan), and 1×1
        // backward-weights with several images packed per product.
        .init(n: 8, c: 16, h: 7, w: 7, o: 24, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1),
        .init(n: 8, c: 24, h: 6, w: 5, o: 16, kh: 1, kw: 1),
        .init(n: 8, c: 16, h: 9, w: 9, o: 32, kh: 1, kw: 1, sh: 2, sw: 2),
        // 200 pixels: products of 5 images, then of the remaining 3.
        .init(n: 8, c: 8, h: 10, w: 20, o: 8, kh: 1, kw: 1),
    ]

    @Test(arguments: shapes)
    func everyCandidateMatchesTheReference(_ s: Conv2DShape) {
        func rand(_ n: Int, _ seed: UInt64) -> [Float] {
            var st = seed
            return lcgUniform(n, state: &st)
        }
        let x = rand(s.inputCount, 1), w = rand(s.weightCount, 2), b = rand(s.o, 3), dy = rand(s.outputCount, 4)
        let refY = Reference.conv2dForward(inp: x, weight: w, bias: b, s)
        let refDx = Reference.conv2dBackwardData(dout: dy, weight: w, s)
        let refDw = Reference.conv2dBackwardWeights(inp: x, dout: dy, s)
        func nans(_ n: Int) -> [Float] { [Float](repeating: .nan, count: n) }
        func atol(_ plan: KernelPlan, _ ref: [Float]) -> Float { convolutionAtol(plan.impl, expected: ref, atol: 1e-5) }
        for pass in [ConvPass.forward, .backwardData, .backwardWeights] {
            let plans = convCandidates(ConvKey(shape: s, pass: pass, bias: pass != .backwardData), policy: .auto)
            #expect(plans.count >= 2, "\(s) \(pass): only \(plans.map(\.impl))")
            if s.n >= 8 {
                #expect(plans.filter { $0 is BatchChunkPlan }.count == 2, "\(s) \(pass): \(plans.map(\.impl))")
            }
            for plan in plans {
                let label = "\(s) \(pass) \(plan.impl)"
                switch pass {
                case .forward:
                    expectClose(run(plan, [x, w, b, nans(s.outputCount)])[3], refY, rtol: 1e-4, atol: atol(plan, refY), label)
                    // The same candidate with the inference engine's fused ReLU, with and without bias.
                    let reluPlans = convCandidates(ConvKey(shape: s, pass: .forward, bias: true, relu: true), policy: .auto)
                    func family(_ p: KernelPlan) -> String {
                        if let c = p as? BatchChunkPlan { return "batch chunks of \(c.chunk)" }
                        return String(p.impl.split(separator: "+").first ?? "")
                    }
                    #expect(reluPlans.map(family) == plans.map(family), "\(s): relu candidates \(reluPlans.map(\.impl))")
                    for rp in reluPlans where family(rp) == family(plan) {
                        expectClose(run(rp, [x, w, b, nans(s.outputCount)])[3], refY.map { max($0, 0) }, rtol: 1e-4, atol: atol(rp, refY), label + " +relu")
                    }
                    // Inference plans with weights converted once: the first call converts, the second
                    // (another input) reads the kept copy.
                    let constPlans = convCandidates(ConvKey(shape: s, pass: .forward, bias: true, constantWeights: true), policy: .auto)
                    for cp in constPlans where family(cp) == family(plan) {
                        let kept = ConstantWeights()
                        expectClose(run(cp, [x, w, b, nans(s.outputCount)], constant: kept)[3], refY, rtol: 1e-4, atol: atol(cp, refY), label + " constant weights")
                        let x2 = x.map { -0.5 * $0 }
                        let refY2 = Reference.conv2dForward(inp: x2, weight: w, bias: b, s)
                        expectClose(run(cp, [x2, w, b, nans(s.outputCount)], constant: kept)[3], refY2, rtol: 1e-4, atol: atol(cp, refY2), label + " constant weights, second call")
                    }
                    let noBias = convCandidates(ConvKey(shape: s, pass: .forward, bias: false, relu: true), policy: .auto)
                    let refNoBias = Reference.conv2dForward(inp: x, weight: w, bias: nil, s).map { max($0, 0) }
                    for rp in noBias where family(rp) == family(plan) {
                        expectClose(run(rp, [x, w, nans(s.outputCount)])[2], refNoBias, rtol: 1e-4, atol: atol(rp, refY), label + " no bias +relu")
                    }
                case .backwardData:
                    expectClose(run(plan, [dy, w, nans(s.inputCount)])[2], refDx, rtol: 1e-4, atol: atol(plan, refDx), label)
                case .backwardWeights:
                    let out = run(plan, [x, dy, nans(s.weightCount), nans(s.o)])
                    expectClose(out[2], refDw.dweight, rtol: 1e-4, atol: atol(plan, refDw.dweight), label)
                    expectClose(out[3], refDw.dbias, rtol: 1e-4, atol: 1e-5, label + " bias")
                }
            }
        }
    }
}

/// Winograd F(2×2, 3×3) against a float64 direct convolution: its error, relative to the output's
/// largest magnitude, stays at the level of float32 direct convolution (the parity tests' 1e-5
/// budget is for the whole chain of ops).
@Suite struct WinogradAccuracyTests {
    @Test func withinAFewULPsOfFloat64() {
        let s = Conv2DShape(n: 2, c: 96, h: 11, w: 10, o: 40, kh: 3, kw: 3, ph: 1, pw: 1)
        var st: UInt64 = 7
        let x = lcgUniform(s.inputCount, state: &st), w = lcgUniform(s.weightCount, state: &st)
        let dy = lcgUniform(s.outputCount, state: &st)
        let ref = float64Conv3x3(s, x: x, w: w, dy: dy)
        func winograd(_ pass: ConvPass, _ inputs: [[Float]], outCount: Int) -> [Float] {
            run(WinogradPlan(ConvKey(shape: s, pass: pass, bias: false)), inputs + [[Float](repeating: .nan, count: outCount)]).last!
        }
        let ey = relativeError(winograd(.forward, [x, w], outCount: s.outputCount), ref.y)
        let edx = relativeError(winograd(.backwardData, [dy, w], outCount: s.inputCount), ref.dx)
        #expect(ey < 1e-6, "forward: \(ey)")
        #expect(edx < 1e-6, "backward-data: \(edx)")
    }
}

/// Every candidate against float64 on a ResNet-sized layer, error relative to the result's largest
/// magnitude. Direct convolutions and our F(2×2, 3×3) stay near 4e-7; oneDNN's Winograd
/// F(4×4, 3×3) (`jit_wino_4x3`, on AVX-512 machines only) measures about 1.7e-6, its larger
/// transforms costing about two bits. The bound, 5e-6, keeps it well inside the parity budget.
@Suite struct ConvCandidateAccuracyTests {
    @Test func errorAgainstFloat64() throws {
        let s = Conv2DShape(n: 2, c: 64, h: 14, w: 14, o: 64, kh: 3, kw: 3, ph: 1, pw: 1)
        var st: UInt64 = 11
        let x = lcgUniform(s.inputCount, state: &st), w = lcgUniform(s.weightCount, state: &st)
        let dy = lcgUniform(s.outputCount, state: &st)
        let ref = float64Conv3x3(s, x: x, w: w, dy: dy)
        for pass in [ConvPass.forward, .backwardData, .backwardWeights] {
            let (inputs, expected): ([[Float]], [Double]) = switch pass {
            case .forward: ([x, w], ref.y)
            case .backwardData: ([dy, w], ref.dx)
            case .backwardWeights: ([x, dy], ref.dw)
            }
            for plan in convCandidates(ConvKey(shape: s, pass: pass, bias: false), policy: .auto) {
                let out = run(plan, inputs + [[Float](repeating: .nan, count: expected.count)]).last!
                let e = relativeError(out, expected)
                #expect(e < 5e-6, "\(pass) \(plan.impl): error \(e) of the largest magnitude")
            }
        }
    }
}

/// The sub-batch plans on channel-blocked activations (as they run inside our networks), in
/// blocks of 8 and 16, against the reference twin through the reference layout conversion.
@Suite struct BatchChunkBlockedTests {
    @Test(arguments: [8, 16])
    func subBatchesOnBlockedActivations(_ b: Int) {
        let s = Conv2DShape(n: 8, c: 32, h: 6, w: 6, o: 16, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1)
        var st: UInt64 = 7
        let x = lcgUniform(s.inputCount, state: &st), w = lcgUniform(s.weightCount, state: &st)
        let bias = lcgUniform(s.o, state: &st), dy = lcgUniform(s.outputCount, state: &st)
        let (sIn, sOut) = (s.h * s.w, s.ho * s.wo)
        func blocked(_ a: [Float], _ c: Int, _ sp: Int) -> [Float] { Reference.channelBlocked(a, n: s.n, c: c, s: sp, block: b) }
        func plain(_ a: [Float], _ c: Int, _ sp: Int) -> [Float] { Reference.fromChannelBlocked(a, n: s.n, c: c, s: sp, block: b) }
        let refY = Reference.conv2dForward(inp: x, weight: w, bias: bias, s)
        let refDx = Reference.conv2dBackwardData(dout: dy, weight: w, s)
        let refDw = Reference.conv2dBackwardWeights(inp: x, dout: dy, s)
        let nan = Float.nan
        for chunk in [1, 4] {
            for pass in [ConvPass.forward, .backwardData, .backwardWeights] {
                let key = ConvKey(shape: s, pass: pass, bias: pass != .backwardData, srcBlock: b, dstBlock: b)
                #expect(BatchChunkPlan.chunkSizes(key) == [1, 4])
                let plan = BatchChunkPlan(key, chunk: chunk)
                let label = "block \(b), chunks of \(chunk), \(pass)"
                switch pass {
                case .forward:
                    let out = run(plan, [blocked(x, s.c, sIn), w, bias, [Float](repeating: nan, count: s.outputCount)])[3]
                    expectClose(plain(out, s.o, sOut), refY, rtol: 1e-4, atol: 1e-5, label)
                case .backwardData:
                    let out = run(plan, [blocked(dy, s.o, sOut), w, [Float](repeating: nan, count: s.inputCount)])[2]
                    expectClose(plain(out, s.c, sIn), refDx, rtol: 1e-4, atol: 1e-5, label)
                case .backwardWeights:
                    let out = run(plan, [blocked(x, s.c, sIn), blocked(dy, s.o, sOut),
                                         [Float](repeating: nan, count: s.weightCount), [Float](repeating: nan, count: s.o)])
                    expectClose(out[2], refDw.dweight, rtol: 1e-4, atol: 1e-5, label)
                    expectClose(out[3], refDw.dbias, rtol: 1e-4, atol: 1e-5, label + " bias")
                }
            }
        }
    }
}

/// Constant weights are converted once: after the first call, a oneDNN plan that converts weights
/// reads its kept copy, so a second call whose weight buffer holds NaNs still gives the right result.
@Suite struct ConstantWeightsTests {
    @Test func convertingPlansConvertWeightsOnce() {
        let s = Conv2DShape(n: 2, c: 32, h: 9, w: 9, o: 32, kh: 3, kw: 3, ph: 1, pw: 1)
        var st: UInt64 = 11
        let x = lcgUniform(s.inputCount, state: &st), w = lcgUniform(s.weightCount, state: &st), b = lcgUniform(s.o, state: &st)
        let refY = Reference.conv2dForward(inp: x, weight: w, bias: b, s)
        let key = ConvKey(shape: s, pass: .forward, bias: true, constantWeights: true)
        // oneDNN's plans that read the weights in another layout (its blocked direct or brgemm
        // kernel, its Winograd).
        let converting = convCandidates(key, policy: .auto).compactMap { $0 as? DNNLPlan }.filter(\.convertsWeights)
        #expect(!converting.isEmpty)
        for plan in converting {
            checkConvertsOnce(plan, s, x: x, w: w, b: b, refY: refY)
        }
    }

    private func checkConvertsOnce(_ plan: DNNLPlan, _ s: Conv2DShape, x: [Float], w: [Float], b: [Float], refY: [Float]) {
        let kept = ConstantWeights()
        let out = [Float](repeating: .nan, count: s.outputCount)
        let atol = convolutionAtol(plan.impl, expected: refY, atol: 1e-5)
        expectClose(run(plan, [x, w, b, out], constant: kept)[3], refY, rtol: 1e-4, atol: atol, "\(plan.impl) first call")
        #expect(kept.bytes >= s.weightCount * 4)
        let poisoned = [Float](repeating: .nan, count: s.weightCount)
        expectClose(run(plan, [x, poisoned, b, out], constant: kept)[3], refY, rtol: 1e-4, atol: atol, "\(plan.impl) kept copy")
        // Without the store the plan converts the buffer it is given.
        let fresh = run(plan, [x, poisoned, b, out])[3]
        #expect(fresh.allSatisfy { $0.isNaN }, "\(plan.impl)")
        kept.discard(plan)
        #expect(kept.bytes == 0)
    }
}

/// A plan is shared by every caller of its shape, on any thread: the sub-batch plan's
/// backward-weights, which sums the sub-batches in a scratch buffer of its own, gives each of four
/// threads calling it at once its own batch's gradient.
@Suite struct BatchChunkConcurrencyTests {
    @Test func concurrentBackwardWeightsCallsKeepTheirOwnSums() async {
        let s = Conv2DShape(n: 8, c: 64, h: 4, w: 4, o: 64, kh: 3, kw: 3, ph: 1, pw: 1)
        let key = ConvKey(shape: s, pass: .backwardWeights, bias: true)
        let plan = BatchChunkPlan(key, chunk: 1)
        let cases: [(x: [Float], dy: [Float])] = (0..<4).map { i in
            var st = UInt64(100 + i)
            return (lcgUniform(s.inputCount, state: &st), lcgUniform(s.outputCount, state: &st))
        }
        let expected = cases.map { Reference.conv2dBackwardWeights(inp: $0.x, dout: $0.dy, s) }
        _ = run(plan, [cases[0].x, cases[0].dy, [Float](repeating: 0, count: s.weightCount), [Float](repeating: 0, count: s.o)])
        // Each of four tasks calls the plan 40 times and counts the calls whose sums were wrong.
        let wrong = await withTaskGroup(of: Int.self) { group in
            for (i, c) in cases.enumerated() {
                group.addTask {
                    var bad = 0
                    for _ in 0..<40 {
                        let r = run(plan, [c.x, c.dy, [Float](repeating: .nan, count: s.weightCount), [Float](repeating: .nan, count: s.o)])
                        let w = closeness(r[2], expected[i].dweight, rtol: 1e-4, atol: 1e-5)
                        let b = closeness(r[3], expected[i].dbias, rtol: 1e-4, atol: 1e-5)
                        if !w.passed || !b.passed { bad += 1 }
                    }
                    return bad
                }
            }
            return await group.reduce(0, +)
        }
        #expect(wrong == 0, "\(wrong) of 160 concurrent calls returned another call's sums")
    }
}
