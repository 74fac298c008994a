// Batch normalisation (Ioffe & Szegedy 2015) as PyTorch's `F.batch_norm` on N×C×H×W (or N×C).

import Kernels

/// Sums per-channel statistics in place across the processes that share a batch (synchronised
/// batch norm): on return every element holds the sum of that element over all processes. Each
/// process must call it the same number of times, in the same order, with equal lengths.
public typealias BatchNormStatisticsReducer = (UnsafeMutableBufferPointer<Double>) -> Void

/// Normalises each channel of `x` [N, C, …] and applies `weight`·x̂ + `bias` ([C] each).
///
/// Training: batch mean and biased variance; the running statistics are updated in place with
/// `momentum` (new = (1 − m)·old + m·batch), the variance term unbiased (×M/(M − 1), M = N·H·W).
/// Evaluation: the running statistics. Gradients: input, weight, bias (in both modes).
///
/// With `reducer` (training mode only), `x` is one process's part of a batch split across
/// processes, and the statistics are those of the whole batch: the forward pass sums Σx and the
/// count, then Σ(x − mean)², over the processes; the backward pass sums Σdy and Σdy·(x − mean), so
/// the input gradient is the whole batch's. The weight and bias gradients stay local sums (the
/// data-parallel gradient reduction adds them up). With a reducer that leaves its buffer unchanged
/// the results equal those without one, bit for bit.
///
/// `fusedReLU` returns relu(batchNorm(x)): in training mode (without a reducer) the ReLU runs in
/// the normalisation pass and its backward in the batch-norm backward pass (one pass over the
/// activations fewer each way); otherwise it is the two ops.
public func batchNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, runningMean: inout Tensor, runningVar: inout Tensor,
                      training: Bool, momentum: Float = 0.1, eps: Float = 1e-5,
                      reducer: BatchNormStatisticsReducer? = nil, fusedReLU: Bool) -> Tensor {
    guard fusedReLU, training, reducer == nil else {
        let y = batchNorm(x, weight: weight, bias: bias, runningMean: &runningMean, runningVar: &runningVar,
                          training: training, momentum: momentum, eps: eps, reducer: reducer)
        return fusedReLU ? relu(y) : y
    }
    return normalize(x, weight: weight, bias: bias, runningMean: &runningMean, runningVar: &runningVar, training: true,
                     momentum: momentum, eps: eps, reducer: nil, relu: true)
}

public func batchNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, runningMean: inout Tensor, runningVar: inout Tensor,
                      training: Bool, momentum: Float = 0.1, eps: Float = 1e-5,
                      reducer: BatchNormStatisticsReducer? = nil) -> Tensor {
    normalize(x, weight: weight, bias: bias, runningMean: &runningMean, runningVar: &runningVar, training: training,
              momentum: momentum, eps: eps, reducer: reducer, relu: false)
}

private func normalize(_ x: Tensor, weight: Tensor?, bias: Tensor?, runningMean: inout Tensor, runningVar: inout Tensor,
                       training: Bool, momentum: Float, eps: Float, reducer: BatchNormStatisticsReducer?, relu: Bool) -> Tensor {
    precondition(!relu || (training && reducer == nil), "batchNorm: the fused ReLU runs in plain training mode only")
    let op = "batchNorm"
    if x.rank < 2 { shapeFailure(op, "input \(x.shape) must be at least 2-D (N×C…)") }
    let (n, c) = (x.shape[0], x.shape[1])
    let s = x.shape.dropFirst(2).reduce(1, *)
    for (name, t) in [("weight", weight), ("bias", bias), ("runningMean", runningMean), ("runningVar", runningVar)] {
        if let t, t.shape != [c] { shapeFailure(op, "input \(x.shape) has \(c) channels but \(name) has shape \(t.shape)") }
    }
    if training && n * s < 2 { shapeFailure(op, "input \(x.shape) has one value per channel; training needs more than one") }
    // A channel-blocked input is normalised in its layout (B channels at a time).
    let block = x.rank == 4 ? x.channelBlock : 1
    var out = Tensor(uninitializedShape: x.shape, channelBlock: block)
    var mean: Tensor, invStd: Tensor
    var count = n * s  // values per channel over all processes
    if training, let reducer {
        mean = Tensor(uninitializedShape: [c]); invStd = Tensor(uninitializedShape: [c])
        var stats = [Double](repeating: 0, count: c + 1)  // Σx per channel, then the count
        var deviations = [Double](repeating: 0, count: c)
        x.withUnsafeStorage { px in
            stats.withUnsafeMutableBufferPointer { st in
                if block > 1 {
                    batchNormChannelSumsBlocked(sums: st.baseAddress!, inp: px, n: n, c: c, s: s, block: block)
                } else {
                    batchNormChannelSums(sums: st.baseAddress!, inp: px, n: n, c: c, s: s)
                }
                st[c] = Double(count)
                reducer(st)
                count = Int(st[c])
                for ch in 0..<c { st[ch] /= Double(count) }  // the global mean
                deviations.withUnsafeMutableBufferPointer { dv in
                    if block > 1 {
                        batchNormChannelSquaredDeviationsBlocked(out: dv.baseAddress!, inp: px, mean: st.baseAddress!,
                                                                 n: n, c: c, s: s, block: block)
                    } else {
                        batchNormChannelSquaredDeviations(out: dv.baseAddress!, inp: px, mean: st.baseAddress!, n: n, c: c, s: s)
                    }
                    reducer(dv)
                }
            }
        }
        if count < 2 { shapeFailure(op, "the synchronised batch has one value per channel; training needs more than one") }
        out.withUnsafeMutableStorage { po in mean.withUnsafeMutablePointer { pm in invStd.withUnsafeMutablePointer { pi in
            runningMean.withUnsafeMutablePointer { rm in runningVar.withUnsafeMutablePointer { rv in
                x.withUnsafeStorage { px in optionalPointer(weight) { pw in optionalPointer(bias) { pb in
                    if block > 1 {
                        batchNormApplyStatisticsBlocked(out: po, saveMean: pm, saveInvStd: pi, runningMean: rm, runningVar: rv,
                                                        inp: px, weight: pw, bias: pb, mean: stats, squaredDeviations: deviations,
                                                        count: count, n: n, c: c, s: s, block: block, eps: eps, momentum: momentum)
                    } else {
                        batchNormApplyStatistics(out: po, saveMean: pm, saveInvStd: pi, runningMean: rm, runningVar: rv, inp: px,
                                                 weight: pw, bias: pb, mean: stats, squaredDeviations: deviations, count: count,
                                                 n: n, c: c, s: s, eps: eps, momentum: momentum)
                    }
                } } }
            } }
        } } }
    } else if training {
        // In x's storage layout (`block` is its channel block, 1 for NCHW).
        mean = Tensor(uninitializedShape: [c]); invStd = Tensor(uninitializedShape: [c])
        // On blocked activations the pass that writes the output also sums its planes (the SE
        // squeeze that often follows then reads no memory).
        var planeSums = [Float](repeating: 0, count: block > 1 ? n * c : 0)
        out.withUnsafeMutableStorage { po in mean.withUnsafeMutablePointer { pm in invStd.withUnsafeMutablePointer { pi in
            runningMean.withUnsafeMutablePointer { rm in runningVar.withUnsafeMutablePointer { rv in
                x.withUnsafeStorage { px in optionalPointer(weight) { pw in optionalPointer(bias) { pb in
                    if block > 1 {
                        planeSums.withUnsafeMutableBufferPointer { ps in
                            batchNormTrainForwardBlocked(out: po, saveMean: pm, saveInvStd: pi, runningMean: rm, runningVar: rv,
                                                         inp: px, weight: pw, bias: pb, n: n, c: c, s: s, block: block, eps: eps,
                                                         momentum: momentum, relu: relu, planeSums: ps.baseAddress!)
                        }
                    } else {
                        batchNormTrainForward(out: po, saveMean: pm, saveInvStd: pi, runningMean: rm, runningVar: rv,
                                              inp: px, weight: pw, bias: pb, n: n, c: c, s: s, eps: eps, momentum: momentum,
                                              relu: relu)
                    }
                } } }
            } }
        } } }
        if block > 1 { out.cachedPlaneSums = (out.shape, block, planeSums) }
    } else if block > 1 {
        // The NCHW kernel's per-channel scale and shift, in the same Float arithmetic.
        let (rm, rv) = (runningMean.scalars, runningVar.scalars)
        let w = weight?.scalars, b = bias?.scalars
        var scale = [Float](repeating: 0, count: c), shift = [Float](repeating: 0, count: c)
        for ch in 0..<c {
            let invStd = 1 / (rv[ch] + eps).squareRoot()
            scale[ch] = (w?[ch] ?? 1) * invStd
            shift[ch] = (b?[ch] ?? 0) - rm[ch] * scale[ch]
        }
        out.withUnsafeMutableStorage { po in x.withUnsafeStorage { px in
            blockedAffine(out: po, inp: px, scale: scale, shift: shift, n: n, c: c, s: s, block: block)
        } }
        mean = runningMean.detached
        invStd = Tensor(shape: [c], scalars: runningVar.scalars.map { 1 / ($0 + eps).squareRoot() })
    } else {
        out.withUnsafeMutablePointer { po in runningMean.withUnsafePointer { rm in runningVar.withUnsafePointer { rv in
            x.withUnsafePointer { px in optionalPointer(weight) { pw in optionalPointer(bias) { pb in
                batchNormEvalForward(out: po, inp: px, runningMean: rm, runningVar: rv, weight: pw, bias: pb, n: n, c: c, s: s, eps: eps)
            } } }
        } } }
        mean = runningMean.detached
        invStd = Tensor(shape: [c], scalars: runningVar.scalars.map { 1 / ($0 + eps).squareRoot() })
    }
    var inputs = [x]
    if let weight { inputs.append(weight) }
    if let bias { inputs.append(bias) }
    let xs = x.detached, ws = weight?.detached, bs = bias?.detached
    let hasW = weight != nil
    let syncReducer = training ? reducer : nil, syncCount = count
    // The ReLU's mask for backward: on blocked activations recomputed from x with the forward's
    // scale and shift (one stream of memory fewer to read), otherwise read from the output.
    let reluOutput: Tensor? = relu && block == 1 ? out.detached : nil
    GradientTape.record(&out, inputs, takesPlaneAffine: true) { g, need in
        // A gradient kept as a per-plane scale and offset of another tensor (the SE scale's) is
        // read as it is by the blocked kernels, and written out for the others.
        var g = g
        if g.pendingPlaneAffine != nil && (syncReducer != nil || block == 1 || g.channelBlock != block) {
            g = g.expandedGradient
        }
        var dx: Tensor? = need[0] ? Tensor(uninitializedShape: xs.shape, channelBlock: block) : nil
        var dw = Tensor(uninitializedShape: [c]), db = Tensor(uninitializedShape: [c])
        if let syncReducer {
            // Local sums give dweight and dbias; their all-process sums give dx.
            var sums = [Double](repeating: 0, count: 2 * c)  // Σdy, then Σdy·(x − mean)
            let g = g.inLayout(block)
            g.withUnsafeStorage { pg in xs.withUnsafeStorage { px in mean.withUnsafePointer { pm in invStd.withUnsafePointer { pi in
                sums.withUnsafeMutableBufferPointer { sm in
                    let sdy = sm.baseAddress!, sdyx = sm.baseAddress! + c
                    if block > 1 {
                        batchNormBackwardSumsBlocked(sumDout: sdy, sumDoutCentered: sdyx, dout: pg, inp: px, mean: pm,
                                                     n: n, c: c, s: s, block: block)
                    } else {
                        batchNormBackwardSums(sumDout: sdy, sumDoutCentered: sdyx, dout: pg, inp: px, mean: pm, n: n, c: c, s: s)
                    }
                    let exactW = (0..<c).map { sdyx[$0] * Double(pi[$0]) }, exactB = Array(sm[0..<c])
                    dw.withUnsafeMutablePointer { pdw in db.withUnsafeMutablePointer { pdb in
                        for ch in 0..<c { pdw[ch] = Float(exactW[ch]); pdb[ch] = Float(exactB[ch]) }
                    } }
                    if let ws { ExactGradientSums.publish(exactW, for: ws) }
                    if let bs { ExactGradientSums.publish(exactB, for: bs) }
                    guard dx != nil else { return }
                    syncReducer(sm)
                    optionalPointer(ws) { pw in
                        dx!.withUnsafeMutableStorage { pdx in
                            if block > 1 {
                                batchNormBackwardInputBlocked(dinp: pdx, dout: pg, inp: px, mean: pm, invStd: pi, weight: pw,
                                                              sumDout: sdy, sumDoutCentered: sdyx, count: syncCount,
                                                              n: n, c: c, s: s, block: block)
                            } else {
                                batchNormBackwardInput(dinp: pdx, dout: pg, inp: px, mean: pm, invStd: pi, weight: pw, sumDout: sdy,
                                                       sumDoutCentered: sdyx, count: syncCount, n: n, c: c, s: s)
                            }
                        }
                    }
                }
            } } } }
        } else if block > 1 {
            let g = g.inLayout(block)
            var reluScale = [Float](), reluShift = [Float]()
            if relu {
                mean.withUnsafePointer { pm in invStd.withUnsafePointer { pi in optionalPointer(ws) { pw in optionalPointer(bs) { pb in
                    for ch in 0..<c {
                        let (sc, sh) = batchNormScaleShift(ch, mean: pm[ch], invStd: pi[ch], weight: pw, bias: pb)
                        reluScale.append(sc)
                        reluShift.append(sh)
                    }
                } } } }
            }
            g.withUnsafeStorage { pg in xs.withUnsafeStorage { px in mean.withUnsafePointer { pm in invStd.withUnsafePointer { pi in
                optionalPointer(ws) { pw in dw.withUnsafeMutablePointer { pdw in db.withUnsafeMutablePointer { pdb in
                    optionalMutableStorage(&dx) { pdx in reluScale.withUnsafeBufferPointer { rs in reluShift.withUnsafeBufferPointer { rb in
                        optionalArrayPointer(g.pendingPlaneAffine?.scale) { dsc in optionalArrayPointer(g.pendingPlaneAffine?.offset) { dof in
                            batchNormBackwardBlocked(dinp: pdx, dweight: pdw, dbias: pdb, dout: pg, inp: px, mean: pm, invStd: pi,
                                                     weight: pw, n: n, c: c, s: s, block: block, training: training,
                                                     reluScale: relu ? rs.baseAddress : nil, reluShift: relu ? rb.baseAddress : nil,
                                                     doutScale: dsc, doutOffset: dof)
                        } }
                    } } }
                } } }
            } } } }
        } else {
            g.withUnsafePointer { pg in xs.withUnsafePointer { px in mean.withUnsafePointer { pm in invStd.withUnsafePointer { pi in
                optionalPointer(ws) { pw in dw.withUnsafeMutablePointer { pdw in db.withUnsafeMutablePointer { pdb in
                    optionalMutablePointer(&dx) { pdx in optionalPointer(reluOutput) { mask in
                        batchNormBackward(dinp: pdx, dweight: pdw, dbias: pdb, dout: pg, inp: px, mean: pm, invStd: pi,
                                          weight: pw, n: n, c: c, s: s, training: training, reluOutput: mask)
                    } }
                } } }
            } } } }
        }
        var grads: [Tensor?] = [dx]
        if hasW { grads.append(dw) }
        if need.count > grads.count { grads.append(db) }
        return grads
    }
    return out
}

/// Calls `body` with the tensor's pointer, or nil.
func optionalPointer<R>(_ t: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    if let t { return t.withUnsafePointer { body($0) } }
    return body(nil)
}

/// Calls `body` with the tensor's storage (no layout conversion), or nil.
func optionalStorage<R>(_ t: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    if let t { return t.withUnsafeStorage { body($0) } }
    return body(nil)
}

func optionalMutableStorage<R>(_ t: inout Tensor?, _ body: (UnsafeMutablePointer<Float>?) -> R) -> R {
    if t == nil { return body(nil) }
    return t!.withUnsafeMutableStorage { body($0) }
}

func optionalMutablePointer<R>(_ t: inout Tensor?, _ body: (UnsafeMutablePointer<Float>?) -> R) -> R {
    if t == nil { return body(nil) }
    return t!.withUnsafeMutablePointer { body($0) }
}
