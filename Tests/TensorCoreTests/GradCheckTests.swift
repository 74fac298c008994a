// Every op's tape gradient against central finite differences on small random inputs.

import Testing
import TensorCore
import _TestSupport

@Suite("Finite differences")
struct GradCheckTests {
    func randn(_ shape: [Int], _ seed: UInt64, std: Float = 1) -> Tensor { Tensor.randomNormal(shape, std: std, seed: seed) }

    @Test func conv2dPlainGroupedStridedDilated() {
        checkGradients(at: [randn([2, 4, 5, 6], 1), randn([6, 4, 3, 3], 2, std: 0.3), randn([6], 3)], "conv k3 p1") {
            conv2d($0[0], weight: $0[1], bias: $0[2], padding: (1, 1))
        }
        checkGradients(at: [randn([1, 4, 7, 7], 4), randn([4, 2, 3, 3], 5, std: 0.3)], "conv groups 2 stride 2") {
            conv2d($0[0], weight: $0[1], stride: (2, 2), padding: (1, 1), groups: 2)
        }
        checkGradients(at: [randn([1, 3, 6, 6], 6), randn([3, 1, 3, 3], 7, std: 0.3)], "depthwise") {
            conv2d($0[0], weight: $0[1], padding: (1, 1), groups: 3)
        }
        checkGradients(at: [randn([1, 2, 7, 7], 8), randn([3, 2, 3, 3], 9, std: 0.3)], "dilation 2") {
            conv2d($0[0], weight: $0[1], padding: (2, 2), dilation: (2, 2))
        }
    }

    @Test func batchNormTrainAndEval() {
        var rm = Tensor.zeros([3]), rv = Tensor.ones([3])
        checkGradients(at: [randn([3, 3, 2, 3], 10), randn([3], 11), randn([3], 12)], "bn train") {
            batchNorm($0[0], weight: $0[1], bias: $0[2], runningMean: &rm, runningVar: &rv, training: true)
        }
        var em = randn([3], 13, std: 0.1), ev = Tensor.ones([3]).scaled(by: 1.5)
        checkGradients(at: [randn([2, 3, 2, 2], 14), randn([3], 15), randn([3], 16)], "bn eval") {
            batchNorm($0[0], weight: $0[1], bias: $0[2], runningMean: &em, runningVar: &ev, training: false)
        }
    }

    /// BatchNorm + ReLU fused (training): finite differences, and the same values and gradients as
    /// the two ops it replaces (each of which matches PyTorch's fixtures).
    @Test func batchNormFusedReLU() {
        var rm = Tensor.zeros([3]), rv = Tensor.ones([3])
        checkGradients(at: [randn([3, 3, 2, 3], 17), randn([3], 18), randn([3], 19)], "bn+relu train") {
            batchNorm($0[0], weight: $0[1], bias: $0[2], runningMean: &rm, runningVar: &rv, training: true, fusedReLU: true)
        }
        let inputs = [randn([4, 5, 6, 7], 30, std: 2), randn([5], 31), randn([5], 32)]
        let dy = randn([4, 5, 6, 7], 33)
        var (rm1, rv1, rm2, rv2) = (Tensor.zeros([5]), Tensor.ones([5]), Tensor.zeros([5]), Tensor.ones([5]))
        let (y1, g1) = forwardBackward(inputs, seed: dy) {
            batchNorm($0[0], weight: $0[1], bias: $0[2], runningMean: &rm1, runningVar: &rv1, training: true, fusedReLU: true)
        }
        let (y2, g2) = forwardBackward(inputs, seed: dy) {
            relu(batchNorm($0[0], weight: $0[1], bias: $0[2], runningMean: &rm2, runningVar: &rv2, training: true))
        }
        #expect(y1.scalars == y2.scalars)
        #expect(rm1.scalars == rm2.scalars && rv1.scalars == rv2.scalars)
        for (a, b) in zip(g1, g2) { expectClose(a.scalars, b.scalars, rtol: 1e-5, atol: 1e-6, "fused bn+relu gradient") }
    }

    @Test func activations() {
        let x = randn([2, 3, 4, 5], 20, std: 2)
        checkGradients(at: [x], "relu") { relu($0[0]) }
        checkGradients(at: [x], "sigmoid") { sigmoid($0[0]) }
        checkGradients(at: [x], "tanh") { tanh($0[0]) }
        // Kept away from the kinks at ±3, where a finite difference straddles the corner.
        checkGradients(at: [randn([2, 3, 4, 5], 22, std: 0.8)], "hardSigmoid") { hardSigmoid($0[0]) }
        checkGradients(at: [randn([2, 3, 4, 5], 24, std: 0.8).scaled(by: 1, adding: 3)], "relu6") { relu6($0[0]) }
        checkGradients(at: [randn([2, 3, 4, 5], 25, std: 0.8)], "hardSwish") { hardSwish($0[0]) }
    }

    @Test func pooling() {
        let x = randn([1, 2, 7, 8], 21)
        // Max pooling: distinct values 0.05 apart, so no step of the finite difference swaps a maximum.
        var g = SeededGenerator(seed: 23)
        let spaced = Tensor(shape: [1, 2, 7, 8], scalars: (0..<112).map { Float($0) * 0.05 - 2.8 }.shuffled(using: &g))
        checkGradients(at: [spaced], "max k3 s2 p1 ceil") { maxPool2d($0[0], kernel: (3, 3), stride: (2, 2), padding: (1, 1), ceilMode: true) }
        checkGradients(at: [x], "avg k3 s2 ceil excl") {
            avgPool2d($0[0], kernel: (3, 3), stride: (2, 2), padding: (1, 1), ceilMode: true, countIncludePad: false)
        }
        checkGradients(at: [x], "avg k2") { avgPool2d($0[0], kernel: (2, 2)) }
        checkGradients(at: [x], "global avg") { globalAvgPool2d($0[0]) }
        checkGradients(at: [x], "adaptive avg 3×5") { adaptiveAvgPool2d($0[0], outputSize: (3, 5)) }
        checkGradients(at: [spaced], "global max") { globalMaxPool2d($0[0]) }
    }

    @Test func linearAndMatmul() {
        checkGradients(at: [randn([3, 5], 30), randn([4, 5], 31), randn([4], 32)], "linear") { linear($0[0], weight: $0[1], bias: $0[2]) }
        checkGradients(at: [randn([3, 5], 33), randn([5, 2], 34)], "matmul") { matmul($0[0], $0[1]) }
    }

    @Test func broadcastArithmetic() {
        let a = randn([2, 3, 2, 2], 40), b = randn([2, 3, 1, 1], 41), c = randn([1, 3, 1, 1], 42), d = randn([3, 1, 2], 43)
        checkGradients(at: [a, b], "mul N×C×1×1") { $0[0] * $0[1] }
        checkGradients(at: [a, c], "mul 1×C×1×1") { $0[0] * $0[1] }
        checkGradients(at: [a, d], "add general") { $0[0] + $0[1] }
        checkGradients(at: [a, b], "sub") { $0[0] - $0[1] }
        checkGradients(at: [a, b.scaled(by: 0.2, adding: 2)], "div") { $0[0] / $0[1] }
    }

    @Test func layoutOps() {
        checkGradients(at: [randn([2, 2, 2, 3], 50), randn([2, 3, 2, 3], 51)], "concat") { concatChannels($0) }
        checkGradients(at: [randn([1, 6, 2, 2], 52)], "shuffle") { channelShuffle($0[0], groups: 3) }
        checkGradients(at: [randn([2, 3, 4], 53)], "reshape") { $0[0].reshaped([6, 4]) }
        checkGradients(at: [randn([2, 3, 4], 54)], "mean/sum") { $0[0].mean(axes: [1], keepDims: true) * $0[0].sum(axes: [0]) }
    }

    @Test func losses() {
        checkGradients(at: [randn([3, 5], 60)], "logSoftmax") { logSoftmax($0[0]) }
        checkGradients(at: [randn([4, 6], 61)], "cross-entropy ε=0.1") { crossEntropy(logits: $0[0], targets: [0, 5, 2, 2], labelSmoothing: 0.1) }
    }

    @Test func dropoutUsesOneMask() {
        // The same seed gives the same mask on every evaluation, so the function is fixed.
        checkGradients(at: [randn([4, 5], 70)], "dropout") { x in
            var g = SeededGenerator(seed: 5)
            return dropout(x[0], p: 0.3, generator: &g)
        }
    }

    @Test func squeezeExcitationBlock() {
        checkGradients(at: [randn([2, 8, 3, 3], 80), randn([2, 8, 1, 1], 81, std: 0.5), randn([2], 82),
                            randn([8, 2, 1, 1], 83, std: 0.5), randn([8], 84)], "SE block") { t in
            let s = sigmoid(conv2d(relu(conv2d(globalAvgPool2d(t[0]), weight: t[1], bias: t[2])), weight: t[3], bias: t[4]))
            return relu(t[0] * s + t[0])
        }
    }
}

/// The channel-blocked kernels (Kernels/Blocked.swift) against finite differences: each op reads
/// its input through `withChannelBlock`, so the tape gradient flows through the blocked kernels.
/// No ReLU kink lies within the step of these inputs (a fused ReLU's masking is checked against
/// PyTorch in BlockedLayoutTests).
@Suite("Finite differences, channel-blocked")
struct BlockedGradCheckTests {
    func randn(_ shape: [Int], _ seed: UInt64, std: Float = 1) -> Tensor { Tensor.randomNormal(shape, std: std, seed: seed) }

    @Test(arguments: [8, 16]) func batchNormReLUPoolingAndConvolution(block b: Int) {
        var rm = Tensor.zeros([16]), rv = Tensor.ones([16])
        checkGradients(at: [randn([2, 16, 2, 3], 40), randn([16], 41), randn([16], 42)], "bn train, block \(b)") {
            batchNorm($0[0].withChannelBlock(b), weight: $0[1], bias: $0[2], runningMean: &rm, runningVar: &rv, training: true)
        }
        var em = randn([16], 43, std: 0.1), ev = Tensor.ones([16]).scaled(by: 1.5)
        checkGradients(at: [randn([2, 16, 2, 2], 44), randn([16], 45), randn([16], 46)], "bn eval, block \(b)") {
            batchNorm($0[0].withChannelBlock(b), weight: $0[1], bias: $0[2], runningMean: &em, runningVar: &ev, training: false)
        }
        // Distinct values (a permutation of a grid) so that no window holds a near-tie.
        let spaced = Tensor(shape: [1, 16, 4, 4], scalars: (0..<256).map { Float(($0 * 97) % 256) / 16 })
        checkGradients(at: [spaced], "max pool, block \(b)") {
            maxPool2d($0[0].withChannelBlock(b), kernel: (3, 3), stride: (2, 2), padding: (1, 1))
        }
        checkGradients(at: [randn([1, 16, 4, 4], 47), randn([16, 16, 3, 3], 48, std: 0.2)], "conv, block \(b)") {
            conv2d($0[0].withChannelBlock(b), weight: $0[1], padding: (1, 1))
        }
    }

    @Test(arguments: [8, 16]) func seSqueezeScaleAndResidual(block b: Int) {
        // x·s + r with s the squeeze's own function of x (fan-out through both paths); the
        // residual keeps the sum positive.
        let inputs = [randn([2, 16, 3, 3], 50), randn([2, 16, 3, 3], 51).scaled(by: 1, adding: 6)]
        checkGradients(at: inputs, "composed SE end of block, block \(b)") {
            let x = $0[0].withChannelBlock(b)
            return relu(x * sigmoid(globalAvgPool2d(x)) + $0[1].withChannelBlock(b))
        }
        checkGradients(at: inputs, "fused SE end of block, block \(b)") {
            let x = $0[0].withChannelBlock(b)
            return seScaleAddReLU(x, scale: sigmoid(globalAvgPool2d(x)), residual: $0[1].withChannelBlock(b))
        }
    }
}
