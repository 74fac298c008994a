// Kernels for activations kept in oneDNN's channel-blocked layout between layers.
//
// Dims legend: N batch, C channels, S = H·W plane size, B the channel block (8 or 16), CB = C/B.
// Element (n, c, s) of an N×C×S tensor lies at ((n·CB + c/B)·S + s)·B + c mod B: the layout
// oneDNN calls nChw8c / nChw16c. B = 1 would be NCHW. A "block plane" (n, c/B) holds S·B
// contiguous values, each position a vector of B channels.
//
// Why: oneDNN's fast convolutions read and write the blocked layout. With NCHW activations each
// convolution reorders its input in and its output back (and backward the same), which measured
// ~18% of a CIFAR SE-ResNet-20 training step and ~7% of SE-ResNet-50 inference. Activations that
// stay blocked from one convolution to the next skip both; the per-channel ops between them (batch
// norm, the SE squeeze and scale, max and average pooling) run here on B channels at a time, which
// also vectorises them across channels. (Pointwise ops, the residual add and concatenation need no
// kernel of their own: they apply to the storage as it is.)

import CDNNL
import Foundation

/// The channel block oneDNN's blocked convolutions use on this machine (16 with AVX-512, 8 with
/// AVX2), or 1 when activations stay NCHW (no blocked kernel, SENET_ACTIVATION_LAYOUT=nchw, or
/// SENET_CONV_LAYOUT=plain).
public let activationBlock: Int = {
    let env = ProcessInfo.processInfo.environment
    if env["SENET_ACTIVATION_LAYOUT"] == "nchw" || env["SENET_CONV_LAYOUT"] == "plain" { return 1 }
    // Ask oneDNN which layout its convolution wants for a typical 3×3 layer.
    let s = Conv2DShape(n: 2, c: 64, h: 14, w: 14, o: 64, kh: 3, kw: 3, ph: 1, pw: 1)
    guard let pd = blockedForwardPD(s) else { return 1 }
    defer { dnnl_primitive_desc_destroy(pd) }
    var dst = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0)!.pointee
    for (block, tag) in [(16, dnnl_nChw16c), (8, dnnl_nChw8c)] {
        var md = makeMD([s.n, s.o, s.ho, s.wo], tag)
        if dnnl_memory_desc_equal(&dst, &md) != 0 { return block }
    }
    return 1
}()

/// oneDNN's format tag for activations with channel block `block` (1: NCHW).
func activationTag(_ block: Int) -> dnnl_format_tag_t {
    switch block {
    case 1: return dnnl_nchw
    case 8: return dnnl_nChw8c
    case 16: return dnnl_nChw16c
    default: fatalError("channel block \(block): only 1, 8 and 16 are supported")
    }
}

private struct LayoutKey: Hashable { let n, c, s, from, to: Int }

private final class ReorderPlan: KernelPlan {
    let plan: DNNLPlan
    var impl: String { plan.impl }
    init(_ k: LayoutKey) {
        let rt = DNNLRuntime.shared
        var src = makeMD([k.n, k.c, k.s, 1], activationTag(k.from)), dst = makeMD([k.n, k.c, k.s, 1], activationTag(k.to))
        var rpd: dnnl_primitive_desc_t?
        dnnlCheck(dnnl_reorder_primitive_desc_create(&rpd, &src, rt.engine, &dst, rt.engine, rt.attr), "reorder pd \(k)")
        defer { dnnl_primitive_desc_destroy(rpd) }
        plan = DNNLPlan(pd: rpd!, args: [(senet_arg_from, false, src, dnnl_query_src_md, 0),
                                         (senet_arg_to, true, dst, dnnl_query_dst_md, 0)])
    }
    func execute(_ p: [UnsafeMutableRawPointer]) { plan.execute(p) }
}

private let reorderPlans = PlanCache<LayoutKey>()

/// out = inp rearranged from channel block `from` to channel block `to` (1 = NCHW) for an
/// N×C×S tensor (oneDNN's reorder, planned once per shape). C must be a multiple of both blocks.
public func convertChannelBlocks(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                                 n: Int, c: Int, s: Int, from: Int, to: Int) {
    precondition(c % from == 0 && c % to == 0, "convertChannelBlocks: \(c) channels in blocks of \(from) → \(to)")
    if from == to || n * c * s == 0 {
        out.update(from: inp, count: n * c * s)
        return
    }
    let key = LayoutKey(n: n, c: c, s: s, from: from, to: to)
    let plan = reorderPlans.cached(key) ?? {
        let p = ReorderPlan(key)
        reorderPlans.store(key, p)
        return p
    }()
    plan.execute([UnsafeMutableRawPointer(mutating: inp), UnsafeMutableRawPointer(out)])
}

// MARK: Per-channel sums

/// Σ term(i) over the positions i of a block plane, 8 channels wide: in Float over runs of 64
/// positions, the runs added in Double (each channel's sum is as accurate as the NCHW kernels',
/// which add 8 partial sums in Float per run of 4096).
@inline(__always)
func runSums(_ s: Int, _ term: (Int) -> SIMD8<Float>) -> SIMD8<Double> {
    var total = SIMD8<Double>(repeating: 0)
    var i = 0
    while i < s {
        let end = min(i + 64, s)
        var acc = SIMD8<Float>(repeating: 0)
        while i < end { acc += term(i); i += 1 }
        total += SIMD8<Double>(acc)
    }
    return total
}

/// Runs `step(constants, g, i)` for every position i of one block plane and every group of 8
/// channels g (0, 8, … < b), with `setup(g)` giving a group's constants. With 16-channel blocks the
/// two groups of a position run together, so that the 64-byte cache line at position i is written
/// whole before the next one (what streaming stores need); otherwise group by group.
@inline(__always)
func forEachLine<C>(_ s: Int, _ b: Int, _ setup: (Int) -> C, _ step: (C, Int, Int) -> Void) {
    if b == 16 {
        let c0 = setup(0), c1 = setup(8)
        for i in 0..<s { step(c0, 0, i); step(c1, 8, i) }
    } else {
        for g in stride(from: 0, to: b, by: 8) {
            let cg = setup(g)
            for i in 0..<s { step(cg, g, i) }
        }
    }
}

/// `forEachLine` whose step returns a term to sum: `total(g, Σ_i term)` per group, each lane's sum
/// formed exactly as `runSums` forms it (runs of 64 positions in Float, the runs in Double).
@inline(__always)
func forEachLineSums<C>(_ s: Int, _ b: Int, _ setup: (Int) -> C, _ term: (C, Int, Int) -> SIMD8<Float>,
                        total: (Int, SIMD8<Double>) -> Void) {
    if b == 16 {
        let c0 = setup(0), c1 = setup(8)
        var t0 = SIMD8<Double>(repeating: 0), t1 = t0
        var i = 0
        while i < s {
            let end = min(i + 64, s)
            var a0 = SIMD8<Float>(repeating: 0), a1 = a0
            while i < end { a0 += term(c0, 0, i); a1 += term(c1, 8, i); i += 1 }
            t0 += SIMD8<Double>(a0)
            t1 += SIMD8<Double>(a1)
        }
        total(0, t0)
        total(8, t1)
    } else {
        for g in stride(from: 0, to: b, by: 8) {
            let cg = setup(g)
            total(g, runSums(s) { term(cg, g, $0) })
        }
    }
}

/// Adds Σ_s x[s·B + j] (j = 0..<B) of one block plane to `sums[j]`.
@inline(__always)
func blockPlaneSums(_ x: UnsafePointer<Float>, _ s: Int, _ b: Int, into sums: UnsafeMutablePointer<Double>) {
    for g in stride(from: 0, to: b, by: 8) {
        let total = runSums(s) { load8(x, $0 * b + g) }
        for j in 0..<8 { sums[g + j] += total[j] }
    }
}

/// Σ_s (x − mean)² of one block plane, per channel, into `sums`.
@inline(__always)
func blockPlaneSquaredDeviations(_ x: UnsafePointer<Float>, _ s: Int, _ b: Int, mean: UnsafePointer<Float>,
                                 into sums: UnsafeMutablePointer<Double>) {
    for g in stride(from: 0, to: b, by: 8) {
        let vm = load8(mean, g)
        let total = runSums(s) { i in let d = load8(x, i * b + g) - vm; return d * d }
        for j in 0..<8 { sums[g + j] += total[j] }
    }
}

/// Per-channel sums over the N·S values of each channel of a blocked N×C×S tensor, formed per
/// block plane in parallel and combined in image order (so independent of the thread count).
/// `planeSums(x, sums)` adds one block plane's B channel sums to `sums` (zeroed before).
@inline(__always)
func blockedChannelReduce(n: Int, c: Int, s: Int, b: Int, out: UnsafeMutablePointer<Double>,
                          _ planeSums: (Int, UnsafeMutablePointer<Double>) -> Void) {
    let cb = c / b, planes = n * cb
    let partial = UnsafeMutablePointer<Double>.allocate(capacity: planes * b)
    defer { partial.deallocate() }
    partial.initialize(repeating: 0, count: planes * b)
    parallelRanges(planes, costPerItem: s * b) { r in
        for p in r { planeSums(p, partial + p * b) }
    }
    out.initialize(repeating: 0, count: c)
    for img in 0..<n {
        for k in 0..<cb { for j in 0..<b { out[k * b + j] += partial[(img * cb + k) * b + j] } }
    }
}

// MARK: Batch normalisation

/// Tensors of at least this many bytes (SENET_BN_BLOCK_MAJOR_MIN_BYTES; default 16 MiB, half this
/// machine's L3 cache) get batch norms that run channel block by channel block.
public let blockMajorMinBytes = largeTensorBytes("SENET_BN_BLOCK_MAJOR_MIN_BYTES")

/// Whether a batch norm over a blocked N×C×S tensor runs channel block by channel block: all
/// phases on one block's N planes before the next block's, the blocks spread over the threads.
/// A tensor larger than the cache is then read from memory once per direction, and its later
/// phases find a block's planes (N·S·B floats, 3.2 MB in SE-ResNet-50's first stage at batch 16)
/// still in the cache; phase by phase, each phase reads the whole tensor from memory again.
/// Needs enough channel blocks to keep every thread busy.
@inline(__always)
func channelBlockMajor(n: Int, c: Int, s: Int, b: Int) -> Bool {
    c / b >= 2 * kernelThreads && n * c * s * MemoryLayout<Float>.size >= blockMajorMinBytes
}

// In phases, as SyncBatchNorm.swift, so that the synchronised batch norm (sums combined across
// processes between the phases) and the plain one are the same arithmetic: with one process they
// agree bit for bit.

/// Phase 1: sums[ch] = Σ x over the N·S values of channel ch.
public func batchNormChannelSumsBlocked(sums: UnsafeMutablePointer<Double>, inp: UnsafePointer<Float>,
                                        n: Int, c: Int, s: Int, block b: Int) {
    blockedChannelReduce(n: n, c: c, s: s, b: b, out: sums) { p, acc in blockPlaneSums(inp + p * s * b, s, b, into: acc) }
}

/// Phase 2: out[ch] = Σ (x − mean[ch])² (the mean rounded to Float, as the NCHW kernels).
public func batchNormChannelSquaredDeviationsBlocked(out: UnsafeMutablePointer<Double>, inp: UnsafePointer<Float>,
                                                     mean: UnsafePointer<Double>, n: Int, c: Int, s: Int, block b: Int) {
    let fm = (0..<c).map { Float(mean[$0]) }
    fm.withUnsafeBufferPointer { m in
        blockedChannelReduce(n: n, c: c, s: s, b: b, out: out) { p, acc in
            blockPlaneSquaredDeviations(inp + p * s * b, s, b, mean: m.baseAddress! + (p % (c / b)) * b, into: acc)
        }
    }
}

/// Phase 3: normalises with mean[ch] and squaredDeviations[ch] over `count` values per channel
/// (saved mean and 1/sqrt(var + eps), running statistics with the unbiased variance, optional
/// fused ReLU).
public func batchNormApplyStatisticsBlocked(out: UnsafeMutablePointer<Float>, saveMean: UnsafeMutablePointer<Float>,
                                            saveInvStd: UnsafeMutablePointer<Float>,
                                            runningMean: UnsafeMutablePointer<Float>?, runningVar: UnsafeMutablePointer<Float>?,
                                            inp: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                                            mean: UnsafePointer<Double>, squaredDeviations: UnsafePointer<Double>, count m: Int,
                                            n: Int, c: Int, s: Int, block b: Int, eps: Float, momentum: Float, relu: Bool = false,
                                            planeSums: UnsafeMutablePointer<Float>? = nil) {
    var scale = [Float](repeating: 0, count: c), shift = [Float](repeating: 0, count: c)
    for ch in 0..<c {
        (scale[ch], shift[ch]) = channelStatistics(ch, mean: mean[ch], variance: squaredDeviations[ch] / Double(m), count: m,
                                                   saveMean: saveMean, saveInvStd: saveInvStd, runningMean: runningMean,
                                                   runningVar: runningVar, weight: weight, bias: bias, eps: eps,
                                                   momentum: momentum)
    }
    blockedAffine(out: out, inp: inp, scale: scale, shift: shift, n: n, c: c, s: s, block: b, relu: relu, planeSums: planeSums)
}

/// `batchNormTrainForward` on a blocked tensor (same formulas: batch mean, biased variance for
/// normalising, unbiased for the running variance; optional fused ReLU): the three phases. On a
/// large tensor they run channel block by channel block (`channelBlockMajor`), with the same
/// arithmetic, so the same bits.
public func batchNormTrainForwardBlocked(out: UnsafeMutablePointer<Float>, saveMean: UnsafeMutablePointer<Float>,
                                         saveInvStd: UnsafeMutablePointer<Float>,
                                         runningMean: UnsafeMutablePointer<Float>?, runningVar: UnsafeMutablePointer<Float>?,
                                         inp: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                                         n: Int, c: Int, s: Int, block b: Int, eps: Float, momentum: Float, relu: Bool = false,
                                         planeSums: UnsafeMutablePointer<Float>? = nil, blockMajor: Bool? = nil,
                                         stores policy: OutputStorePolicy = .automatic) {
    let m = n * s
    if blockMajor ?? channelBlockMajor(n: n, c: c, s: s, b: b) {
        let cb = c / b
        let stores = OutputStores(out, count: n * c * s, policy)
        // Per channel: the Float mean the deviations are taken from, and the normalisation's
        // scale and shift; each channel block writes its own channels.
        let fm = UnsafeMutablePointer<Float>.allocate(capacity: 3 * c)
        defer { fm.deallocate() }
        let scale = fm + c, shift = fm + 2 * c
        parallelRanges(cb, costPerItem: 4 * n * s * b) { r in
            defer { stores.finish() }
            withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * b) { t in
                let sums = t.baseAddress!, deviations = sums + b
                for k in r {
                    // The sums of each image's plane, added in image order: batchNormChannelSumsBlocked's.
                    sums.initialize(repeating: 0, count: 2 * b)
                    for img in 0..<n { blockPlaneSums(inp + (img * cb + k) * s * b, s, b, into: sums) }
                    for j in 0..<b { sums[j] /= Double(m); fm[k * b + j] = Float(sums[j]) }
                    for img in 0..<n {
                        blockPlaneSquaredDeviations(inp + (img * cb + k) * s * b, s, b, mean: fm + k * b, into: deviations)
                    }
                    for j in 0..<b {
                        let ch = k * b + j
                        (scale[ch], shift[ch]) = channelStatistics(
                            ch, mean: sums[j], variance: deviations[j] / Double(m), count: m, saveMean: saveMean,
                            saveInvStd: saveInvStd, runningMean: runningMean, runningVar: runningVar, weight: weight,
                            bias: bias, eps: eps, momentum: momentum)
                    }
                    for img in 0..<n {
                        affinePlane(img * cb + k, out: out, inp: inp, scale: scale, shift: shift, c: c, s: s, b: b,
                                    relu: relu, planeSums: planeSums, stores: stores)
                    }
                }
            }
        }
        return
    }
    var mean = [Double](repeating: 0, count: c), deviations = [Double](repeating: 0, count: c)
    mean.withUnsafeMutableBufferPointer { mp in
        batchNormChannelSumsBlocked(sums: mp.baseAddress!, inp: inp, n: n, c: c, s: s, block: b)
        for ch in 0..<c { mp[ch] /= Double(m) }
        deviations.withUnsafeMutableBufferPointer { dv in
            batchNormChannelSquaredDeviationsBlocked(out: dv.baseAddress!, inp: inp, mean: mp.baseAddress!, n: n, c: c, s: s, block: b)
            batchNormApplyStatisticsBlocked(out: out, saveMean: saveMean, saveInvStd: saveInvStd, runningMean: runningMean,
                                            runningVar: runningVar, inp: inp, weight: weight, bias: bias, mean: mp.baseAddress!,
                                            squaredDeviations: dv.baseAddress!, count: m, n: n, c: c, s: s, block: b,
                                            eps: eps, momentum: momentum, relu: relu, planeSums: planeSums)
        }
    }
}

/// out = inp · scale[c] + shift[c] (then max(·, 0) with `relu`, NaN kept) on a blocked tensor.
/// With `planeSums`, also planeSums[n·C + c] = Σ_s out(n, c, s), summed as `blockedSumPlanes`
/// sums (bit for bit): the SE squeeze of a batch norm's output, in the pass that writes it.
public func blockedAffine(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                          shift: UnsafePointer<Float>, n: Int, c: Int, s: Int, block b: Int, relu: Bool = false,
                          planeSums: UnsafeMutablePointer<Float>? = nil, stores policy: OutputStorePolicy = .automatic) {
    let stores = OutputStores(out, count: n * c * s, policy)
    parallelRanges(n * (c / b), costPerItem: s * b) { r in
        defer { stores.finish() }
        for p in r {
            affinePlane(p, out: out, inp: inp, scale: scale, shift: shift, c: c, s: s, b: b, relu: relu,
                        planeSums: planeSums, stores: stores)
        }
    }
}

/// Block plane p of `blockedAffine`.
@inline(__always)
func affinePlane(_ p: Int, out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                 shift: UnsafePointer<Float>, c: Int, s: Int, b: Int, relu: Bool,
                 planeSums: UnsafeMutablePointer<Float>?, stores: OutputStores) {
    let k = p % (c / b)
    let zero = SIMD8<Float>(repeating: 0)
    let x = inp + p * s * b, o = out + p * s * b
    @inline(__always) func setup(_ g: Int) -> (SIMD8<Float>, SIMD8<Float>) {
        (load8(scale, k * b + g), load8(shift, k * b + g))
    }
    @inline(__always) func step(_ vsb: (SIMD8<Float>, SIMD8<Float>), _ g: Int, _ i: Int) -> SIMD8<Float> {
        var v = affine8(load8(x, i * b + g), vsb.0, vsb.1)
        if relu { v = clampBelow(v, zero) }
        stores.store(v, at: o + i * b + g)
        return v
    }
    if let planeSums {
        forEachLineSums(s, b, setup, step) { g, total in
            for j in 0..<8 { planeSums[p * b + g + j] = Float(total[j]) }
        }
    } else {
        forEachLine(s, b, setup) { _ = step($0, $1, $2) }
    }
}

/// x·scale + shift, lane-wise: the normalisation of `blockedAffine`, and the recomputation of its
/// fused ReLU's mask in the backward kernels (one function, so that both round alike).
@inline(__always)
func affine8(_ x: SIMD8<Float>, _ scale: SIMD8<Float>, _ shift: SIMD8<Float>) -> SIMD8<Float> { x * scale + shift }

/// A batch norm backward's incoming gradient: dout itself, or dout·scale + offset with one scale
/// and offset per plane (index n·C + c; a gradient the tape kept in that form, see
/// `Tensor.pendingPlaneAffine`), in `blockedPlaneAffine`'s arithmetic.
@inline(__always)
func planeAffine(_ dv: SIMD8<Float>, _ vsc: SIMD8<Float>?, _ vof: SIMD8<Float>?) -> SIMD8<Float> {
    guard let vsc else { return dv }
    if let vof { return dv * vsc + vof }
    return dv * vsc
}

/// The fused ReLU of a batch norm's backward: dout is zeroed where the forward's output was not
/// positive. That is read from the output itself (`reluOutput`), or, with `reluScale` and
/// `reluShift` (the forward's per-channel scale and shift, `blockedAffine`'s), recomputed from the
/// input the kernel reads anyway: the same lanes, one stream of memory fewer.
@inline(__always)
func reluMasked(_ dv: SIMD8<Float>, output mk: UnsafePointer<Float>?, _ i: Int, x xv: SIMD8<Float>,
                scale vs: SIMD8<Float>?, shift vb: SIMD8<Float>?) -> SIMD8<Float> {
    let zero = SIMD8<Float>(repeating: 0)
    if let mk { return dv.replacing(with: zero, where: load8(mk, i) .<= zero) }
    if let vs, let vb { return dv.replacing(with: zero, where: affine8(xv, vs, vb) .<= zero) }
    return dv
}

/// Backward phase 1: per channel Σ dout and Σ dout·(x − mean) (dout zeroed where a fused ReLU's
/// output is not positive: see `reluMasked`), per block plane, combined in image order.
public func batchNormBackwardSumsBlocked(sumDout: UnsafeMutablePointer<Double>, sumDoutCentered: UnsafeMutablePointer<Double>,
                                         dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                                         n: Int, c: Int, s: Int, block b: Int, reluOutput mask: UnsafePointer<Float>? = nil,
                                         reluScale: UnsafePointer<Float>? = nil, reluShift: UnsafePointer<Float>? = nil,
                                         doutScale: UnsafePointer<Float>? = nil, doutOffset: UnsafePointer<Float>? = nil) {
    let cb = c / b
    let ops = BatchNormBackwardOperands(dout: dout, inp: inp, mean: mean, mask: mask, reluScale: reluScale,
                                        reluShift: reluShift, doutScale: doutScale, doutOffset: doutOffset, c: c, s: s, b: b)
    let partial = UnsafeMutablePointer<Double>.allocate(capacity: 2 * n * c)
    defer { partial.deallocate() }
    parallelRanges(n * cb, costPerItem: 2 * s * b) { r in
        for p in r { ops.sums(p, into: partial + 2 * p * b) }
    }
    for ch in 0..<c { sumDout[ch] = 0; sumDoutCentered[ch] = 0 }
    for img in 0..<n {
        for k in 0..<cb {
            let p = img * cb + k
            for j in 0..<b {
                sumDout[k * b + j] += partial[2 * p * b + j]
                sumDoutCentered[k * b + j] += partial[2 * p * b + b + j]
            }
        }
    }
}

/// Backward phase 2: dinp from the sums over `count` = M values per channel. Training:
/// dx = g·(dy − Σdy/M − (x − μ)·istd²·Σdy·(x − μ)/M), g = weight·istd; evaluation: dx = dy·g.
public func batchNormBackwardInputBlocked(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                                          mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
                                          sumDout: UnsafePointer<Double>, sumDoutCentered: UnsafePointer<Double>, count m: Int,
                                          n: Int, c: Int, s: Int, block b: Int, training: Bool = true,
                                          reluOutput mask: UnsafePointer<Float>? = nil,
                                          reluScale: UnsafePointer<Float>? = nil, reluShift: UnsafePointer<Float>? = nil,
                                          doutScale: UnsafePointer<Float>? = nil, doutOffset: UnsafePointer<Float>? = nil,
                                          stores policy: OutputStorePolicy = .automatic) {
    let ops = BatchNormBackwardOperands(dout: dout, inp: inp, mean: mean, mask: mask, reluScale: reluScale,
                                        reluShift: reluShift, doutScale: doutScale, doutOffset: doutOffset, c: c, s: s, b: b)
    var coef = [Float](repeating: 0, count: 3 * c)
    for ch in 0..<c {
        ops.setCoefficients(&coef, ch, invStd: invStd, weight: weight, sumDout: sumDout[ch],
                            sumDoutCentered: sumDoutCentered[ch], count: m, training: training)
    }
    let stores = OutputStores(dinp, count: n * c * s, policy)
    coef.withUnsafeBufferPointer { cf in
        parallelRanges(n * (c / b), costPerItem: s * b) { r in
            defer { stores.finish() }
            for p in r { ops.input(p, dinp: dinp, coef: cf.baseAddress!, training: training, stores: stores) }
        }
    }
}

/// The operands of a blocked batch norm's backward, and its two phases on one block plane p
/// (channel block p % (C/B)).
struct BatchNormBackwardOperands {
    let dout, inp, mean: UnsafePointer<Float>
    let mask, reluScale, reluShift, doutScale, doutOffset: UnsafePointer<Float>?
    let c, s, b: Int

    /// Phase 1 on plane p: its Σ dout into sums[0..<B] and Σ dout·(x − mean) into sums[B..<2B].
    @inline(__always)
    func sums(_ p: Int, into sums: UnsafeMutablePointer<Double>) {
        let k = p % (c / b)
        let zero = SIMD8<Float>(repeating: 0)
        let d = dout + p * s * b, x = inp + p * s * b, mk = mask.map { $0 + p * s * b }
        for g in stride(from: 0, to: b, by: 8) {
            let vm = load8(mean, k * b + g)
            let vs = reluScale.map { load8($0, k * b + g) }, vb = reluShift.map { load8($0, k * b + g) }
            let vsc = doutScale.map { load8($0, p * b + g) }, vof = doutOffset.map { load8($0, p * b + g) }
            var t1 = SIMD8<Double>(repeating: 0), t2 = SIMD8<Double>(repeating: 0)
            var i = 0
            while i < s {
                let end = min(i + 64, s)
                var a1 = zero, a2 = zero
                while i < end {
                    let xv = load8(x, i * b + g)
                    let dv = reluMasked(planeAffine(load8(d, i * b + g), vsc, vof), output: mk, i * b + g, x: xv,
                                        scale: vs, shift: vb)
                    a1 += dv
                    a2 += dv * (xv - vm)
                    i += 1
                }
                t1 += SIMD8<Double>(a1)
                t2 += SIMD8<Double>(a2)
            }
            for j in 0..<8 { sums[g + j] = t1[j]; sums[b + g + j] = t2[j] }
        }
    }

    /// Channel ch's three coefficients of phase 2 (at ch, C + ch and 2C + ch of `coef`) from its
    /// sums over `count` values.
    @inline(__always)
    func setCoefficients(_ coef: UnsafeMutablePointer<Float>, _ ch: Int, invStd: UnsafePointer<Float>,
                         weight: UnsafePointer<Float>?, sumDout: Double, sumDoutCentered: Double, count m: Int,
                         training: Bool) {
        let istd = invStd[ch]
        coef[ch] = (weight?[ch] ?? 1) * istd
        coef[c + ch] = training ? Float(sumDout / Double(m)) : 0
        coef[2 * c + ch] = training ? Float(sumDoutCentered / Double(m)) * istd * istd : 0
    }

    /// Phase 2 on plane p: its dinp.
    @inline(__always)
    func input(_ p: Int, dinp: UnsafeMutablePointer<Float>, coef: UnsafePointer<Float>, training: Bool,
               stores: OutputStores) {
        let k = p % (c / b)
        let d = dout + p * s * b, x = inp + p * s * b, o = dinp + p * s * b, mk = mask.map { $0 + p * s * b }
        forEachLine(s, b, { g in
            let ch = k * b + g
            return (load8(coef, ch), load8(coef, c + ch), load8(coef, 2 * c + ch), load8(mean, ch),
                    reluScale.map { load8($0, ch) }, reluShift.map { load8($0, ch) },
                    doutScale.map { load8($0, p * b + g) }, doutOffset.map { load8($0, p * b + g) })
        }) { cg, g, i in
            let (vg, v1, v2, vm, vs, vb, vsc, vof) = cg
            let xv = load8(x, i * b + g)
            let dv = reluMasked(planeAffine(load8(d, i * b + g), vsc, vof), output: mk, i * b + g, x: xv,
                                scale: vs, shift: vb)
            let v = training ? vg * (dv - v1 - (xv - vm) * v2) : dv * vg
            stores.store(v, at: o + i * b + g)
        }
    }
}

/// `batchNormBackward` on blocked tensors (dout, inp, reluOutput and dinp all blocked): the two
/// phases, with dweight = Σ dout·x̂ and dbias = Σ dout between them.
public func batchNormBackwardBlocked(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                                     dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                                     inp: UnsafePointer<Float>, mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>,
                                     weight: UnsafePointer<Float>?, n: Int, c: Int, s: Int, block b: Int, training: Bool,
                                     reluOutput mask: UnsafePointer<Float>? = nil,
                                     reluScale: UnsafePointer<Float>? = nil, reluShift: UnsafePointer<Float>? = nil,
                                     doutScale: UnsafePointer<Float>? = nil, doutOffset: UnsafePointer<Float>? = nil,
                                     blockMajor: Bool? = nil, stores policy: OutputStorePolicy = .automatic) {
    if blockMajor ?? channelBlockMajor(n: n, c: c, s: s, b: b) {
        let cb = c / b
        let ops = BatchNormBackwardOperands(dout: dout, inp: inp, mean: mean, mask: mask, reluScale: reluScale,
                                            reluShift: reluShift, doutScale: doutScale, doutOffset: doutOffset, c: c, s: s, b: b)
        let stores = dinp.map { OutputStores($0, count: n * c * s, policy) }
        let coef = UnsafeMutablePointer<Float>.allocate(capacity: 3 * c)
        defer { coef.deallocate() }
        parallelRanges(cb, costPerItem: 5 * n * s * b) { r in
            defer { stores?.finish() }
            withUnsafeTemporaryAllocation(of: Double.self, capacity: 4 * b) { t in
                let plane = t.baseAddress!, sums = plane + 2 * b
                for k in r {
                    // Each image's plane sums, added in image order: batchNormBackwardSumsBlocked's.
                    sums.initialize(repeating: 0, count: 2 * b)
                    for img in 0..<n {
                        ops.sums(img * cb + k, into: plane)
                        for j in 0..<2 * b { sums[j] += plane[j] }
                    }
                    for j in 0..<b {
                        let ch = k * b + j
                        dweight?[ch] = Float(sums[b + j] * Double(invStd[ch]))
                        dbias?[ch] = Float(sums[j])
                        ops.setCoefficients(coef, ch, invStd: invStd, weight: weight, sumDout: sums[j],
                                            sumDoutCentered: sums[b + j], count: n * s, training: training)
                    }
                    guard let dinp, let stores else { continue }
                    for img in 0..<n { ops.input(img * cb + k, dinp: dinp, coef: coef, training: training, stores: stores) }
                }
            }
        }
        return
    }
    var sdy = [Double](repeating: 0, count: c), sdyx = [Double](repeating: 0, count: c)
    batchNormBackwardSumsBlocked(sumDout: &sdy, sumDoutCentered: &sdyx, dout: dout, inp: inp, mean: mean,
                                 n: n, c: c, s: s, block: b, reluOutput: mask, reluScale: reluScale, reluShift: reluShift,
                                 doutScale: doutScale, doutOffset: doutOffset)
    for ch in 0..<c {
        dweight?[ch] = Float(sdyx[ch] * Double(invStd[ch]))
        dbias?[ch] = Float(sdy[ch])
    }
    guard let dinp else { return }
    batchNormBackwardInputBlocked(dinp: dinp, dout: dout, inp: inp, mean: mean, invStd: invStd, weight: weight,
                                  sumDout: sdy, sumDoutCentered: sdyx, count: n * s, n: n, c: c, s: s, block: b,
                                  training: training, reluOutput: mask, reluScale: reluScale, reluShift: reluShift,
                                  doutScale: doutScale, doutOffset: doutOffset)
}

// MARK: The SE block's squeeze and scale

/// out[n·C + c] = Σ_s x(n, c, s) for a blocked x (the SE squeeze; ∂/∂s of the scale is
/// `blockedDotPlanes`).
public func blockedSumPlanes(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, n: Int, c: Int, s: Int, block b: Int) {
    parallelRanges(n * (c / b), costPerItem: s * b) { r in
        for p in r {
            withUnsafeTemporaryAllocation(of: Double.self, capacity: b) { acc in
                acc.initialize(repeating: 0)
                blockPlaneSums(x + p * s * b, s, b, into: acc.baseAddress!)
                for j in 0..<b { out[p * b + j] = Float(acc[j]) }
            }
        }
    }
}

/// out[n·C + c] = Σ_s a(n, c, s) · b(n, c, s) for blocked a and b.
public func blockedDotPlanes(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b bp: UnsafePointer<Float>,
                             n: Int, c: Int, s: Int, block b: Int) {
    parallelRanges(n * (c / b), costPerItem: 2 * s * b) { r in
        for p in r {
            let x = a + p * s * b, y = bp + p * s * b
            for g in stride(from: 0, to: b, by: 8) {
                let total = runSums(s) { load8(x, $0 * b + g) * load8(y, $0 * b + g) }
                for j in 0..<8 { out[p * b + g + j] = Float(total[j]) }
            }
        }
    }
}

/// out(n, c, s) = x(n, c, s) · scale[n·C + c] for a blocked x (the SE scale).
public func blockedScalePlanes(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                               n: Int, c: Int, s: Int, block b: Int) {
    parallelRanges(n * (c / b), costPerItem: s * b) { r in
        for p in r {
            let xo = x + p * s * b, oo = out + p * s * b
            for g in stride(from: 0, to: b, by: 8) {
                let vs = load8(scale, p * b + g)
                for i in 0..<s {
                    UnsafeMutableRawPointer(oo + i * b + g).storeBytes(of: load8(xo, i * b + g) * vs, as: SIMD8<Float>.self)
                }
            }
        }
    }
}

/// `scaleAddReLUPlanes` on blocked x, residual and out: out = max(x · scale[n·C + c] + r, 0).
public func blockedScaleAddReLU(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                                residual: UnsafePointer<Float>, n: Int, c: Int, s: Int, block b: Int,
                                stores policy: OutputStorePolicy = .automatic) {
    let zero = SIMD8<Float>(repeating: 0)
    let stores = OutputStores(out, count: n * c * s, policy)
    parallelRanges(n * (c / b), costPerItem: 3 * s * b) { r in
        defer { stores.finish() }
        for p in r {
            let xo = x + p * s * b, ro = residual + p * s * b, oo = out + p * s * b
            forEachLine(s, b, { load8(scale, p * b + $0) }) { vs, g, i in
                let v = clampBelow(load8(xo, i * b + g) * vs + load8(ro, i * b + g), zero)
                stores.store(v, at: oo + i * b + g)
            }
        }
    }
}

/// `scaleAddReLUBackwardPlanes` on blocked tensors: dr = dout where out > 0 (else 0), dx = dr · scale;
/// with `x` and `ds`, also the scale's gradient ds[n·C + c] = Σ_s dr · x in the same pass (the sums
/// formed as `blockedDotPlanes(dr, x)` forms them, so bit for bit the same).
/// With `dx` nil only dr (and ds) are written: the caller then stands for dx as dr times the
/// scale per plane (`blockedPlaneAffine`), so that the pass writes one stream fewer.
public func blockedScaleAddReLUBackward(dx: UnsafeMutablePointer<Float>?, dr: UnsafeMutablePointer<Float>,
                                        dout: UnsafePointer<Float>, out: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                                        x: UnsafePointer<Float>? = nil, ds: UnsafeMutablePointer<Float>? = nil,
                                        n: Int, c: Int, s: Int, block b: Int, stores policy: OutputStorePolicy = .automatic) {
    let zero = SIMD8<Float>(repeating: 0)
    let drStores = OutputStores(dr, count: n * c * s, policy)
    let dxStores = dx.map { OutputStores($0, count: n * c * s, policy) }
    parallelRanges(n * (c / b), costPerItem: (x == nil ? 2 : 3) * s * b) { r in
        defer { drStores.finish(); dxStores?.finish() }
        for p in r {
            let base = p * s * b
            @inline(__always) func setup(_ g: Int) -> SIMD8<Float> { load8(scale, p * b + g) }
            @inline(__always) func step(_ vs: SIMD8<Float>, _ g: Int, _ i: Int) -> SIMD8<Float> {
                let at = base + i * b + g
                let d = load8(dout, at).replacing(with: zero, where: load8(out, at) .<= zero)
                drStores.store(d, at: dr + at)
                if let dx, let dxStores { dxStores.store(d * vs, at: dx + at) }
                return d
            }
            if let x, let ds {
                forEachLineSums(s, b, setup, { vs, g, i in step(vs, g, i) * load8(x, base + i * b + g) }) { g, total in
                    for j in 0..<8 { ds[p * b + g + j] = Float(total[j]) }
                }
            } else {
                forEachLine(s, b, setup) { _ = step($0, $1, $2) }
            }
        }
    }
}

/// out(n, c, s) = value[n·C + c] · factor for every s (the adjoint of a blocked plane sum).
public func blockedBroadcastPlanes(out: UnsafeMutablePointer<Float>, value: UnsafePointer<Float>, factor: Float,
                                   n: Int, c: Int, s: Int, block b: Int) {
    let vf = SIMD8<Float>(repeating: factor)
    parallelRanges(n * (c / b), costPerItem: s * b) { r in
        for p in r {
            let oo = out + p * s * b
            for g in stride(from: 0, to: b, by: 8) {
                let v = load8(value, p * b + g) * vf
                for i in 0..<s { UnsafeMutableRawPointer(oo + i * b + g).storeBytes(of: v, as: SIMD8<Float>.self) }
            }
        }
    }
}

/// acc(n, c, s) += value[n·C + c] · factor for every s, on a blocked acc (`accumulatePlanes`).
public func blockedAccumulatePlanes(_ acc: UnsafeMutablePointer<Float>, value: UnsafePointer<Float>, factor: Float,
                                   n: Int, c: Int, s: Int, block b: Int) {
    let vf = SIMD8<Float>(repeating: factor)
    parallelRanges(n * (c / b), costPerItem: 2 * s * b) { r in
        for p in r {
            let oo = acc + p * s * b
            for g in stride(from: 0, to: b, by: 8) {
                let v = load8(value, p * b + g) * vf
                for i in 0..<s {
                    UnsafeMutableRawPointer(oo + i * b + g).storeBytes(of: load8(oo, i * b + g) + v, as: SIMD8<Float>.self)
                }
            }
        }
    }
}

/// out(n, c, s) = inp(n, c, s) · scale[n·C + c] (+ offset[n·C + c]) on blocked tensors: a
/// gradient the tape kept as a per-plane scale and offset of another tensor, written out. The
/// same arithmetic, in the same order, as `blockedScaleAddReLUBackward`'s dx followed by
/// `blockedAccumulatePlanes` (bit for bit).
public func blockedPlaneAffine(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                               offset: UnsafePointer<Float>?, n: Int, c: Int, s: Int, block b: Int) {
    parallelRanges(n * (c / b), costPerItem: s * b) { r in
        for p in r {
            let x = inp + p * s * b, o = out + p * s * b
            for g in stride(from: 0, to: b, by: 8) {
                let vs = load8(scale, p * b + g)
                if let offset {
                    let vo = load8(offset, p * b + g)
                    for i in 0..<s { UnsafeMutableRawPointer(o + i * b + g).storeBytes(of: load8(x, i * b + g) * vs + vo, as: SIMD8<Float>.self) }
                } else {
                    for i in 0..<s { UnsafeMutableRawPointer(o + i * b + g).storeBytes(of: load8(x, i * b + g) * vs, as: SIMD8<Float>.self) }
                }
            }
        }
    }
}

// MARK: Max pooling

/// `maxPoolForward` on a blocked input: `s.planes` counts block planes (N·C/B), each position a
/// vector of B channels; `argmax` (nil in inference) records per output value the in-plane
/// position of the winner. Ties and NaN as the NCHW kernel: first maximum, a NaN wins (the last).
public func maxPoolForwardBlocked(out: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>?,
                                  inp: UnsafePointer<Float>, _ s: Pool2DShape, block b: Int) {
    let ho = s.ho, wo = s.wo
    parallelRanges(s.planes, costPerItem: ho * wo * s.kh * s.kw * b) { r in
        for p in r {
            let x = inp + p * s.h * s.w * b
            let o = out + p * ho * wo * b
            for oy in 0..<ho {
                let (ya, yb) = s.rows(oy)
                for ox in 0..<wo {
                    let (xa, xb) = s.columns(ox)
                    let at = (oy * wo + ox) * b
                    guard let argmax else {
                        // Inference: the maxima alone (a NaN wins and stays, as below).
                        for g in stride(from: 0, to: b, by: 8) {
                            var best = SIMD8<Float>(repeating: -.infinity)
                            for yy in ya..<yb {
                                for xx in xa..<xb {
                                    let v = load8(x, (yy * s.w + xx) * b + g)
                                    best = best.replacing(with: v, where: (v .> best) .| (v .!= v))
                                }
                            }
                            UnsafeMutableRawPointer(o + at + g).storeBytes(of: best, as: SIMD8<Float>.self)
                        }
                        continue
                    }
                    for g in stride(from: 0, to: b, by: 8) {
                        var best = SIMD8<Float>(repeating: -.infinity)
                        // Positions as Float (exact below 2^24) so that one mask selects both.
                        var bi = SIMD8<Float>(repeating: Float(ya * s.w + xa))
                        for yy in ya..<yb {
                            for xx in xa..<xb {
                                let v = load8(x, (yy * s.w + xx) * b + g)
                                let wins = (v .> best) .| (v .!= v)
                                best = best.replacing(with: v, where: wins)
                                bi = bi.replacing(with: Float(yy * s.w + xx), where: wins)
                            }
                        }
                        UnsafeMutableRawPointer(o + at + g).storeBytes(of: best, as: SIMD8<Float>.self)
                        let a = argmax + p * ho * wo * b + at + g
                        for j in 0..<8 { a[j] = Int32(bi[j]) }
                    }
                }
            }
        }
    }
}

/// `maxPoolBackward` on blocked tensors: dinp (written, zeros elsewhere) = scatter-add of dout to
/// each channel's winning position.
public func maxPoolBackwardBlocked(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                   argmax: UnsafePointer<Int32>, _ s: Pool2DShape, block b: Int) {
    let outPlane = s.ho * s.wo * b, inPlane = s.h * s.w * b
    parallelRanges(s.planes, costPerItem: outPlane + inPlane) { r in
        for p in r {
            let d = dinp + p * inPlane
            d.update(repeating: 0, count: inPlane)
            let g = dout + p * outPlane, a = argmax + p * outPlane
            for i in 0..<outPlane { d[Int(a[i]) * b + i % b] += g[i] }
        }
    }
}

// MARK: Average pooling

/// `avgPoolForward` on a blocked input (`s.planes` counts block planes): each window's sum in the
/// NCHW kernel's order, B channels at a time, divided by PyTorch's divisor.
public func avgPoolForwardBlocked(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, _ s: Pool2DShape,
                                  block b: Int, countIncludePad: Bool) {
    let ho = s.ho, wo = s.wo
    parallelRanges(s.planes, costPerItem: ho * wo * s.kh * s.kw * b) { r in
        for p in r {
            let x = inp + p * s.h * s.w * b, o = out + p * ho * wo * b
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let win = avgWindow(s, oy, ox, countIncludePad)
                    let div = SIMD8<Float>(repeating: win.div)
                    for g in stride(from: 0, to: b, by: 8) {
                        var t = SIMD8<Float>(repeating: 0)
                        if win.ya < win.yb && win.xa < win.xb {
                            for yy in win.ya..<win.yb { for xx in win.xa..<win.xb { t += load8(x, (yy * s.w + xx) * b + g) } }
                        }
                        UnsafeMutableRawPointer(o + (oy * wo + ox) * b + g).storeBytes(of: t / div, as: SIMD8<Float>.self)
                    }
                }
            }
        }
    }
}

/// `avgPoolBackward` on blocked tensors: dinp[window] += dout / divisor (dinp is written).
public func avgPoolBackwardBlocked(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, _ s: Pool2DShape,
                                   block b: Int, countIncludePad: Bool) {
    let ho = s.ho, wo = s.wo, inPlane = s.h * s.w * b
    parallelRanges(s.planes, costPerItem: ho * wo * s.kh * s.kw * b) { r in
        for p in r {
            let d = dinp + p * inPlane, gp = dout + p * ho * wo * b
            d.update(repeating: 0, count: inPlane)
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let win = avgWindow(s, oy, ox, countIncludePad)
                    guard win.ya < win.yb && win.xa < win.xb else { continue }
                    let div = SIMD8<Float>(repeating: win.div)
                    for g in stride(from: 0, to: b, by: 8) {
                        let v = load8(gp, (oy * wo + ox) * b + g) / div
                        for yy in win.ya..<win.yb {
                            for xx in win.xa..<win.xb {
                                let at = d + (yy * s.w + xx) * b + g
                                UnsafeMutableRawPointer(at).storeBytes(of: load8(at, 0) + v, as: SIMD8<Float>.self)
                            }
                        }
                    }
                }
            }
        }
    }
}
