// The channel-blocked kernels (nChw8c and nChw16c, Kernels/Blocked.swift) against PyTorch: each
// op runs on inputs stored in each blocked layout, and its output and gradients must match the
// fixtures as the NCHW path does — and must come out blocked (the blocked kernel ran, not the
// NCHW fallback that every layout-unaware op takes).

import Kernels
import Testing
import TensorCore
import _TestSupport

@Suite("Channel-blocked layout")
struct BlockedLayoutTests {
    static let blocks = [8, 16]

    @Test func layoutConversionRoundTripsAndKeepsValues() {
        let x = Tensor.randomNormal([2, 32, 5, 3], seed: 7)
        for b in Self.blocks {
            let y = x.inLayout(b)
            #expect(y.channelBlock == b)
            #expect(y.scalars == x.scalars)
            // Element (n, c, s) of the storage sits at ((n·C/B + c/B)·S + s)·B + c mod B.
            y.withUnsafeStorage { p in
                #expect(p[((1 * (32 / b) + 17 / b) * 15 + 4) * b + 17 % b] == x[1, 17, 1, 1])
            }
            #expect(y.inLayout(1).channelBlock == 1)
            #expect(y.inLayout(1).scalars == x.scalars)
            // Layout-unaware code sees NCHW: reshape, subscript, mutation.
            #expect(y.reshaped([2, -1]).scalars == x.scalars)
            var z = y
            z[0, 3, 2, 1] = 42
            #expect(z.channelBlock == 1 && z[0, 3, 2, 1] == 42)
        }
    }

    @Test func batchNormMatchesPyTorch() throws {
        let fx = try Fixture("blocked_layout")
        for c in fx.cases where c.hasPrefix("bn_") {
            let p = fx.params(c)
            let training = p["training"] as? Bool ?? true, relu = p["relu"] as? Bool ?? false
            for b in Self.blocks {
                var rm = fx.require(c, "running_mean"), rv = fx.require(c, "running_var")
                let x = fx.require(c, "x").inLayout(b)
                let (y, g) = forwardBackward([x, fx.require(c, "weight"), fx.require(c, "bias")],
                                             seed: fx.require(c, "dy").inLayout(b)) { t in
                    batchNorm(t[0], weight: t[1], bias: t[2], runningMean: &rm, runningVar: &rv, training: training,
                              fusedReLU: relu)
                }
                #expect(y.channelBlock == b, "\(c) block \(b): output layout")
                #expect(g[0].channelBlock == b, "\(c) block \(b): gradient layout")
                checkCase(fx, c, output: y, gradients: [("dx", g[0]), ("dweight", g[1]), ("dbias", g[2])])
                expectClose(rm, fx.require(c, "running_mean_out"), "\(c) block \(b) running mean")
                expectClose(rv, fx.require(c, "running_var_out"), "\(c) block \(b) running var")
            }
        }
    }

    @Test func synchronisedBatchNormMatchesPlainBitForBit() throws {
        // With a reducer that leaves its sums unchanged, the synchronised phases are the plain
        // kernel's arithmetic (data-parallel training with one process depends on it).
        let fx = try Fixture("blocked_layout")
        for b in Self.blocks {
            let x = fx.require("bn_train", "x").inLayout(b)
            let w = fx.require("bn_train", "weight"), bias = fx.require("bn_train", "bias")
            var results: [[[Float]]] = []
            for synchronised in [false, true] {
                var rm = fx.require("bn_train", "running_mean"), rv = fx.require("bn_train", "running_var")
                let (y, g) = forwardBackward([x, w, bias], seed: fx.require("bn_train", "dy")) { t in
                    batchNorm(t[0], weight: t[1], bias: t[2], runningMean: &rm, runningVar: &rv, training: true,
                              reducer: synchronised ? { _ in } : nil)
                }
                results.append([y.scalars, rm.scalars, rv.scalars] + g.map(\.scalars))
            }
            #expect(results[0] == results[1], "block \(b)")
        }
    }

    @Test func maxPoolMatchesPyTorch() throws {
        let fx = try Fixture("blocked_layout")
        let c = "maxpool_k3_s2_p1"
        for b in Self.blocks {
            let (y, g) = forwardBackward([fx.require(c, "x").inLayout(b)], seed: fx.require(c, "dy")) { t in
                maxPool2d(t[0], kernel: (3, 3), stride: (2, 2), padding: (1, 1))
            }
            #expect(y.channelBlock == b && g[0].channelBlock == b, "block \(b)")
            checkCase(fx, c, output: y, gradients: [("dx", g[0])])
        }
    }

    @Test func averagePoolMatchesPyTorch() throws {
        let fx = try Fixture("blocked_layout")
        for c in fx.cases where c.hasPrefix("avgpool") {
            let p = fx.params(c)
            for b in Self.blocks {
                let (y, g) = forwardBackward([fx.require(c, "x").inLayout(b)], seed: fx.require(c, "dy")) { t in
                    avgPool2d(t[0], kernel: pair(p["kernel"]), stride: pair(p["stride"]), padding: pair(p["padding"]),
                              ceilMode: p["ceil_mode"] as? Bool ?? false, countIncludePad: p["count_include_pad"] as? Bool ?? true)
                }
                // A map stays blocked; a 1×1 output is labelled NCHW (the same storage order).
                #expect(y.channelBlock == (y.shape[2] * y.shape[3] > 1 ? b : 1) && g[0].channelBlock == b, "\(c) block \(b)")
                checkCase(fx, c, output: y, gradients: [("dx", g[0])])
            }
        }
    }

    @Test func maxPoolKeepsNaNAndFirstMaximum() {
        // PyTorch's rules: a NaN in the window wins; on ties the first maximum gets the gradient.
        var x = Tensor.zeros([1, 16, 2, 2])
        x[0, 3, 0, 1] = .nan
        x[0, 5, 1, 0] = 2
        x[0, 5, 1, 1] = 2
        for b in Self.blocks {
            let (y, g) = forwardBackward([x.inLayout(b)], seed: Tensor.ones([1, 16, 1, 1])) { t in
                maxPool2d(t[0], kernel: (2, 2))
            }
            #expect(y[0, 3, 0, 0].isNaN && y[0, 5, 0, 0] == 2 && y[0, 0, 0, 0] == 0)
            #expect(g[0][0, 3, 0, 1] == 1 && g[0][0, 5, 1, 0] == 1 && g[0][0, 5, 1, 1] == 0 && g[0][0, 0, 0, 0] == 1)
        }
    }

    @Test func convolutionReadsAndWritesBlockedActivations() throws {
        let fx = try Fixture("blocked_layout")
        for c in fx.cases where c.hasPrefix("conv_") {
            let p = fx.params(c)
            for b in Self.blocks {
                let (y, g) = forwardBackward([fx.require(c, "x").inLayout(b), fx.require(c, "w")],
                                             seed: fx.require(c, "dy")) { t in
                    conv2d(t[0], weight: t[1], stride: pair(p["stride"]), padding: pair(p["padding"]))
                }
                // The output keeps this machine's block (oneDNN's preferred one), the input
                // gradient the input's.
                #expect(y.channelBlock == activationBlock, "\(c) block \(b): output layout")
                #expect(g[0].channelBlock == b, "\(c) block \(b): gradient layout")
                checkConvolution(fx, c, y, [("dx", g[0]), ("dw", g[1])], "block \(b)")
            }
        }
    }

    /// A convolution fixture case, with the absolute tolerance scaled to the result: the autotuner
    /// may pick oneDNN's Winograd F(4×4, 3×3), whose error is bounded relative to the result's
    /// largest magnitude (5e-6 of it, as ConvCandidateAccuracyTests checks).
    func checkConvolution(_ fx: Fixture, _ c: String, _ y: Tensor, _ grads: [(String, Tensor)], _ label: String) {
        for (name, actual, tol) in [("y", y, forwardTolerance)] + grads.map({ ($0.0, $0.1, gradientTolerance) }) {
            let expected = fx.require(c, name)
            let scale = expected.scalars.map(abs).max() ?? 0
            expectClose(actual, expected, rtol: tol.rtol, atol: max(tol.atol, 5e-6 * scale), "\(c) \(label) \(name)")
        }
    }

    @Test func groupedAndDepthwiseConvolutionsOnBlockedInput() throws {
        // The conv2d fixtures whose channels a block of 8 divides (grouped, depthwise, 1×1, wide).
        let fx = try Fixture("conv2d")
        var checked = 0
        for c in fx.cases {
            let p = fx.params(c)
            let x = fx.require(c, "x")
            guard x.shape[1] % 8 == 0 else { continue }
            let hasBias = p["bias"] as? Bool ?? false
            var inputs = [x.inLayout(8), fx.require(c, "w")]
            if hasBias { inputs.append(fx.require(c, "b")) }
            let (y, g) = forwardBackward(inputs, seed: fx.require(c, "dy")) { t in
                conv2d(t[0], weight: t[1], bias: hasBias ? t[2] : nil, stride: pair(p["stride"]),
                       padding: pair(p["padding"]), dilation: pair(p["dilation"]), groups: p["groups"] as? Int ?? 1)
            }
            #expect(g[0].channelBlock == 8, "\(c): gradient layout")
            var grads = [("dx", g[0]), ("dw", g[1])]
            if hasBias { grads.append(("db", g[2])) }
            checkConvolution(fx, c, y, grads, "block 8")
            checked += 1
        }
        #expect(checked >= 4)
    }

    /// A plain residual block's end in the convolution's epilogue (`conv2dAddReLU`, inference):
    /// relu(conv(x) + b + r) as the composed ops give it, in NCHW and in the blocked layout the
    /// machine's kernels use, 1×1 and 3×3 with stride 2; and no fused path while gradients are
    /// recorded.
    @Test func convolutionWithResidualAddAndReLUInItsEpilogue() {
        for block in [1, activationBlock] {
            for (k, stride, pad) in [(1, 1, 0), (3, 2, 1)] {
                let x = Tensor.randomNormal([2, 32, 9, 9], seed: 81).inLayout(block)
                let w = Tensor.randomNormal([48, 32, k, k], std: 0.2, seed: 82)
                let b = Tensor.randomNormal([48], std: 0.5, seed: 83)
                let ho = (9 + 2 * pad - k) / stride + 1
                let r = Tensor.randomNormal([2, 48, ho, ho], seed: 84)
                let composed = relu(conv2d(x, weight: w, bias: b, stride: (stride, stride), padding: (pad, pad)) + r)
                let outBlock = conv2d(x, weight: w, bias: b, stride: (stride, stride), padding: (pad, pad)).channelBlock
                guard let fused = conv2dAddReLU(x, weight: w, bias: b, residual: r.inLayout(outBlock),
                                                stride: (stride, stride), padding: (pad, pad)) else {
                    Issue.record("no epilogue kernel for k\(k) s\(stride), block \(block)")
                    continue
                }
                #expect(fused.shape == composed.shape && fused.isRectified)
                // The epilogue's kernel may sum in another order than the composed convolution's
                // (outputs of magnitude up to about 5 here, cancelled by the residual near 0).
                expectClose(fused.scalars, composed.scalars, rtol: 1e-5, atol: 1e-5, "k\(k) s\(stride) block \(block)")
                #expect(fused.scalars.contains(0) && fused.scalars.allSatisfy { $0 >= 0 })
            }
        }
        let x = Tensor.randomNormal([1, 16, 4, 4], seed: 85), w = Tensor.randomNormal([16, 16, 1, 1], seed: 86)
        let recorded = valueAndGradient(at: x) { t in
            #expect(conv2dAddReLU(t, weight: w, bias: nil, residual: Tensor.zeros([1, 16, 4, 4]).inLayout(t.channelBlock)) == nil)
            return t.sum()
        }
        #expect(recorded.gradient.shape == x.shape)
    }

    @Test func seBlockMatchesPyTorch() throws {
        // The SE squeeze, scale and residual add + ReLU, composed and fused, on blocked x and
        // residual (the fixture's 32 and 64 channels).
        let fx = try Fixture("se_block")
        let names = ["x", "residual", "fc1_w", "fc1_b", "fc2_w", "fc2_b"]
        for c in fx.cases {
            for b in Self.blocks {
                for fused in [false, true] {
                    let inputs = names.map { fx.require(c, $0) }
                    let (y, g) = forwardBackward([inputs[0].inLayout(b), inputs[1].inLayout(b)] + inputs[2...],
                                                 seed: fx.require(c, "dy")) { t in
                        let z = globalAvgPool2d(t[0])
                        let s = sigmoid(conv2d(relu(conv2d(z, weight: t[2], bias: t[3])), weight: t[4], bias: t[5]))
                        return fused ? seScaleAddReLU(t[0], scale: s, residual: t[1]) : relu(t[0] * s + t[1])
                    }
                    #expect(y.channelBlock == b && g[0].channelBlock == b, "\(c) block \(b) fused \(fused)")
                    checkCase(fx, c, output: y, gradients: zip(names, g).map { ("d" + $0, $1) })
                }
            }
        }
    }
}

extension BlockedLayoutTests {
    @Test func concatenationMatchesPyTorch() throws {
        let fx = try Fixture("blocked_layout")
        let names = ["a", "b", "c"]
        for b in Self.blocks {
            let (y, g) = forwardBackward(names.map { fx.require("concat", $0).inLayout(b) }, seed: fx.require("concat", "dy")) {
                concatChannels($0)
            }
            #expect(y.channelBlock == b && g.allSatisfy { $0.channelBlock == b }, "block \(b)")
            checkCase(fx, "concat", output: y, gradients: zip(names, g).map { ("d" + $0, $1) })
        }
        // Parts in different layouts are read as NCHW.
        let mixed = concatChannels([fx.require("concat", "a").inLayout(8), fx.require("concat", "b"), fx.require("concat", "c")])
        #expect(mixed.channelBlock == 1)
        expectClose(mixed, fx.require("concat", "y"), "mixed layouts")
    }
}
