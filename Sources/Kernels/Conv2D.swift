// 2-D convolution (cross-correlation, as PyTorch) forward, backward-data and backward-weights on
// oneDNN primitives, grouped and depthwise included.
//
// Dims legend: N batch, C input channels, H×W input size, O output channels, G groups,
// kh×kw kernel, sh×sw stride, ph×pw zero padding, dh×dw dilation, Ho×Wo output size.
// Buffers are plain NCHW (activations) and O×(C/G)×kh×kw (weights), exactly as PyTorch.
//
// Each (shape, pass) gets candidate plans: oneDNN on the caller's plain layouts, oneDNN on the
// layouts it prefers (e.g. nChw8c) with reorders at the edges, for 1×1 convolutions one GEMM per
// image on dnnl_sgemm (no reorder; strided ones gather their input), for 3×3 stride-1 ones our
// Winograd F(2×2, 3×3) (Winograd.swift) and, where oneDNN has it (AVX-512 machines), its Winograd
// F(4×4, 3×3), and for batches of 8 or more the same convolution run in sub-batches of 1 or 4
// images (BatchChunkPlan). The first call times them on the caller's buffers and keeps the fastest
// (SENET_CONV_LAYOUT=plain|blocked forces one oneDNN path; SENET_CONV_WINOGRAD=0 leaves oneDNN's
// Winograd out, SENET_CONV_CHUNKS=0 the sub-batch plans). Reference implementations ("ref:*")
// are never used.

import CDNNL
import Foundation

/// The geometry of one convolution, with PyTorch's output-size rule
/// `Ho = ⌊(H + 2·ph − dh·(kh − 1) − 1) / sh⌋ + 1`.
public struct Conv2DShape: Hashable, Sendable, CustomStringConvertible {
    public var n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups: Int

    public init(n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int, sh: Int = 1, sw: Int = 1,
                ph: Int = 0, pw: Int = 0, dh: Int = 1, dw: Int = 1, groups: Int = 1) {
        (self.n, self.c, self.h, self.w, self.o, self.kh, self.kw) = (n, c, h, w, o, kh, kw)
        (self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.groups) = (sh, sw, ph, pw, dh, dw, groups)
    }

    public var ho: Int { (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1 }
    public var wo: Int { (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1 }
    /// Multiply-accumulates of the forward pass.
    public var macs: Int { n * o * ho * wo * (c / groups) * kh * kw }
    public var inputCount: Int { n * c * h * w }
    public var outputCount: Int { n * o * ho * wo }
    public var weightCount: Int { o * (c / groups) * kh * kw }

    public var description: String {
        "N\(n) C\(c) \(h)×\(w) → O\(o) k\(kh)×\(kw) s\(sh)×\(sw) p\(ph)×\(pw) d\(dh)×\(dw) g\(groups)"
    }
}

public enum ConvPass: Hashable, Sendable { case forward, backwardData, backwardWeights }

struct ConvKey: Hashable {
    let shape: Conv2DShape
    let pass: ConvPass
    let bias: Bool
    /// Forward only: the output is max(conv + bias, 0) (a ReLU fused by the inference engine).
    var relu = false
    /// Channel blocks of the caller's input-side (src / diff_src) and output-side (dst / diff_dst)
    /// activations: 1 for NCHW, else oneDNN's nChw8c / nChw16c (Blocked.swift).
    var srcBlock = 1, dstBlock = 1
    /// Forward only: the weights never change while the caller's `ConstantWeights` lives (the
    /// inference engine's folded weights), so plans keep their converted weights there, and
    /// oneDNN's Winograd is built for inference (`forward_inference`, which reads weights
    /// transformed once).
    var constantWeights = false

    /// Whether the caller's activations are NCHW on both sides (our own GEMM and Winograd plans
    /// need that).
    var isPlain: Bool { srcBlock == 1 && dstBlock == 1 }
}

enum ConvLayoutPolicy { case auto, plain, blocked }

private let convLayoutPolicy: ConvLayoutPolicy = {
    switch ProcessInfo.processInfo.environment["SENET_CONV_LAYOUT"] {
    case "plain": return .plain
    case "blocked": return .blocked
    default: return .auto
    }
}()

/// How a convolution's implementation is chosen on first use of a shape.
public enum ConvSelection: Sendable {
    /// Time the candidates on the caller's buffers and keep the fastest (inference, benchmarks).
    /// Fastest, but the winner can change from run to run, and with it the last bits of results.
    case autotune
    /// A fixed rule: oneDNN's preferred (blocked) layout when it has one, else the plain layout.
    /// Results are bit-identical from run to run (training, so that a resumed run continues
    /// exactly as an uninterrupted one).
    case deterministic
}

nonisolated(unsafe) private var convSelectionMode: ConvSelection =
    ProcessInfo.processInfo.environment["SENET_CONV_SELECTION"] == "deterministic" ? .deterministic : .autotune

/// Sets how convolution implementations are chosen for shapes not seen yet (call before the
/// first convolution; shapes already planned keep their plan).
public func setConvSelection(_ mode: ConvSelection) { convSelectionMode = mode }

/// SENET_CONV_WINOGRAD=0 leaves oneDNN's Winograd F(4×4, 3×3) out of the candidates.
private let oneDNNWinograd = ProcessInfo.processInfo.environment["SENET_CONV_WINOGRAD"] != "0"

/// SENET_CONV_TUNE=cold times one run per candidate and round, right after the other candidates'
/// runs (the tuning before session 11), instead of two runs in a row (see `convPlan`).
private let tuneWarm = ProcessInfo.processInfo.environment["SENET_CONV_TUNE"] != "cold"

/// SENET_CONV_CHUNKS=0 leaves the sub-batch plans (BatchChunkPlan) out of the candidates.
private let convChunks = ProcessInfo.processInfo.environment["SENET_CONV_CHUNKS"] != "0"

private let convPlans = PlanCache<ConvKey>()
/// SENET_CONV_DEBUG=1 logs every autotuning decision to stderr.
private let convDebug = ProcessInfo.processInfo.environment["SENET_CONV_DEBUG"] != nil

private struct ConvDescs {
    var src, weights, bias, dst: dnnl_memory_desc_t
}

private func convDescs(_ s: Conv2DShape, blocked: Bool) -> ConvDescs {
    let any = dnnl_format_tag_any
    let wdims = s.groups == 1 ? [s.o, s.c, s.kh, s.kw] : [s.groups, s.o / s.groups, s.c / s.groups, s.kh, s.kw]
    let wtag = s.groups == 1 ? dnnl_oihw : dnnl_goihw
    return ConvDescs(
        src: makeMD([s.n, s.c, s.h, s.w], blocked ? any : dnnl_nchw),
        weights: makeMD(wdims, blocked ? any : wtag),
        bias: makeMD([s.o], dnnl_a),
        dst: makeMD([s.n, s.o, s.ho, s.wo], blocked ? any : dnnl_nchw))
}

/// The caller's descriptors: weights O×I×kh×kw, activations NCHW or channel-blocked.
private func userDescs(_ key: ConvKey) -> ConvDescs {
    var d = convDescs(key.shape, blocked: false)
    let s = key.shape
    d.src = makeMD([s.n, s.c, s.h, s.w], activationTag(key.srcBlock))
    d.dst = makeMD([s.n, s.o, s.ho, s.wo], activationTag(key.dstBlock))
    return d
}

private func forwardPD(_ s: Conv2DShape, blocked: Bool, bias: Bool, relu: Bool = false,
                       algorithm: dnnl_alg_kind_t = dnnl_convolution_direct,
                       inference: Bool = false) -> dnnl_primitive_desc_t? {
    var d = convDescs(s, blocked: blocked)
    var desc = dnnl_convolution_desc_t()
    let strides: [Int64] = [Int64(s.sh), Int64(s.sw)]
    let dil: [Int64] = [Int64(s.dh - 1), Int64(s.dw - 1)]
    let pad: [Int64] = [Int64(s.ph), Int64(s.pw)]
    let st = withUnsafePointer(to: &d.bias) { bp in
        dnnl_dilated_convolution_forward_desc_init(&desc, inference ? dnnl_forward_inference : dnnl_forward_training, algorithm,
                                                   &d.src, &d.weights, bias ? bp : nil, &d.dst,
                                                   strides, dil, pad, pad)
    }
    guard st == dnnl_success else { return nil }
    return withUnsafePointer(to: &desc) { firstFastPD(UnsafeRawPointer($0), hint: nil, relu: relu) }
}

/// oneDNN's direct convolution on the layouts it prefers, for probing them (`activationBlock`).
func blockedForwardPD(_ s: Conv2DShape) -> dnnl_primitive_desc_t? { forwardPD(s, blocked: true, bias: false) }

private func makePlan(_ key: ConvKey, blocked: Bool, algorithm: dnnl_alg_kind_t = dnnl_convolution_direct) -> DNNLPlan? {
    let s = key.shape
    let u = userDescs(key)
    // The forward descriptor doubles as the hint oneDNN needs for backward primitives; it is kept
    // alive for the process's lifetime (one per cached shape).
    // Constant weights: oneDNN's Winograd for inference (weights transformed once, kept by the
    // caller); its direct kernels stay those of training (their inference variant, brgconv, lost
    // inside whole networks here), with their reordered weights kept all the same.
    let inference = key.pass == .forward && key.constantWeights && algorithm == dnnl_convolution_winograd
    guard let fwd = forwardPD(s, blocked: blocked, bias: key.bias, relu: key.relu, algorithm: algorithm,
                              inference: inference) else { return nil }
    let strides: [Int64] = [Int64(s.sh), Int64(s.sw)]
    let dil: [Int64] = [Int64(s.dh - 1), Int64(s.dw - 1)]
    let pad: [Int64] = [Int64(s.ph), Int64(s.pw)]
    switch key.pass {
    case .forward:
        var args: [PlanArg] = [
            (senet_arg_src, false, u.src, dnnl_query_src_md, 0),
            (senet_arg_weights, false, u.weights, dnnl_query_weights_md, 0),
            (senet_arg_dst, true, u.dst, dnnl_query_dst_md, 0)]
        if key.bias { args.insert((senet_arg_bias, false, u.bias, dnnl_query_weights_md, 1), at: 2) }
        return DNNLPlan(pd: fwd, args: args)
    case .backwardData:
        var d = convDescs(s, blocked: blocked)
        var desc = dnnl_convolution_desc_t()
        guard dnnl_dilated_convolution_backward_data_desc_init(
            &desc, algorithm, &d.src, &d.weights, &d.dst, strides, dil, pad, pad) == dnnl_success,
              let pd = withUnsafePointer(to: &desc, { firstFastPD(UnsafeRawPointer($0), hint: fwd) })
        else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        return DNNLPlan(pd: pd, args: [
            (senet_arg_diff_dst, false, u.dst, dnnl_query_diff_dst_md, 0),
            (senet_arg_weights, false, u.weights, dnnl_query_weights_md, 0),
            (senet_arg_diff_src, true, u.src, dnnl_query_diff_src_md, 0)])
    case .backwardWeights:
        var d = convDescs(s, blocked: blocked)
        var desc = dnnl_convolution_desc_t()
        let st = withUnsafePointer(to: &d.bias) { bp in
            dnnl_dilated_convolution_backward_weights_desc_init(
                &desc, algorithm, &d.src, &d.weights, key.bias ? bp : nil, &d.dst,
                strides, dil, pad, pad)
        }
        guard st == dnnl_success,
              let pd = withUnsafePointer(to: &desc, { firstFastPD(UnsafeRawPointer($0), hint: fwd) })
        else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        var args: [PlanArg] = [
            (senet_arg_src, false, u.src, dnnl_query_src_md, 0),
            (senet_arg_diff_dst, false, u.dst, dnnl_query_diff_dst_md, 0),
            (senet_arg_diff_weights, true, u.weights, dnnl_query_diff_weights_md, 0)]
        if key.bias { args.append((senet_arg_diff_bias, true, u.bias, dnnl_query_diff_weights_md, 1)) }
        return DNNLPlan(pd: pd, args: args)
    }
}

/// The fixed rule of deterministic selection for oneDNN's Winograd F(4×4, 3×3): at least 32 input
/// and output channels and 784 output pixels per batch (one 28² image, or sixteen 7² ones).
/// Measured on Zen 4 (2 threads), it is then faster than the direct kernel in all three passes —
/// about 2× on ResNet-50's 56² and 28² layers at batch 16, 1.2–1.6× on 14² and 7², 1.1–1.4× on
/// CIFAR's 16² and 8² at batch 128 — and slower below (16 channels; 14² or 7² at batch 1).
func winogradWins(_ s: Conv2DShape) -> Bool {
    s.c >= 32 && s.o >= 32 && s.n * s.ho * s.wo >= 784
}

/// The plans that can run `key` under `policy` (tests run each one against the reference).
func convCandidates(_ key: ConvKey, policy: ConvLayoutPolicy) -> [KernelPlan] {
    var candidates: [KernelPlan] = []
    // oneDNN on plain NCHW: with channel-blocked activations it reorders them at its edges (the
    // only way for grouped convolutions whose groups are narrower than a block).
    if policy != .blocked, let p = makePlan(key, blocked: false) { candidates.append(p) }
    if policy == .auto, key.isPlain, Gemm1x1Plan.applies(key) { candidates.append(Gemm1x1Plan(key)) }
    if policy == .auto, key.isPlain, WinogradPlan.applies(key) { candidates.append(WinogradPlan(key)) }
    if policy == .auto, oneDNNWinograd, let p = makePlan(key, blocked: true, algorithm: dnnl_convolution_winograd) { candidates.append(p) }
    if policy == .auto, convSelectionMode == .autotune, convChunks {
        for chunk in BatchChunkPlan.chunkSizes(key) { candidates.append(BatchChunkPlan(key, chunk: chunk)) }
    }
    if policy != .plain, let p = makePlan(key, blocked: true) { candidates.append(p) }
    if candidates.isEmpty, let p = makePlan(key, blocked: policy == .plain) { candidates.append(p) }
    return candidates
}

/// Runs `key` on the caller's buffers with its plan (chosen on first use, see `convPlan`).
private func convExecute(_ key: ConvKey, _ pointers: [UnsafeMutableRawPointer], constant: ConstantWeights? = nil) {
    let plan = convPlan(key, pointers, constant: constant)
    if let profile = ConvProfile.shared {
        let t0 = DispatchTime.now().uptimeNanoseconds
        plan.execute(pointers, constant: constant)
        profile.add(key, plan.impl, DispatchTime.now().uptimeNanoseconds - t0)
    } else {
        plan.execute(pointers, constant: constant)
    }
}

/// The plan for `key`. On first use the candidates are timed on the caller's buffers (their
/// outputs are overwritten, and hold no result until the plan runs) and the fastest is kept.
/// With `constant`, the candidates are timed with their converted weights kept there, and the
/// copies of those not chosen are dropped.
func convPlan(_ key: ConvKey, _ pointers: [UnsafeMutableRawPointer], constant: ConstantWeights? = nil) -> KernelPlan {
    if let plan = convPlans.cached(key) { return plan }
    if convDebug { FileHandle.standardError.write(Data("conv2d \(key.shape) \(key.pass): tuning\n".utf8)) }
    let candidates = convCandidates(key, policy: convLayoutPolicy)
    guard !candidates.isEmpty else {
        fatalError("conv2d: oneDNN has no non-reference implementation for \(key.shape) (\(key.pass))")
    }
    var best = candidates[0]
    if convSelectionMode == .deterministic {
        // oneDNN's Winograd where the rule says it wins, else the blocked oneDNN plan, which is
        // built last when it exists (see convCandidates).
        best = candidates.first { $0.impl.hasPrefix("jit_wino") && winogradWins(key.shape) }
            ?? candidates[candidates.count - 1]
    } else if candidates.count > 1 {
        // Two warm-up runs each (JIT, page faults), then rounds that visit the candidates in turn;
        // each keeps its fastest run, the estimate least disturbed by other work. At least five
        // rounds, and more (up to 25) while the rounds have lasted under 60 ms: on a shared
        // machine five runs of a sub-millisecond kernel can all land in one burst of other work
        // (a 1.4 ms GEMM once lost to a 2.2 ms blocked kernel that way). Each visit times two
        // runs in a row: a single run right after the other candidates found a candidate that
        // converts 9.4 MB of weights with them evicted (0.6–0.85 ms for a conversion of 0.25 when
        // run again), and `512x7-512-k3s1` at batch 1 kept the 1.5 ms GEMM convolution over the
        // 1.1 ms blocked one. The first run of a visit is the sample the single-run rounds took.
        for p in candidates { p.execute(pointers, constant: constant); p.execute(pointers, constant: constant) }
        var fastest = [Double](repeating: .infinity, count: candidates.count)
        let start = DispatchTime.now().uptimeNanoseconds
        for round in 0..<25 {
            if round >= 5 && DispatchTime.now().uptimeNanoseconds - start > 60_000_000 { break }
            for (i, p) in candidates.enumerated() {
                for _ in 0..<(tuneWarm ? 2 : 1) {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    p.execute(pointers, constant: constant)
                    fastest[i] = min(fastest[i], Double(DispatchTime.now().uptimeNanoseconds - t0))
                }
            }
        }
        best = candidates[fastest.indices.min { fastest[$0] < fastest[$1] }!]
        if convDebug {
            let desc = zip(candidates, fastest).map { "\($0.impl) \(String(format: "%.3f", $1 / 1e6)) ms" }.joined(separator: ", ")
            FileHandle.standardError.write(Data("conv2d \(key.shape) \(key.pass): \(desc) → \(best.impl)\n".utf8))
        }
    }
    if let constant {
        // Only the chosen plan's converted weights stay (a sub-batch plan's are those of the plan
        // it runs, which converts them again if it is ever chosen on its own).
        for p in candidates where p !== best {
            constant.discard(p)
            if let inner = (p as? BatchChunkPlan)?.inner, inner !== (best as? BatchChunkPlan)?.inner { constant.discard(inner) }
        }
    }
    convPlans.store(key, best)
    return best
}

/// SENET_CONV_PROFILE=1: the time spent in each planned convolution (reorders at its edges
/// included; first calls, which tune, excluded), printed to stderr by shape, pass and
/// implementation when the process exits, largest first.
final class ConvProfile: @unchecked Sendable {
    static let shared: ConvProfile? = ProcessInfo.processInfo.environment["SENET_CONV_PROFILE"] == nil ? nil : ConvProfile()
    private let lock = NSLock()
    private var totals: [String: (calls: Int, ns: UInt64)] = [:]

    private init() {
        atexit { ConvProfile.shared?.report() }
    }

    func add(_ key: ConvKey, _ impl: String, _ ns: UInt64) {
        let layouts = key.isPlain ? "" : " layout \(key.srcBlock)→\(key.dstBlock)"
        let label = "\(key.shape) \(key.pass)\(key.bias ? " +bias" : "")\(key.relu ? " +relu" : "")\(layouts) \(impl)"
        lock.lock()
        defer { lock.unlock() }
        let t = totals[label, default: (0, 0)]
        totals[label] = (t.calls + 1, t.ns + ns)
    }

    func report() {
        lock.lock()
        defer { lock.unlock() }
        let all = Double(totals.values.reduce(0) { $0 + $1.ns })
        var out = String(format: "convolutions: %.1f ms in %d calls\n", all / 1e6, totals.values.reduce(0) { $0 + $1.calls })
        for (label, t) in totals.sorted(by: { $0.value.ns > $1.value.ns }) {
            out += String(format: "%10.1f ms %5.1f%% %6d  ", Double(t.ns) / 1e6, 100 * Double(t.ns) / max(all, 1), t.calls) + label + "\n"
        }
        FileHandle.standardError.write(Data(out.utf8))
    }
}

/// The oneDNN implementation chosen for a shape and pass (for benchmarks and diagnostics), or nil
/// if the shape has not run yet.
public func conv2dImplementation(_ shape: Conv2DShape, pass: ConvPass, bias: Bool = false, relu: Bool = false,
                                 inpBlock: Int = 1, outBlock: Int = 1, constantWeights: Bool = false) -> String? {
    convPlans.cached(ConvKey(shape: shape, pass: pass, bias: bias, relu: relu, srcBlock: inpBlock, dstBlock: outBlock,
                             constantWeights: constantWeights))?.impl
}

/// out[N,O,Ho,Wo] = conv(inp[N,C,H,W], weight[O,C/G,kh,kw]) + bias[O].
/// With `relu`, out = max(conv + bias, 0) in the same pass (inference fusion; no backward).
public func conv2dForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, relu: Bool = false, _ s: Conv2DShape,
                          inpBlock: Int = 1, outBlock: Int = 1, constantWeights: ConstantWeights? = nil) {
    var ptrs = [UnsafeMutableRawPointer(mutating: inp), UnsafeMutableRawPointer(mutating: weight)]
    if let b = bias { ptrs.append(UnsafeMutableRawPointer(mutating: b)) }
    ptrs.append(UnsafeMutableRawPointer(out))
    convExecute(ConvKey(shape: s, pass: .forward, bias: bias != nil, relu: relu, srcBlock: inpBlock, dstBlock: outBlock,
                        constantWeights: constantWeights != nil), ptrs, constant: constantWeights)
}

/// dinp[N,C,H,W] = ∂L/∂inp given dout[N,O,Ho,Wo]. Writes (does not accumulate): the autograd
/// tape sums fan-out, which lets oneDNN write its result in place.
public func conv2dBackwardData(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                               weight: UnsafePointer<Float>, _ s: Conv2DShape, inpBlock: Int = 1, outBlock: Int = 1) {
    convExecute(ConvKey(shape: s, pass: .backwardData, bias: false, srcBlock: inpBlock, dstBlock: outBlock),
                [UnsafeMutableRawPointer(mutating: dout), UnsafeMutableRawPointer(mutating: weight),
                 UnsafeMutableRawPointer(dinp)])
}

/// dweight[O,C/G,kh,kw] (and dbias[O]) from inp and dout. Writes (does not accumulate).
public func conv2dBackwardWeights(dweight: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?,
                                  inp: UnsafePointer<Float>, dout: UnsafePointer<Float>, _ s: Conv2DShape,
                                  inpBlock: Int = 1, outBlock: Int = 1) {
    var ptrs = [UnsafeMutableRawPointer(mutating: inp), UnsafeMutableRawPointer(mutating: dout),
                UnsafeMutableRawPointer(dweight)]
    if let db = dbias { ptrs.append(UnsafeMutableRawPointer(db)) }
    convExecute(ConvKey(shape: s, pass: .backwardWeights, bias: dbias != nil, srcBlock: inpBlock, dstBlock: outBlock), ptrs)
}

/// A batch run as consecutive sub-batches of `chunk` images, each through the plan tuned for the
/// sub-batch (which `convPlan` chooses on first use). At batch 16 oneDNN's kernels for a whole
/// batch can lose to the same kernels image by image, whose inputs and reordered copies stay in
/// cache (e.g. 17.7 against 20.8 ms for `128x56-128-k3s2` forward). Backward-weights sums the
/// sub-batches' gradients: the first writes the caller's buffers, the others a scratch added in.
final class BatchChunkPlan: KernelPlan {
    let key: ConvKey
    let chunk: Int
    private let subKey: ConvKey
    private var innerPlan: KernelPlan?
    /// The sub-batch's plan, once chosen.
    var inner: KernelPlan? { lock.withLock { innerPlan } }
    private let lock = NSLock(), runLock = NSLock()
    /// Backward-weights: the gradients of the sub-batches after the first.
    private let scratch: UnsafeMutablePointer<Float>?

    var impl: String { "batch chunks of \(chunk): " + (inner?.impl ?? "untuned") }

    /// Sub-batch sizes worth trying: 1 and 4 for batches of at least 8 that they divide, with
    /// whole channel blocks on both sides (so that a sub-batch is a contiguous slice).
    static func chunkSizes(_ key: ConvKey) -> [Int] {
        let s = key.shape
        guard s.n >= 8, s.c % key.srcBlock == 0, s.o % key.dstBlock == 0 else { return [] }
        return [1, 4].filter { s.n % $0 == 0 && s.n > $0 }
    }

    init(_ key: ConvKey, chunk: Int) {
        self.key = key
        self.chunk = chunk
        var sub = key.shape
        sub.n = chunk
        subKey = ConvKey(shape: sub, pass: key.pass, bias: key.bias, relu: key.relu,
                         srcBlock: key.srcBlock, dstBlock: key.dstBlock, constantWeights: key.constantWeights)
        scratch = key.pass == .backwardWeights
            ? .allocate(capacity: key.shape.weightCount + (key.bias ? key.shape.o : 0)) : nil
    }

    deinit { scratch?.deallocate() }

    func execute(_ p: [UnsafeMutableRawPointer]) { execute(p, constant: nil) }

    func execute(_ p: [UnsafeMutableRawPointer], constant: ConstantWeights?) {
        // One call at a time: the backward-weights scratch is the plan's (a plan is shared by
        // every caller of its shape, on any thread).
        runLock.lock()
        defer { runLock.unlock() }
        let s = key.shape
        let inBytes = chunk * s.c * s.h * s.w * 4, outBytes = chunk * s.o * s.ho * s.wo * 4
        for i in 0..<s.n / chunk {
            var q = p
            switch key.pass {
            case .forward:  // inp, weight, (bias), out
                q[0] += i * inBytes
                q[q.count - 1] += i * outBytes
            case .backwardData:  // dout, weight, dinp
                q[0] += i * outBytes
                q[2] += i * inBytes
            case .backwardWeights:  // inp, dout, dweight, (dbias)
                q[0] += i * inBytes
                q[1] += i * outBytes
                if i > 0, let scratch {
                    q[2] = UnsafeMutableRawPointer(scratch)
                    if key.bias { q[3] = UnsafeMutableRawPointer(scratch + s.weightCount) }
                }
            }
            let plan = inner ?? convPlan(subKey, q, constant: constant)
            if i == 0 { lock.withLock { innerPlan = plan } }
            plan.execute(q, constant: constant)
            if key.pass == .backwardWeights, i > 0, let scratch {
                accumulate(p[2].assumingMemoryBound(to: Float.self), scratch, n: s.weightCount)
                if key.bias {
                    accumulate(p[3].assumingMemoryBound(to: Float.self), scratch + s.weightCount, n: s.o)
                }
            }
        }
    }
}

/// A 1×1 unpadded, ungrouped convolution is a matrix product per image, in NCHW without any
/// reorder: Y_n[O×S] = W[O×C]·X̂_n[C×S], dX̂_n = Wᵀ·dY_n, dW = Σ_n dY_n·X̂_nᵀ (S = Ho·Wo). With
/// stride s, X̂_n = X_n[:, ::s, ::s] is gathered into a scratch buffer (and dX̂_n scattered back).
final class Gemm1x1Plan: KernelPlan {
    let key: ConvKey
    var impl: String {
        if group > 1 { return "gemm1x1:dnnl_sgemm (\(group) images per product)" }
        return key.pass == .forward && key.shape.ho * key.shape.wo == 1 ? "gemm1x1:gemv" : "gemm1x1:dnnl_sgemm"
    }
    private let planes: PlaneMap
    private let scratch: UnsafeMutablePointer<Float>?

    /// Small maps (under 512 output pixels): `group` images are packed side by side (O + C rows
    /// of group·Ho·Wo), so that one GEMM spans them all. Backward-weights: one GEMM with
    /// k = group·Ho·Wo replaces `group` GEMMs with k = Ho·Wo, each of which reads and writes all
    /// of dW (a 7×7 map gives k = 49, and 2048×1024 weights are 8 MB). Forward and backward-data:
    /// one GEMM with n = group·Ho·Wo columns instead of `group` with 49 or 196, which fill the
    /// vector lanes and the cores poorly (148–203 GFLOP/s against 212–227 here, 7² and 14² maps
    /// at batch 16) and each read all of W; at 1×1 maps (an SE block's FCs) every per-image
    /// product is a matrix-vector product.
    private let group: Int
    private let packed: UnsafeMutablePointer<Float>?

    /// How an input plane maps to its subsampled one: a value, so that the parallel loops below
    /// capture no reference to the plan.
    private struct PlaneMap {
        let h, w, ho, wo, sh, sw: Int
        var strided: Bool { sh != 1 || sw != 1 }

        /// One input plane subsampled by the stride (copied when the stride is 1).
        func gather(_ plane: UnsafePointer<Float>, into sub: UnsafeMutablePointer<Float>) {
            if !strided { sub.update(from: plane, count: h * w); return }
            for oy in 0..<ho {
                let row = plane + oy * sh * w, srow = sub + oy * wo
                for ox in 0..<wo { srow[ox] = row[ox * sw] }
            }
        }

        /// The reverse: a subsampled plane written back into a full one, the cells the stride
        /// skips zeroed.
        func scatter(_ sub: UnsafePointer<Float>, into plane: UnsafeMutablePointer<Float>) {
            if !strided { plane.update(from: sub, count: h * w); return }
            plane.update(repeating: 0, count: h * w)
            for oy in 0..<ho {
                let row = plane + oy * sh * w, srow = sub + oy * wo
                for ox in 0..<wo { row[ox * sw] = srow[ox] }
            }
        }
    }

    init(_ key: ConvKey) {
        self.key = key
        let s = key.shape
        planes = PlaneMap(h: s.h, w: s.w, ho: s.ho, wo: s.wo, sh: s.sh, sw: s.sw)
        let hw = s.ho * s.wo
        group = hw < 512 ? min(s.n, max(1, 1024 / hw)) : 1
        packed = group > 1 ? .allocate(capacity: (s.o + s.c) * group * hw) : nil
        // Packed products gather and scatter into the packed buffer instead.
        scratch = planes.strided && packed == nil ? .allocate(capacity: s.c * hw) : nil
    }

    deinit {
        scratch?.deallocate()
        packed?.deallocate()
    }

    static func applies(_ key: ConvKey) -> Bool {
        let s = key.shape
        return s.kh == 1 && s.kw == 1 && s.ph == 0 && s.pw == 0 && s.groups == 1
    }

    /// X̂ ← X[:, ::sh, ::sw] (C planes), or the reverse scatter (other cells zeroed).
    private func gather(_ x: UnsafeMutablePointer<Float>, _ xs: UnsafeMutablePointer<Float>, scatter: Bool) {
        let map = planes
        let (size, subSize) = (map.h * map.w, map.ho * map.wo)
        parallelRanges(key.shape.c, costPerItem: size) { r in
            for ch in r {
                let plane = x + ch * size, sub = xs + ch * subSize
                if scatter { map.scatter(sub, into: plane) } else { map.gather(plane, into: sub) }
            }
        }
    }

    /// body(row, j) for each of `rows` rows and each of `images` images, the rows split between
    /// the threads (packing images side by side, or unpacking them).
    private static func eachRow(_ rows: Int, images: Int, pixels: Int, _ body: (Int, Int) -> Void) {
        parallelRanges(rows, costPerItem: images * pixels) { r in
            for row in r {
                for j in 0..<images { body(row, j) }
            }
        }
    }

    /// body(n0, g) for each group of g images from image n0 on (the last group may be smaller).
    private func eachGroup(_ body: (Int, Int) -> Void) {
        let n = key.shape.n
        for n0 in stride(from: 0, to: n, by: group) { body(n0, min(group, n - n0)) }
    }

    func execute(_ p: [UnsafeMutableRawPointer]) {
        let lock = DNNLRuntime.shared.lock
        lock.lock()
        defer { lock.unlock() }
        let s = key.shape
        let (c, o, hw, inHW) = (s.c, s.o, s.ho * s.wo, s.h * s.w)
        let map = planes
        func f(_ i: Int) -> UnsafeMutablePointer<Float> { p[i].assumingMemoryBound(to: Float.self) }
        /// Image n of the (possibly subsampled) input.
        func input(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> UnsafeMutablePointer<Float> {
            guard let scratch else { return x + n * c * inHW }
            gather(x + n * c * inHW, scratch, scatter: false)
            return scratch
        }
        switch key.pass {
        case .forward:
            let (x, w, y) = (f(0), f(1), f(key.bias ? 3 : 2))
            let bias: UnsafePointer<Float>? = key.bias ? UnsafePointer(f(2)) : nil
            let relu = key.relu
            if let packed {
                // [Y_n0 … Y_nk] = W·[X̂_n0 … X̂_nk]; bias and ReLU as the images are unpacked.
                let ld = group * hw
                let xp = packed, yp = packed + c * ld
                eachGroup { n0, g in
                    Self.eachRow(c, images: g, pixels: hw) { ch, j in
                        map.gather(x + ((n0 + j) * c + ch) * inHW, into: xp + ch * ld + j * hw)
                    }
                    sgemm(transA: false, transB: false, m: o, n: g * hw, k: c, a: w, lda: c, b: xp, ldb: ld,
                          beta: 0, c: yp, ldc: ld)
                    Self.eachRow(o, images: g, pixels: 2 * hw) { row, j in
                        let dst = y + ((n0 + j) * o + row) * hw, src = yp + row * ld + j * hw
                        if bias != nil || relu {
                            affineSerial(dst, src, 1, bias?[row] ?? 0, hw, relu: relu)
                        } else {
                            dst.update(from: src, count: hw)
                        }
                    }
                }
                return
            }
            for n in 0..<s.n {
                let yn = y + n * o * hw
                if hw == 1 {
                    // A matrix-vector product (an SE block's FC or squeeze at batch 1).
                    gemv(rows: o, cols: c, w: w, x: input(x, n), bias: bias, relu: relu, y: yn)
                    continue
                }
                sgemm(transA: false, transB: false, m: o, n: hw, k: c, a: w, lda: c, b: input(x, n), ldb: hw,
                      beta: 0, c: yn, ldc: hw)
                // Bias and ReLU while the image's output is still in cache.
                if bias != nil || relu { biasReLUPlanes(yn, bias: bias, relu: relu, planes: o, size: hw) }
            }
        case .backwardData:
            let (dy, w, dx) = (f(0), f(1), f(2))
            if let packed {
                // [dX̂_n0 … dX̂_nk] = Wᵀ·[dY_n0 … dY_nk], scattered back image by image.
                let ld = group * hw
                let dyp = packed, dxp = packed + o * ld
                eachGroup { n0, g in
                    Self.eachRow(o, images: g, pixels: hw) { row, j in
                        (dyp + row * ld + j * hw).update(from: dy + ((n0 + j) * o + row) * hw, count: hw)
                    }
                    sgemm(transA: true, transB: false, m: c, n: g * hw, k: o, a: w, lda: c, b: dyp, ldb: ld,
                          beta: 0, c: dxp, ldc: ld)
                    Self.eachRow(c, images: g, pixels: inHW) { ch, j in
                        map.scatter(dxp + ch * ld + j * hw, into: dx + ((n0 + j) * c + ch) * inHW)
                    }
                }
                return
            }
            for n in 0..<s.n {
                let target = scratch ?? dx + n * c * inHW
                sgemm(transA: true, transB: false, m: c, n: hw, k: o, a: w, lda: c, b: dy + n * o * hw, ldb: hw,
                      beta: 0, c: target, ldc: hw)
                if let scratch { gather(dx + n * c * inHW, scratch, scatter: true) }
            }
        case .backwardWeights:
            let (x, dy, dw) = (f(0), f(1), f(2))
            if let packed {
                // Images side by side along k: dW = [dY_n0 … dY_nk]·[X̂_n0 … X̂_nk]ᵀ per group.
                let ld = group * hw
                let a = packed, b = packed + o * ld
                eachGroup { n0, g in
                    Self.eachRow(o + c, images: g, pixels: hw) { row, j in
                        if row < o {
                            (a + row * ld + j * hw).update(from: dy + ((n0 + j) * o + row) * hw, count: hw)
                        } else {
                            let ch = row - o
                            map.gather(x + ((n0 + j) * c + ch) * inHW, into: b + ch * ld + j * hw)
                        }
                    }
                    sgemm(transA: false, transB: true, m: o, n: c, k: g * hw, a: a, lda: ld, b: b, ldb: ld,
                          beta: n0 == 0 ? 0 : 1, c: dw, ldc: c)
                }
            } else {
                for n in 0..<s.n {
                    sgemm(transA: false, transB: true, m: o, n: c, k: hw, a: dy + n * o * hw, lda: hw, b: input(x, n),
                          ldb: hw, beta: n == 0 ? 0 : 1, c: dw, ldc: c)
                }
            }
            if key.bias {
                let db = f(3)
                for j in 0..<o {
                    var t = 0.0
                    for n in 0..<s.n { t += sum(dy + (n * o + j) * hw, n: hw) }
                    db[j] = Float(t)
                }
            }
        }
    }
}

// MARK: - The end of an SE residual block in the convolution's epilogue (inference)

/// The one-image plans of `conv2dForwardScaleAddReLU`, nil where oneDNN has no non-reference
/// kernel for the post-op chain.
private let scaleAddReLUPlans = EpiloguePlans("scale+add+relu") { makeScaleAddReLUPlan($0) }

/// Epilogue plans made once per key (nil kept too: no fast kernel for that chain).
private final class EpiloguePlans: @unchecked Sendable {
    private let lock = NSLock()
    private var table: [ConvKey: DNNLPlan?] = [:]
    private let name: String
    private let make: (ConvKey) -> DNNLPlan?

    init(_ name: String, _ make: @escaping (ConvKey) -> DNNLPlan?) { (self.name, self.make) = (name, make) }

    func plan(_ key: ConvKey) -> DNNLPlan? {
        lock.withLock {
            if let known = table[key] { return known }
            let made = make(key)
            table[key] = made
            if convDebug {
                FileHandle.standardError.write(Data("conv2d \(key.shape) \(name) epilogue: \(made?.impl ?? "none")\n".utf8))
            }
            return made
        }
    }

    /// The plan already made for `key`, without making one.
    func existing(_ key: ConvKey) -> DNNLPlan? { lock.withLock { table[key] ?? nil } }
}

extension DNNLPlan {
    /// Runs the plan, timed under SENET_CONV_PROFILE with the epilogue's name after the kernel's.
    fileprivate func executeProfiled(_ ptrs: [UnsafeMutableRawPointer], _ key: ConvKey, constant: ConstantWeights?,
                                     epilogue: String) {
        guard let profile = ConvProfile.shared else { return execute(ptrs, constant: constant) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        execute(ptrs, constant: constant)
        profile.add(key, impl + " " + epilogue, DispatchTime.now().uptimeNanoseconds - t0)
    }
}

/// A forward primitive on the caller's activation layouts with a post-op chain: one binary op
/// per entry of `binary` (its kind and the operand's descriptor, passed at execution after the
/// bias, in this order), then a ReLU. The epilogues of residual blocks' last convolutions.
/// `weights`, when given, is the weights' layout for both the primitive and the caller (no
/// conversion at execution).
private func makeEpiloguePlan(_ key: ConvKey, binary: [(dnnl_alg_kind_t, dnnl_memory_desc_t)],
                              weights: dnnl_memory_desc_t? = nil) -> DNNLPlan? {
    let s = key.shape
    var u = userDescs(key)
    var d = convDescs(s, blocked: true)
    d.src = u.src
    d.dst = u.dst
    if let weights { (d.weights, u.weights) = (weights, weights) }
    let attr = DNNLRuntime.makeAttr { ops in
        for (kind, md) in binary {
            var m = md
            dnnlCheck(dnnl_post_ops_append_binary(ops, kind, &m), "post-op binary")
        }
        dnnlCheck(dnnl_post_ops_append_eltwise(ops, 1, dnnl_eltwise_relu, 0, 0), "post-op relu")
    }
    defer { dnnl_primitive_attr_destroy(attr) }
    var desc = dnnl_convolution_desc_t()
    let strides: [Int64] = [Int64(s.sh), Int64(s.sw)]
    let dil: [Int64] = [Int64(s.dh - 1), Int64(s.dw - 1)]
    let pad: [Int64] = [Int64(s.ph), Int64(s.pw)]
    let st = withUnsafePointer(to: &d.bias) { bp in
        dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct,
                                                   &d.src, &d.weights, key.bias ? bp : nil, &d.dst, strides, dil, pad, pad)
    }
    guard st == dnnl_success,
          let pd = withUnsafePointer(to: &desc, { firstFastPD(UnsafeRawPointer($0), hint: nil, attr: attr) })
    else { return nil }
    defer { dnnl_primitive_desc_destroy(pd) }
    var args: [PlanArg] = [
        (senet_arg_src, false, u.src, dnnl_query_src_md, 0),
        (senet_arg_weights, false, u.weights, dnnl_query_weights_md, 0)]
    if key.bias { args.append((senet_arg_bias, false, u.bias, dnnl_query_weights_md, 1)) }
    for (i, (_, md)) in binary.enumerated() {
        let arg = Int32(senet_arg_post_op_src1(Int32(i)))
        args.append((arg, false, md, dnnl_query_exec_arg_md, Int(arg)))
    }
    args.append((senet_arg_dst, true, u.dst, dnnl_query_dst_md, 0))
    return DNNLPlan(pd: pd, args: args)
}

/// The forward primitive for one image with the post-ops binary multiply (scale, 1×O×1×1),
/// binary add (residual, the output's layout) and ReLU, on the caller's activation layouts.
private func makeScaleAddReLUPlan(_ key: ConvKey) -> DNNLPlan? {
    makeEpiloguePlan(key, binary: [(dnnl_binary_mul, makeMD([1, key.shape.o, 1, 1], dnnl_nchw)),
                                   (dnnl_binary_add, userDescs(key).dst)])
}

/// The one-image plans of `conv2dForwardScaleAddReLU` where the scale goes into the weights:
/// the post-ops binary add (residual) and ReLU, the weights in oneDNN's OIhw{b}i{b}o (b = the
/// activations' channel block) on both sides, nil where that has no non-reference kernel.
private let scaledWeightsPlans = EpiloguePlans("add+relu, weights scaled per image") { key in
    let b = key.srcBlock
    guard b > 1, key.dstBlock == b else { return nil }
    let s = key.shape
    let md = makeMD([s.o, s.c, 1, 1], b == 16 ? dnnl_OIhw16i16o : dnnl_OIhw8i8o)
    return makeEpiloguePlan(key, binary: [(dnnl_binary_add, userDescs(key).dst)], weights: md)
}

/// SENET_SE_SCALED_WEIGHTS=0 keeps the SE scale a post-op on every shape, =all moves it into the
/// weights on every shape (for comparisons).
private let seScaledWeights = ProcessInfo.processInfo.environment["SENET_SE_SCALED_WEIGHTS"]

/// Whether `conv2dForwardScaleAddReLU` scales each image's weights instead of multiplying its
/// output by the scale in the epilogue. oneDNN 2.6's binary-multiply post-op costs its 1×1 kernel
/// 12% of the time on SE-ResNet-50's 56² block ends, 6% on 28², 4% on 14², 3% on 7² (16 images
/// one by one against the same chain without it, Zen 4, 2 threads); running image by image costs
/// nothing measurable there. Scaling an image's O×C weights costs in proportion to C, the post-op
/// in proportion to the map. In the network at batch 16, the two in turn batch by batch, a block
/// end took 12.46 → 11.61 ms on 56², 10.45 → 10.11 on 28², 9.53 → 9.53 on 14² and 8.95 → 10.16
/// on 7² (4 MB of weights per image): hence maps of at least 4·C pixels.
func scalesWeights(_ s: Conv2DShape, inpBlock: Int, outBlock: Int) -> Bool {
    guard seScaledWeights != "0", inpBlock > 1, inpBlock == outBlock, s.kh == 1, s.kw == 1, s.groups == 1,
          s.sh == 1, s.sw == 1, s.ph == 0, s.pw == 0, s.c % inpBlock == 0, s.o % inpBlock == 0 else { return false }
    return seScaledWeights == "all" || s.ho * s.wo >= 4 * s.c
}

/// `weight` (O×C, 1×1) in OIhw{b}i{b}o: element (o, c) at ((o/b · C/b + c/b) · b + c%b) · b + o%b.
private func blockWeights1x1(_ dst: UnsafeMutablePointer<Float>, _ weight: UnsafePointer<Float>, o: Int, c: Int, block b: Int) {
    let cb = c / b
    for ob in 0..<(o / b) {
        for ib in 0..<cb {
            for ci in 0..<b {
                let d = dst + ((ob * cb + ib) * b + ci) * b, src = weight + ob * b * c + ib * b + ci
                for oi in 0..<b { d[oi] = src[oi * c] }
            }
        }
    }
}

/// out = relu((diag(scale)·W)·inp + scale ⊙ bias + residual) image by image, W in
/// OIhw{b}i{b}o (`blockWeights1x1`): the scaled weights of an image are written (both threads)
/// right before its convolution reads them.
private func scaledWeightsScaleAddReLU(_ plan: DNNLPlan, _ key: ConvKey, out: UnsafeMutablePointer<Float>,
                                       inp: UnsafePointer<Float>, blockedWeight: UnsafePointer<Float>,
                                       bias: UnsafePointer<Float>?, scale: UnsafePointer<Float>,
                                       residual: UnsafePointer<Float>, _ s: Conv2DShape) {
    let (o, c, b) = (s.o, s.c, key.srcBlock)
    let cb = c / b
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: (o * c + o) * 4, alignment: 64)
    defer { buffer.deallocate() }
    let w = buffer.assumingMemoryBound(to: Float.self), sb = w + o * c
    let (inStride, outStride) = (c * s.h * s.w, o * s.ho * s.wo)
    for i in 0..<s.n {
        let si = scale + i * o
        parallelRanges(o / b, costPerItem: b * c) { r in
            for ob in r {
                for row in 0..<(cb * b) {
                    let at = (ob * cb * b + row) * b
                    if b == 16 {
                        let v = UnsafeRawPointer(blockedWeight + at).loadUnaligned(as: SIMD16<Float>.self)
                            * UnsafeRawPointer(si + ob * 16).loadUnaligned(as: SIMD16<Float>.self)
                        UnsafeMutableRawPointer(w + at).storeBytes(of: v, as: SIMD16<Float>.self)
                    } else {
                        for oi in 0..<b { w[at + oi] = blockedWeight[at + oi] * si[ob * b + oi] }
                    }
                }
            }
        }
        var ptrs = [UnsafeMutableRawPointer(mutating: inp + i * inStride), UnsafeMutableRawPointer(w)]
        if let bias {
            for j in 0..<o { sb[j] = si[j] * bias[j] }
            ptrs.append(UnsafeMutableRawPointer(sb))
        }
        ptrs += [UnsafeMutableRawPointer(mutating: residual + i * outStride), UnsafeMutableRawPointer(out + i * outStride)]
        plan.executeProfiled(ptrs, key, constant: nil, epilogue: "+add+relu, weights scaled")
    }
}

/// out = max(scale[n, o] · (conv(inp) + bias[o]) + residual, 0): the last convolution of an SE
/// residual block with the SE scale, the residual add and the ReLU in its epilogue (oneDNN
/// post-ops: a binary multiply by the image's excitations, a binary add of the residual, a ReLU),
/// so the block's output is written once and the map before the scale never exists. `scale` is
/// N×O (plain), `residual` has the output's shape and layout (`outBlock`). oneDNN 2.6 broadcasts
/// such an operand over one image only (1×O×1×1; N×O×1×1 falls to its reference kernel), so a
/// batch runs image by image through the one-image plan. Where `scalesWeights` holds, each
/// image's plan instead has the add and the ReLU only, and reads weights scaled by the image's
/// excitations (and a scaled bias). Returns false, having written nothing,
/// when oneDNN has no non-reference kernel for the chain (then compose the ops instead).
public func conv2dForwardScaleAddReLU(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                                      weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                      scale: UnsafePointer<Float>, residual: UnsafePointer<Float>, _ s: Conv2DShape,
                                      inpBlock: Int = 1, outBlock: Int = 1, constantWeights: ConstantWeights? = nil) -> Bool {
    guard s.c % inpBlock == 0, s.o % outBlock == 0 else { return false }
    var one = s
    one.n = 1
    if scalesWeights(s, inpBlock: inpBlock, outBlock: outBlock) {
        let key = ConvKey(shape: one, pass: .forward, bias: bias != nil, srcBlock: inpBlock, dstBlock: outBlock)
        if let plan = scaledWeightsPlans.plan(key) {
            // The blocked weights: kept in `constantWeights` when given, else converted for this call.
            let bytes = s.o * s.c * 4
            let fill = { (p: UnsafeMutableRawPointer) in
                blockWeights1x1(p.assumingMemoryBound(to: Float.self), weight, o: s.o, c: s.c, block: inpBlock)
            }
            let owned = constantWeights == nil ? UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64) : nil
            defer { owned?.deallocate() }
            if let owned { fill(owned) }
            let blocked = owned ?? constantWeights!.copy(for: plan, bytes: bytes, fill: fill)
            scaledWeightsScaleAddReLU(plan, key, out: out, inp: inp, blockedWeight: blocked.assumingMemoryBound(to: Float.self),
                                      bias: bias, scale: scale, residual: residual, s)
            return true
        }
    }
    let key = ConvKey(shape: one, pass: .forward, bias: bias != nil, srcBlock: inpBlock, dstBlock: outBlock,
                      constantWeights: constantWeights != nil)
    guard let plan = scaleAddReLUPlans.plan(key) else { return false }
    let (inStride, outStride) = (s.c * s.h * s.w, s.o * s.ho * s.wo)
    for i in 0..<s.n {
        var ptrs = [UnsafeMutableRawPointer(mutating: inp + i * inStride), UnsafeMutableRawPointer(mutating: weight)]
        if let b = bias { ptrs.append(UnsafeMutableRawPointer(mutating: b)) }
        ptrs += [UnsafeMutableRawPointer(mutating: scale + i * s.o), UnsafeMutableRawPointer(mutating: residual + i * outStride),
                 UnsafeMutableRawPointer(out + i * outStride)]
        plan.executeProfiled(ptrs, key, constant: constantWeights, epilogue: "+scale+add+relu")
    }
    return true
}

/// The oneDNN implementation of `conv2dForwardScaleAddReLU`'s one-image plan for `shape` (its
/// batch size aside), or nil when that has not run or has no fast kernel (diagnostics, tests).
public func conv2dScaleAddReLUImplementation(_ shape: Conv2DShape, bias: Bool = true, inpBlock: Int = 1, outBlock: Int = 1,
                                             constantWeights: Bool = true) -> String? {
    var one = shape
    one.n = 1
    if scalesWeights(shape, inpBlock: inpBlock, outBlock: outBlock),
       let p = scaledWeightsPlans.existing(ConvKey(shape: one, pass: .forward, bias: bias, srcBlock: inpBlock, dstBlock: outBlock)) {
        return p.impl + " (weights scaled per image)"
    }
    let key = ConvKey(shape: one, pass: .forward, bias: bias, srcBlock: inpBlock, dstBlock: outBlock,
                      constantWeights: constantWeights)
    return scaleAddReLUPlans.existing(key)?.impl
}

// MARK: - The end of a plain residual block in the convolution's epilogue (inference)

/// The plans of `conv2dForwardAddReLU` (whole batches), nil where oneDNN has no non-reference
/// kernel for the post-op chain.
private let addReLUPlans = EpiloguePlans("add+relu") { makeAddReLUPlan($0) }

/// The forward primitive with the post-ops binary add (residual, the output's shape and layout)
/// and ReLU, on the caller's activation layouts.
private func makeAddReLUPlan(_ key: ConvKey) -> DNNLPlan? {
    makeEpiloguePlan(key, binary: [(dnnl_binary_add, userDescs(key).dst)])
}

/// out = max(conv(inp) + bias[o] + residual, 0): the last convolution of a plain residual block
/// with the residual add and the ReLU in its epilogue (oneDNN post-ops: a binary add of the
/// residual, a ReLU), so the map before the add is never written and read back. `residual` has
/// the output's shape and layout (`outBlock`). Returns false, having written nothing, when oneDNN
/// has no non-reference kernel for the chain (then compose the ops instead).
public func conv2dForwardAddReLU(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                                 weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                 residual: UnsafePointer<Float>, _ s: Conv2DShape,
                                 inpBlock: Int = 1, outBlock: Int = 1, constantWeights: ConstantWeights? = nil) -> Bool {
    guard s.c % inpBlock == 0, s.o % outBlock == 0 else { return false }
    let key = ConvKey(shape: s, pass: .forward, bias: bias != nil, srcBlock: inpBlock, dstBlock: outBlock,
                      constantWeights: constantWeights != nil)
    guard let plan = addReLUPlans.plan(key) else { return false }
    var ptrs = [UnsafeMutableRawPointer(mutating: inp), UnsafeMutableRawPointer(mutating: weight)]
    if let b = bias { ptrs.append(UnsafeMutableRawPointer(mutating: b)) }
    ptrs += [UnsafeMutableRawPointer(mutating: residual), UnsafeMutableRawPointer(out)]
    plan.executeProfiled(ptrs, key, constant: constantWeights, epilogue: "+add+relu")
    return true
}

/// The oneDNN implementation of `conv2dForwardAddReLU`'s plan for `shape`, or nil when that has
/// not run or has no fast kernel (diagnostics, tests).
public func conv2dAddReLUImplementation(_ shape: Conv2DShape, bias: Bool = true, inpBlock: Int = 1, outBlock: Int = 1,
                                        constantWeights: Bool = true) -> String? {
    let key = ConvKey(shape: shape, pass: .forward, bias: bias, srcBlock: inpBlock, dstBlock: outBlock,
                      constantWeights: constantWeights)
    return addReLUPlans.existing(key)?.impl
}

