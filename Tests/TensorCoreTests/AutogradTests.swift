// The tape: fan-out sums gradients, no-grad keeps nothing alive, gradients keyed by parameter.

import Foundation
import Testing
import TensorCore
import NN
import _TestSupport

@Suite("Autograd")
struct AutogradTests {
    @Test func fanOutSumsGradientsOfThreeConsumers() {
        // f(x) = Σ 2x + Σ relu(x) + Σ x²  ⇒  ∂f/∂x = 2 + [x > 0] + 2x (computed by hand below).
        let x = Tensor(shape: [2, 3], scalars: [-1.5, -0.25, 0.5, 1, 2, -3])
        let (v, g) = valueAndGradient(at: x) { x in (x * 2).sum() + relu(x).sum() + (x * x).sum() }
        let xs = x.scalars
        let expectedValue = xs.reduce(0) { $0 + 2 * $1 + max($1, 0) + $1 * $1 }
        let expectedGrad = xs.map { 2 + ($0 > 0 ? 1 : 0) + 2 * $0 }
        #expect(abs(v.item - expectedValue) < 1e-5)
        expectClose(g.scalars, expectedGrad, "fan-out gradient")
    }

    @Test func unusedInputGetsZeroGradient() {
        let (_, g) = valueAndGradient(at: [Tensor.ones([2]), Tensor.ones([3])]) { $0[0].sum() }
        #expect(g[1].scalars == [0, 0, 0])
    }

    @Test func moduleGradientsAreKeyedByCheckpointKeys() {
        var gen = SeededGenerator(seed: 1)
        let conv = Conv2d(3, 4, kernel: 3, padding: 1, generator: &gen)
        let bn = BatchNorm2d(4)
        let model = Sequential([conv, bn, ReLU()])
        let keys = model.namedParameters().map(\.0)
        #expect(keys == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"])
        let x = Tensor.randomNormal([2, 3, 5, 5], seed: 2)
        let (_, grads) = valueAndGradient(of: model) { model(x).mean() }
        #expect(Set(grads.keys) == ["0.weight", "0.bias", "1.weight", "1.bias"])
        #expect(grads["0.weight"]?.shape == [4, 3, 3, 3])
        // Parameters come back untracked: a later forward records nothing.
        #expect(!conv.weight.value.isTracked)
    }

    /// Peak live tensor bytes of a 20-layer forward, measured in a child process so that other
    /// tests running in parallel do not disturb the process-wide counter.
    @Test func noGradForwardKeepsAboutOneLayerAlive() async {
        await #expect(processExitsWith: .success) {
            let act = 1 * 16 * 32 * 32 * 4  // bytes of one activation
            var gen = SeededGenerator(seed: 3)
            let weights = (0..<20).map { _ in Tensor.randomNormal([16, 16, 3, 3], std: 0.1, generator: &gen) }
            let x = Tensor.randomNormal([1, 16, 32, 32], generator: &gen)
            func net(_ x: Tensor, _ ws: [Tensor]) -> Tensor {
                var h = x
                for w in ws { h = relu(conv2d(h, weight: w, padding: (1, 1))) }
                return h.mean()
            }
            let base = TensorStorage.liveBytes
            TensorStorage.resetPeak()
            _ = withoutGradients { net(x, weights) }
            let noGradPeak = TensorStorage.peakBytes - base
            TensorStorage.resetPeak()
            _ = valueAndGradient(at: weights) { net(x, $0) }
            let tapedPeak = TensorStorage.peakBytes - base
            print("no-grad peak \(noGradPeak) bytes, taped peak \(tapedPeak) bytes, one activation \(act) bytes")
            // No-grad: the input of a layer, its conv output and its ReLU output at most.
            if noGradPeak > 3 * act { exit(1) }
            // With the tape every layer's activations stay alive (the measurement can fail).
            if tapedPeak < 20 * act { exit(2) }
            exit(0)
        }
    }

    /// Backward frees each op's saved activations once its pullback has run (as PyTorch frees a
    /// node's saved tensors): when the first layer's weight gradient is ready — the last step of
    /// backward — the 20 layers' activations are gone. (Child process, as above.)
    @Test func backwardReleasesSavedActivationsAsItGoes() async {
        await #expect(processExitsWith: .success) {
            let act = 1 * 16 * 32 * 32 * 4
            var gen = SeededGenerator(seed: 4)
            let ws = (0..<20).map { _ in Tensor.randomNormal([16, 16, 3, 3], std: 0.1, generator: &gen) }
            let base = TensorStorage.liveBytes
            let tape = GradientTape()
            let watched = ws.map { tape.watch($0) }
            var atFirstLayer = Int.max, afterForward = 0
            do {
                let x = Tensor.randomNormal([1, 16, 32, 32], generator: &gen)
                let y = tape.record { () -> Tensor in
                    var h = x
                    for w in watched { h = relu(conv2d(h, weight: w, padding: (1, 1))) }
                    return h.mean()
                }
                afterForward = TensorStorage.liveBytes - base
                _ = tape.gradients(of: y, wrt: watched) { k, _ in
                    if k == 0 { atFirstLayer = TensorStorage.liveBytes - base }
                }
            }
            print("after forward \(afterForward) bytes, when layer 0's gradient is ready \(atFirstLayer) bytes, one activation \(act)")
            if afterForward < 20 * act { exit(2) }  // the measurement can fail
            // Left: layer 0's input and output gradients, the gradients already handed out, x.
            if atFirstLayer > 5 * act { exit(1) }
            exit(0)
        }
    }
}

/// The SE squeeze's gradient (one value per plane) is added into the gradient its input already
/// has in one pass, without being broadcast into a tensor first: against hand-computed values,
/// with the squeeze's gradient arriving second (the SE block's order) or first, in NCHW and in
/// both channel-blocked layouts.
@Suite("Per-plane gradients")
struct PlaneGradientTests {
    @Test(arguments: [1, 8, 16])
    func squeezeGradientAddsIntoTheOther(_ block: Int) {
        let shape = [2, 16, 3, 5], per = 15
        let x = Tensor.randomNormal(shape, seed: 11).inLayout(block)
        let w = Tensor.randomNormal(shape, seed: 12), v = Tensor.randomNormal([2, 16, 1, 1], seed: 13)
        let (ws, vs) = (w.scalars, v.scalars)
        let expected = (0..<ws.count).map { ws[$0] + vs[$0 / per] * (1 / Float(per)) }
        for squeezeFirst in [true, false] {
            let (_, g) = valueAndGradient(at: [x]) { t in
                let squeeze = (t[0].mean(axes: [2, 3], keepDims: true) * v).sum()
                let other = (t[0] * w).sum()
                return squeezeFirst ? squeeze + other : other + squeeze
            }
            #expect(g[0].shape == shape)
            #expect(g[0].scalars == expected, "block \(block), squeeze first \(squeezeFirst)")
        }
        // Alone, the squeeze's gradient is written out in full.
        let (_, g) = valueAndGradient(at: [x]) { t in (t[0].mean(axes: [2, 3], keepDims: true) * v).sum() }
        #expect(g[0].shape == shape && g[0].scalars == (0..<ws.count).map { vs[$0 / per] * (1 / Float(per)) })
    }
}

/// A training batch norm on blocked activations sums its output's planes in the pass that writes
/// it; the SE squeeze that follows uses those sums: the same means, bit for bit, as summing the
/// planes again, and none once the tensor has changed.
@Suite("Squeeze from the batch norm's pass")
struct SqueezeFromBatchNormTests {
    @Test(arguments: [8, 16])
    func squeezeOfABatchNormOutput(_ block: Int) {
        let shape = [3, 32, 5, 7]
        let x = Tensor.randomNormal(shape, seed: 21).inLayout(block)
        let w = Tensor.randomUniform([32], low: 0.5, high: 1.5, seed: 22), b = Tensor.randomNormal([32], seed: 23)
        for relu in [false, true] {
            var rm = Tensor.zeros([32]), rv = Tensor.ones([32])
            var y = batchNorm(x, weight: w, bias: b, runningMean: &rm, runningVar: &rv, training: true, fusedReLU: relu)
            #expect(y.channelBlock == block)
            let recomputed = y.inLayout(1).inLayout(block)  // the same values, without the sums
            #expect(y.mean(axes: [2, 3], keepDims: true).scalars == recomputed.mean(axes: [2, 3], keepDims: true).scalars)
            #expect(y.sum(axes: [2, 3]).scalars == recomputed.sum(axes: [2, 3]).scalars)
            // Hand-checked against the values themselves.
            let v = y.scalars, per = 35
            let direct = (0..<96).map { p in (0..<per).reduce(0.0) { $0 + Double(v[p * per + $1]) } / Double(per) }
            let means = y.mean(axes: [2, 3]).scalars
            for p in 0..<96 { #expect(abs(Double(means[p]) - direct[p]) <= 1e-5 * max(1, abs(direct[p]))) }
            // Changed in place: the sums are stale and must not be used.
            y.withUnsafeMutableStorage { $0[0] += 100 }
            #expect(abs(y.mean(axes: [2, 3]).scalars[0] - means[0] - 100 / Float(per)) < 1e-3)
        }
    }
}

/// The fused end of an SE residual block against the composed ops it replaces in training:
/// relu(x · s + r). The composed ops are checked against PyTorch fixtures; the fused op must give
/// the same output and the same three gradients bit for bit (same products and sums, same order).
@Suite("Fused SE scale + residual add + ReLU")
struct FusedSEScaleAddReLUTests {
    @Test(arguments: [[2, 5, 3, 7], [3, 4, 4, 4], [1, 16, 1, 1]])
    func bitIdenticalToTheComposedOps(_ shape: [Int]) {
        let x = Tensor.randomNormal(shape, seed: 1)
        var r = Tensor.randomNormal(shape, seed: 2)
        // Exact zeros of x·s + r (the ReLU's kink) and NaN-free ties: r = −x·s on some elements.
        let s = Tensor.randomUniform([shape[0], shape[1], 1, 1], low: 0, high: 1, seed: 3)
        var rs = r.scalars
        let (xs, ss, per) = (x.scalars, s.scalars, shape[2] * shape[3])
        for i in stride(from: 0, to: rs.count, by: 5) { rs[i] = -(xs[i] * ss[i / per]) }
        r = Tensor(shape: shape, scalars: rs)
        // A weighted sum, so that every element's gradient differs.
        let w = Tensor.randomNormal(shape, seed: 4)
        let (vf, gf) = valueAndGradient(at: [x, s, r]) { (seScaleAddReLU($0[0], scale: $0[1], residual: $0[2]) * w).sum() }
        let (vc, gc) = valueAndGradient(at: [x, s, r]) { (relu($0[0] * $0[1] + $0[2]) * w).sum() }
        #expect(vf.item == vc.item)
        for (i, name) in ["x", "scale", "residual"].enumerated() {
            #expect(gf[i].shape == gc[i].shape, "\(name)")
            #expect(gf[i].scalars == gc[i].scalars, "\(name) gradient differs")
        }
        // And against hand-computed values: d/dr = w where x·s + r > 0.
        let pre = (0..<xs.count).map { xs[$0] * ss[$0 / per] + rs[$0] }
        let expectedDr = zip(pre, w.scalars).map { $0 > 0 ? $1 : 0 }
        #expect(gf[2].scalars == expectedDr)
    }
}

/// The end of a plain residual block, relu(x + r), in one pass: the same output and the same two
/// gradients as the composed ops (which the PyTorch fixtures check), bit for bit, in NCHW and in
/// both channel-blocked layouts, with exact zeros of x + r (the ReLU's kink) and a NaN.
@Suite("Fused residual add + ReLU")
struct FusedAddReLUTests {
    @Test(arguments: [1, 8, 16])
    func bitIdenticalToTheComposedOps(_ block: Int) {
        let shape = [2, 16, 5, 3]
        let x = Tensor.randomNormal(shape, seed: 1)
        var rs = Tensor.randomNormal(shape, seed: 2).scalars
        let xs = x.scalars
        for i in stride(from: 0, to: rs.count, by: 7) { rs[i] = -xs[i] }
        rs[3] = .nan
        let r = Tensor(shape: shape, scalars: rs)
        let w = Tensor.randomNormal(shape, seed: 4)
        func run(_ fused: Bool) -> (y: [Float], dx: [Float], dr: [Float]) {
            var y = Tensor(0)
            let (_, g) = valueAndGradient(at: [x, r]) { t in
                let (a, b) = (t[0].withChannelBlock(block), t[1].withChannelBlock(block))
                y = fused ? addReLU(a, residual: b) : relu(a + b)
                return (y.withChannelBlock(1) * w).sum()
            }
            return (y.withChannelBlock(1).scalars, g[0].scalars, g[1].scalars)
        }
        let (f, c) = (run(true), run(false))
        let same: ([Float], [Float]) -> Bool = { a, b in
            a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
        }
        #expect(f.y[3].isNaN)
        #expect(same(f.y, c.y), "output, block \(block)")
        #expect(same(f.dx, c.dx), "x's gradient, block \(block)")
        #expect(same(f.dr, c.dr), "the residual's gradient, block \(block)")
        // Hand-computed: both gradients are w except where x + r ≤ 0 (0 at the kink; the NaN
        // passes it, as PyTorch's threshold_backward).
        let expected = (0..<xs.count).map { (xs[$0] + rs[$0] <= 0) ? 0 : w.scalars[$0] }
        #expect(f.dx == expected && f.dr == expected)
    }
}

/// In training on blocked activations the fused SE end leaves x's gradient as dr times the
/// excitation per plane over dr's own storage; the squeeze's gradient joins it as a per-plane
/// offset, and the batch norm that produced x reads that form directly. Against the composed ops
/// (each written out in full), the batch norm's three gradients and the residual's must agree bit
/// for bit, and x's gradient, handed to a caller, must be written out.
@Suite("SE gradient kept per plane")
struct SEGradientPerPlaneTests {
    @Test(arguments: [8, 16])
    func batchNormReadsTheSEGradientAsItIs(_ block: Int) {
        let shape = [2, 32, 5, 3]
        let x = Tensor.randomNormal(shape, seed: 41).inLayout(block)
        let r = Tensor.randomNormal(shape, seed: 42).inLayout(block)
        let w = Tensor.randomUniform([32], low: 0.5, high: 1.5, seed: 43), b = Tensor.randomNormal([32], seed: 44)
        let a = Tensor.randomNormal([2, 32, 1, 1], seed: 45), weights = Tensor.randomNormal(shape, seed: 46)
        for fuseReLU in [false, true] {
            func net(_ t: [Tensor], fused: Bool) -> Tensor {
                var rm = Tensor.zeros([32]), rv = Tensor.ones([32])
                let y = batchNorm(t[0], weight: t[1], bias: t[2], runningMean: &rm, runningVar: &rv, training: true,
                                  fusedReLU: fuseReLU)
                let s = sigmoid(y.mean(axes: [2, 3], keepDims: true) * a)
                let out = fused ? seScaleAddReLU(y, scale: s, residual: t[3]) : relu(y * s + t[3])
                return (out * weights).sum()
            }
            let (vf, gf) = valueAndGradient(at: [x, w, b, r]) { net($0, fused: true) }
            let (vc, gc) = valueAndGradient(at: [x, w, b, r]) { net($0, fused: false) }
            #expect(vf.item == vc.item)
            for (i, name) in ["x", "weight", "bias", "residual"].enumerated() {
                #expect(gf[i].shape == gc[i].shape, "\(name)")
                #expect(gf[i].scalars == gc[i].scalars, "block \(block), relu \(fuseReLU): \(name) gradient differs")
            }
        }
        // The SE block's own input as the caller's variable: its gradient comes back written out.
        let (_, g) = valueAndGradient(at: [x, r]) { t in
            let s = sigmoid(t[0].mean(axes: [2, 3], keepDims: true) * a)
            return (seScaleAddReLU(t[0], scale: s, residual: t[1]) * weights).sum()
        }
        let (_, h) = valueAndGradient(at: [x, r]) { t in
            let s = sigmoid(t[0].mean(axes: [2, 3], keepDims: true) * a)
            return (relu(t[0] * s + t[1]) * weights).sum()
        }
        #expect(g[0].scalars == h[0].scalars && g[1].scalars == h[1].scalars)
    }
}
