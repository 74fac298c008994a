// Reference twin of Pooling.swift (Pool2DShape's output size, maxPoolForward/Backward,
// avgPoolForward/Backward): PyTorch's MaxPool2d/AvgPool2d visiting every kh×kw window tap.
// Dims legend: P planes of H×W, kh×kw window, sh×sw stride, ph×pw padding, Ho×Wo output.

import Foundation

extension Reference {
    /// PyTorch's `pooling_output_shape`: ⌊(H + 2p − k)/s⌋ + 1, or ⌈…⌉ + 1 with ceil_mode, where a
    /// last window that would start in the bottom/right padding, (out − 1)·s ≥ H + p, is dropped.
    public static func poolOutputSize(_ h: Int, k: Int, s: Int, p: Int, ceilMode: Bool) -> Int {
        let q = Double(h + 2 * p - k) / Double(s)
        var out = Int(ceilMode ? q.rounded(.up) : q.rounded(.down)) + 1
        if ceilMode && (out - 1) * s >= h + p { out -= 1 }
        return out
    }

    static func poolOutputSize(_ s: Pool2DShape) -> (ho: Int, wo: Int) {
        (poolOutputSize(s.h, k: s.kh, s: s.sh, p: s.ph, ceilMode: s.ceilMode),
         poolOutputSize(s.w, k: s.kw, s: s.sw, p: s.pw, ceilMode: s.ceilMode))
    }

    /// Calls `tap(oy, ox, iy, ix)` for each of the kh×kw window positions of every output, row-major,
    /// with (iy, ix) in the padded frame (may lie outside the input).
    static func forEachPoolTap(_ s: Pool2DShape, _ tap: (Int, Int, Int, Int) -> Void) {
        let (ho, wo) = poolOutputSize(s)
        for oy in 0..<ho { for ox in 0..<wo { for ky in 0..<s.kh { for kx in 0..<s.kw {
            tap(oy, ox, oy * s.sh - s.ph + ky, ox * s.sw - s.pw + kx)
        } } } }
    }

    /// out = max over the in-input cells of each window (padding never wins); argmax = the in-plane
    /// index of the winner: the first strict maximum, or the last NaN (PyTorch's `val > max || isnan(val)`).
    public static func maxPoolForward(inp: [Float], _ s: Pool2DShape) -> (out: [Float], argmax: [Int32]) {
        let (hw, (ho, wo)) = (s.h * s.w, poolOutputSize(s)), ohw = ho * wo
        var out = [Float](repeating: -.infinity, count: s.planes * ohw), arg = [Int32](repeating: -1, count: out.count)
        for p in 0..<s.planes {
            forEachPoolTap(s) { oy, ox, iy, ix in
                guard iy >= 0, iy < s.h, ix >= 0, ix < s.w else { return }
                let o = p * ohw + oy * wo + ox, v = inp[p * hw + iy * s.w + ix]
                if arg[o] < 0 || v > out[o] || v.isNaN { (out[o], arg[o]) = (v, Int32(iy * s.w + ix)) }
            }
        }
        return (out, arg)
    }

    /// dinp: each dout element added to the input cell its window's argmax names.
    public static func maxPoolBackward(dout: [Float], argmax: [Int32], _ s: Pool2DShape) -> [Float] {
        let (hw, (ho, wo)) = (s.h * s.w, poolOutputSize(s)), ohw = ho * wo
        var dinp = [Double](repeating: 0, count: s.planes * hw)
        for i in dout.indices { dinp[(i / ohw) * hw + Int(argmax[i])] += Double(dout[i]) }
        return dinp.map { Float($0) }
    }

    /// Per output: the in-input cells of its window and PyTorch's divisor — with count_include_pad
    /// the window's cells inside the padded frame [−p, H + p) (not those ceil_mode adds past it),
    /// otherwise only the in-input cells.
    static func avgWindows(_ s: Pool2DShape, countIncludePad: Bool) -> [(cells: [Int], div: Double)] {
        let (ho, wo) = poolOutputSize(s)
        var wins = [(cells: [Int], div: Double)](repeating: ([], 0), count: ho * wo)
        forEachPoolTap(s) { oy, ox, iy, ix in
            let o = oy * wo + ox
            let inFrame = iy >= -s.ph && iy < s.h + s.ph && ix >= -s.pw && ix < s.w + s.pw
            let inInput = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w
            if inInput { wins[o].cells.append(iy * s.w + ix) }
            if countIncludePad ? inFrame : inInput { wins[o].div += 1 }
        }
        return wins
    }

    /// out = Σ window / divisor (0 for a window with no input cell).
    public static func avgPoolForward(inp: [Float], _ s: Pool2DShape, countIncludePad: Bool) -> [Float] {
        let wins = avgWindows(s, countIncludePad: countIncludePad), hw = s.h * s.w
        return (0..<(s.planes * wins.count)).map { i in
            let (p, win) = (i / wins.count, wins[i % wins.count])
            return win.cells.isEmpty ? 0 : Float(win.cells.reduce(0.0) { $0 + Double(inp[p * hw + $1]) } / win.div)
        }
    }

    /// dinp: each dout element / divisor added to every input cell of its window.
    public static func avgPoolBackward(dout: [Float], _ s: Pool2DShape, countIncludePad: Bool) -> [Float] {
        let wins = avgWindows(s, countIncludePad: countIncludePad), hw = s.h * s.w
        var dinp = [Double](repeating: 0, count: s.planes * hw)
        for (i, g) in dout.enumerated() {
            let (p, win) = (i / wins.count, wins[i % wins.count])
            for cell in win.cells { dinp[p * hw + cell] += Double(g) / win.div }
        }
        return dinp.map { Float($0) }
    }

    /// Adaptive average pool: cell (i, j) averages rows ⌊i·H/oh⌋ ..< ⌈(i+1)·H/oh⌉ and likewise columns.
    public static func adaptiveAvgPoolForward(inp: [Float], planes: Int, h: Int, w: Int, oh: Int, ow: Int) -> [Float] {
        var out = [Float](repeating: 0, count: planes * oh * ow)
        for p in 0..<planes { for i in 0..<oh { for j in 0..<ow {
            let (y0, y1) = (i * h / oh, Int((Double((i + 1) * h) / Double(oh)).rounded(.up)))
            let (x0, x1) = (j * w / ow, Int((Double((j + 1) * w) / Double(ow)).rounded(.up)))
            var t = 0.0
            for y in y0..<y1 { for x in x0..<x1 { t += Double(inp[(p * h + y) * w + x]) } }
            out[(p * oh + i) * ow + j] = Float(t / Double((y1 - y0) * (x1 - x0)))
        } } }
        return out
    }

    /// Its adjoint: each output gradient spread evenly over its window.
    public static func adaptiveAvgPoolBackward(dout: [Float], planes: Int, h: Int, w: Int, oh: Int, ow: Int) -> [Float] {
        var d = [Double](repeating: 0, count: planes * h * w)
        for p in 0..<planes { for i in 0..<oh { for j in 0..<ow {
            let (y0, y1) = (i * h / oh, Int((Double((i + 1) * h) / Double(oh)).rounded(.up)))
            let (x0, x1) = (j * w / ow, Int((Double((j + 1) * w) / Double(ow)).rounded(.up)))
            let v = Double(dout[(p * oh + i) * ow + j]) / Double((y1 - y0) * (x1 - x0))
            for y in y0..<y1 { for x in x0..<x1 { d[(p * h + y) * w + x] += v } }
        } } }
        return d.map { Float($0) }
    }
}
