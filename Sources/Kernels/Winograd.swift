// Winograd F(2×2, 3×3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016) for 3×3 kernels with stride 1, padding 1, no dilation and no groups — the 3×3
// layers of ResNets. Each 2×2 output tile comes from a 4×4 input tile:
//   Y = Aᵀ [ Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B) ] A,
// so the 36 multiplications per tile and channel pair of direct convolution become 16, done as
// 16 matrix products M_ξ[O × T] = U_ξ[O × C] · V_ξ[C × T], run as one batched oneDNN matmul
// (T = the tiles of a chunk of tile rows, sized so that V and M stay in the last-level cache).
// Backward-data of such a layer is the same convolution with the kernel rotated by 180° and its
// channel axes swapped, so it runs on the same plan. Weights are transformed on every call
// (training changes them).
//
// It is one more candidate for the autotuner (Conv2D.swift), which keeps it only where it is
// faster: on this project's machines, 28² and 14² maps at batch 16; on 7² maps the 4×4 tiles waste
// a third of the work and oneDNN's direct kernels win. F(2×2, 3×3)'s matrices hold only 0, ±1 and
// ±½, so results stay within a few ulps of direct convolution (ConvCandidateTests,
// WinogradAccuracyTests). SENET_WINOGRAD_PROFILE=1 prints the time of each phase.

import CDNNL
import Foundation

private let winogradProfile = ProcessInfo.processInfo.environment["SENET_WINOGRAD_PROFILE"] != nil

final class WinogradPlan: KernelPlan {
    let key: ConvKey
    var impl: String { "winograd:f2x2_3x3+" + (products.values.first??.impl ?? "dnnl_sgemm") }
    /// The convolution computed: cin → cout channels on h×w maps (swapped for backward-data).
    private let cin: Int, cout: Int, n: Int, h: Int, w: Int
    private let tilesH: Int, tilesW: Int
    /// Tile rows per chunk (the GEMMs' N dimension is rowsPerChunk · tilesW).
    private let rowsPerChunk: Int
    private let u: UnsafeMutablePointer<Float>
    private let v: UnsafeMutablePointer<Float>
    private let m: UnsafeMutablePointer<Float>
    /// The 16 products of a chunk as one batched oneDNN matmul (brgemm kernels), by chunk width;
    /// nil where oneDNN has no fast one (then 16 sgemm calls).
    private var products: [Int: DNNLPlan?] = [:]
    /// Guards the plan's scratch buffers (oneDNN calls take the runtime's own lock).
    private let lock = NSLock()

    static func applies(_ key: ConvKey) -> Bool {
        let s = key.shape
        return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.ph == 1 && s.pw == 1 && s.dh == 1 && s.dw == 1
            && s.groups == 1 && key.pass != .backwardWeights && s.c >= 8 && s.o >= 8
    }

    init(_ key: ConvKey) {
        self.key = key
        let s = key.shape
        (cin, cout) = key.pass == .forward ? (s.c, s.o) : (s.o, s.c)
        (n, h, w) = (s.n, s.h, s.w)
        (tilesH, tilesW) = ((s.h + 1) / 2, (s.w + 1) / 2)
        // Keep a chunk's transformed input and output near 8 MB each (they live in L3 between
        // the transforms and the products), but give the products at least ~64 columns.
        let budget = 131_072 / max(cin, cout)
        let units = n * tilesH
        rowsPerChunk = min(units, max(1, max(budget, 64) / tilesW))
        let tc = rowsPerChunk * tilesW
        u = .allocate(capacity: 16 * cout * cin)
        v = .allocate(capacity: 16 * cin * tc)
        m = .allocate(capacity: 16 * cout * tc)
    }

    deinit {
        u.deallocate()
        v.deallocate()
        m.deallocate()
    }

    /// U_ξ[co][ci] = (G g Gᵀ)_ξ for the kernel g of (co, ci); `flip` for backward-data, where
    /// g'[c][o] is the original g[o][c] rotated by 180°.
    private func transformWeights(_ g: UnsafePointer<Float>, flip: Bool) {
        let (cin, cout, u) = (cin, cout, u)
        let plane = cout * cin
        parallelRanges(cout, costPerItem: cin * 40) { range in
            // One output channel's 16 × cin values are built locally, then copied as 16 rows:
            // writing them straight to the 16 planes (a power-of-two stride apart for typical
            // widths) thrashes the cache sets.
            let tmp = UnsafeMutablePointer<Float>.allocate(capacity: 16 * cin)
            defer { tmp.deallocate() }
            for co in range {
                for ci in 0..<cin {
                    let src = flip ? g + (ci * cout + co) * 9 : g + (co * cin + ci) * 9
                    // k(r, c) of the (possibly rotated) kernel; G·g column by column, then ·Gᵀ.
                    @inline(__always) func k(_ r: Int, _ c: Int) -> Float { flip ? src[8 - 3 * r - c] : src[3 * r + c] }
                    var q = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
                    withUnsafeMutableBytes(of: &q) { raw in
                        let q = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                        for j in 0..<3 {
                            let (a, b, c) = (k(0, j), k(1, j), k(2, j))
                            q[j] = a
                            q[3 + j] = 0.5 * (a + b + c)
                            q[6 + j] = 0.5 * (a - b + c)
                            q[9 + j] = c
                        }
                        for i in 0..<4 {
                            let (a, b, c) = (q[3 * i], q[3 * i + 1], q[3 * i + 2])
                            tmp[(4 * i) * cin + ci] = a
                            tmp[(4 * i + 1) * cin + ci] = 0.5 * (a + b + c)
                            tmp[(4 * i + 2) * cin + ci] = 0.5 * (a - b + c)
                            tmp[(4 * i + 3) * cin + ci] = c
                        }
                    }
                }
                for xi in 0..<16 { (u + xi * plane + co * cin).update(from: tmp + xi * cin, count: cin) }
            }
        }
    }

    /// V_ξ[c][t] for the tile rows `units` (unit = image · tilesH + tile row) of input `x`.
    private func transformInput(_ x: UnsafePointer<Float>, units: Range<Int>) {
        let (cin, h, w, tw, th, v) = (cin, h, w, tilesW, tilesH, v)
        let tc = units.count * tw
        let plane = cin * tc
        let padded = 2 * tw + 2
        parallelRanges(cin, costPerItem: units.count * tw * 64) { range in
            // Four row combinations, zero-padded by one column on the left and up to 2·tw + 2.
            let rows = UnsafeMutablePointer<Float>.allocate(capacity: 4 * padded)
            let zero = UnsafeMutablePointer<Float>.allocate(capacity: w)
            defer { rows.deallocate(); zero.deallocate() }
            rows.initialize(repeating: 0, count: 4 * padded)
            zero.initialize(repeating: 0, count: w)
            let (r0, r1, r2, r3) = (rows + 1, rows + padded + 1, rows + 2 * padded + 1, rows + 3 * padded + 1)
            for c in range {
                for (slot, unit) in units.enumerated() {
                    let (img, ty) = (unit / th, unit % th)
                    let src = x + (img * cin + c) * h * w
                    func row(_ k: Int) -> UnsafePointer<Float> {
                        let y = 2 * ty - 1 + k
                        return y < 0 || y >= h ? UnsafePointer(zero) : src + y * w
                    }
                    let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3))
                    // Bᵀ d: r0 = d0 − d2, r1 = d1 + d2, r2 = d2 − d1, r3 = d1 − d3.
                    for p in 0..<w {
                        r0[p] = d0[p] - d2[p]
                        r1[p] = d1[p] + d2[p]
                        r2[p] = d2[p] - d1[p]
                        r3[p] = d1[p] - d3[p]
                    }
                    // (·)B on each row, tile t covering padded columns 2t…2t+3 = (e0, o0, e1, o1):
                    // (e0 − e1, o0 + e1, e1 − o0, o0 − o1).
                    let base = v + c * tc + slot * tw
                    for i in 0..<4 {
                        let r = rows + i * padded
                        let v0 = base + (4 * i) * plane, v1 = base + (4 * i + 1) * plane
                        let v2 = base + (4 * i + 2) * plane, v3 = base + (4 * i + 3) * plane
                        for t in 0..<tw {
                            let e0 = r[2 * t], o0 = r[2 * t + 1], e1 = r[2 * t + 2], o1 = r[2 * t + 3]
                            v0[t] = e0 - e1
                            v1[t] = o0 + e1
                            v2[t] = e1 - o0
                            v3[t] = o0 - o1
                        }
                    }
                }
            }
        }
    }

    /// Y[2ty…2ty+1][2tx…2tx+1] = Aᵀ M A (+ bias, then max(·, 0) for a fused ReLU) for the tile rows `units`.
    private func transformOutput(_ y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, units: Range<Int>) {
        let (cout, h, w, tw, th, m) = (cout, h, w, tilesW, tilesH, m)
        let relu = key.relu
        let tc = units.count * tw
        let plane = cout * tc
        parallelRanges(cout, costPerItem: units.count * tw * 48) { range in
            for o in range {
                let b = bias?[o] ?? 0
                for (slot, unit) in units.enumerated() {
                    let (img, ty) = (unit / th, unit % th)
                    let dst = y + (img * cout + o) * h * w
                    let base = m + o * tc + slot * tw
                    let row0 = dst + 2 * ty * w
                    let hasRow1 = 2 * ty + 1 < h
                    let row1 = dst + (hasRow1 ? 2 * ty + 1 : 2 * ty) * w
                    for t in 0..<tw {
                        // Aᵀ m: p0_j = m0j + m1j + m2j, p1_j = m1j − m2j − m3j.
                        var a0 = Float(0), a1 = Float(0), a2 = Float(0), a3 = Float(0)
                        var b0 = Float(0), b1 = Float(0), b2 = Float(0), b3 = Float(0)
                        for j in 0..<4 {
                            let m0 = base[j * plane + t], m1 = base[(4 + j) * plane + t]
                            let m2 = base[(8 + j) * plane + t], m3 = base[(12 + j) * plane + t]
                            let p = m0 + m1 + m2, q = m1 - m2 - m3
                            switch j {
                            case 0: (a0, b0) = (p, q)
                            case 1: (a1, b1) = (p, q)
                            case 2: (a2, b2) = (p, q)
                            default: (a3, b3) = (p, q)
                            }
                        }
                        let x0 = 2 * t
                        @inline(__always) func act(_ v: Float) -> Float { relu && v < 0 ? 0 : v }
                        row0[x0] = act(a0 + a1 + a2 + b)
                        if x0 + 1 < w { row0[x0 + 1] = act(a1 - a2 - a3 + b) }
                        if hasRow1 {
                            row1[x0] = act(b0 + b1 + b2 + b)
                            if x0 + 1 < w { row1[x0 + 1] = act(b1 - b2 - b3 + b) }
                        }
                    }
                }
            }
        }
    }

    /// M[16][cout][tc] = U[16][cout][cin] · V[16][cin][tc] as one batched matmul primitive.
    private func productPlan(_ tc: Int) -> DNNLPlan? {
        if let p = products[tc] { return p }
        var src = makeMD([16, cout, cin], dnnl_abc), wei = makeMD([16, cin, tc], dnnl_abc), dst = makeMD([16, cout, tc], dnnl_abc)
        var desc = dnnl_matmul_desc_t()
        var plan: DNNLPlan? = nil
        if dnnl_matmul_desc_init(&desc, &src, &wei, nil, &dst) == dnnl_success,
           let pd = withUnsafePointer(to: &desc, { firstFastPD(UnsafeRawPointer($0), hint: nil) }) {
            plan = DNNLPlan(pd: pd, args: [
                (senet_arg_src, false, src, dnnl_query_src_md, 0),
                (senet_arg_weights, false, wei, dnnl_query_weights_md, 0),
                (senet_arg_dst, true, dst, dnnl_query_dst_md, 0)])
            dnnl_primitive_desc_destroy(pd)
        }
        products[tc] = plan
        return plan
    }

    func execute(_ p: [UnsafeMutableRawPointer]) {
        lock.lock()
        defer { lock.unlock() }
        func f(_ i: Int) -> UnsafeMutablePointer<Float> { p[i].assumingMemoryBound(to: Float.self) }
        let x: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>
        var bias: UnsafeMutablePointer<Float>? = nil
        switch key.pass {
        case .forward:
            (x, g, y) = (f(0), f(1), f(key.bias ? 3 : 2))
            if key.bias { bias = f(2) }
        default:
            (x, g, y) = (f(0), f(1), f(2))
        }
        var clock = DispatchTime.now().uptimeNanoseconds
        var phases = [Double](repeating: 0, count: 4)
        func lap(_ i: Int) {
            let now = DispatchTime.now().uptimeNanoseconds
            phases[i] += Double(now - clock) / 1e6
            clock = now
        }
        transformWeights(g, flip: key.pass != .forward)
        lap(0)
        let units = n * tilesH
        var start = 0
        while start < units {
            let range = start..<min(units, start + rowsPerChunk)
            let tc = range.count * tilesW
            transformInput(x, units: range)
            lap(1)
            if let plan = productPlan(tc) {
                plan.execute([UnsafeMutableRawPointer(u), UnsafeMutableRawPointer(v), UnsafeMutableRawPointer(m)])
            } else {
                DNNLRuntime.shared.lock.lock()
                for xi in 0..<16 {
                    sgemm(transA: false, transB: false, m: cout, n: tc, k: cin, a: u + xi * cout * cin, lda: cin,
                          b: v + xi * cin * tc, ldb: tc, beta: 0, c: m + xi * cout * tc, ldc: tc)
                }
                DNNLRuntime.shared.lock.unlock()
            }
            lap(2)
            transformOutput(y, bias: bias, units: range)
            lap(3)
            start = range.upperBound
        }
        if winogradProfile { FileHandle.standardError.write(Data("winograd \(key.shape) \(key.pass): weights \(phases[0]) input \(phases[1]) gemm \(phases[2]) output \(phases[3]) ms\n".utf8)) }
    }
}
