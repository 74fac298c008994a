// Max and average pooling over NCHW planes, with PyTorch's output-size and window rules.
//
// Dims legend: P = N·C independent planes of H×W, kh×kw window, sh×sw stride, ph×pw padding,
// Ho×Wo output. With ceil_mode the last window may hang past the input, but PyTorch drops a
// window that would *start* in the right/bottom padding: (out − 1)·s ≥ H + p ⇒ out −= 1.

public struct Pool2DShape: Hashable, Sendable {
    public var planes, h, w, kh, kw, sh, sw, ph, pw: Int
    public var ceilMode: Bool

    public init(planes: Int, h: Int, w: Int, kh: Int, kw: Int, sh: Int, sw: Int, ph: Int = 0, pw: Int = 0,
                ceilMode: Bool = false) {
        (self.planes, self.h, self.w, self.kh, self.kw) = (planes, h, w, kh, kw)
        (self.sh, self.sw, self.ph, self.pw, self.ceilMode) = (sh, sw, ph, pw, ceilMode)
    }

    static func outSize(_ i: Int, _ k: Int, _ s: Int, _ p: Int, _ ceil: Bool) -> Int {
        let span = i + 2 * p - k
        var o = (ceil ? (span + s - 1) / s : span / s) + 1
        if ceil && (o - 1) * s >= i + p { o -= 1 }
        return o
    }

    public var ho: Int { Pool2DShape.outSize(h, kh, sh, ph, ceilMode) }
    public var wo: Int { Pool2DShape.outSize(w, kw, sw, pw, ceilMode) }

    /// The input rows ya..<yb of output row oy's window (clipped to the map: padding is skipped).
    @inline(__always)
    func rows(_ oy: Int) -> (Int, Int) { let y0 = oy * sh - ph; return (max(y0, 0), min(y0 + kh, h)) }

    /// The input columns xa..<xb of output column ox's window.
    @inline(__always)
    func columns(_ ox: Int) -> (Int, Int) { let x0 = ox * sw - pw; return (max(x0, 0), min(x0 + kw, w)) }
}

/// out[p, oy, ox] = max over the window; `argmax` records the flat in-plane index of the winner
/// (first one on ties; a NaN wins, the last NaN when several, as PyTorch).
public func maxPoolForward(out: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>?,
                           inp: UnsafePointer<Float>, _ s: Pool2DShape) {
    let ho = s.ho, wo = s.wo
    parallelRanges(s.planes, costPerItem: ho * wo * s.kh * s.kw) { r in
        for p in r {
            let x = inp + p * s.h * s.w
            let o = out + p * ho * wo
            for oy in 0..<ho {
                let (ya, yb) = s.rows(oy)
                for ox in 0..<wo {
                    let (xa, xb) = s.columns(ox)
                    var best = -Float.infinity, bi = ya * s.w + xa
                    for yy in ya..<yb {
                        for xx in xa..<xb {
                            let v = x[yy * s.w + xx]
                            if v > best || v.isNaN { best = v; bi = yy * s.w + xx }
                        }
                    }
                    o[oy * wo + ox] = best
                    argmax?[p * ho * wo + oy * wo + ox] = Int32(bi)  // nil in inference
                }
            }
        }
    }
}

/// dinp = scatter-add of dout to the argmax positions (dinp is written, zeros elsewhere).
public func maxPoolBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                            argmax: UnsafePointer<Int32>, _ s: Pool2DShape) {
    let ho = s.ho, wo = s.wo, hw = s.h * s.w
    parallelRanges(s.planes, costPerItem: ho * wo + hw) { r in
        for p in r {
            let d = dinp + p * hw
            d.update(repeating: 0, count: hw)
            let g = dout + p * ho * wo, a = argmax + p * ho * wo
            for i in 0..<(ho * wo) { d[Int(a[i])] += g[i] }
        }
    }
}

/// The window of output (oy, ox) clipped to the input, and PyTorch's divisor.
@inline(__always)
func avgWindow(_ s: Pool2DShape, _ oy: Int, _ ox: Int, _ countIncludePad: Bool)
    -> (ya: Int, yb: Int, xa: Int, xb: Int, div: Float) {
    var y0 = oy * s.sh - s.ph, x0 = ox * s.sw - s.pw
    var y1 = min(y0 + s.kh, s.h + s.ph), x1 = min(x0 + s.kw, s.w + s.pw)
    let poolSize = (y1 - y0) * (x1 - x0)
    y0 = max(y0, 0); x0 = max(x0, 0); y1 = min(y1, s.h); x1 = min(x1, s.w)
    let div = countIncludePad ? poolSize : (y1 - y0) * (x1 - x0)
    return (y0, y1, x0, x1, Float(div))
}

/// out = window sum / divisor (count_include_pad as PyTorch: the divisor counts padding cells
/// inside the padded input but never cells past it that ceil_mode adds).
public func avgPoolForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, _ s: Pool2DShape,
                           countIncludePad: Bool) {
    let ho = s.ho, wo = s.wo
    parallelRanges(s.planes, costPerItem: ho * wo * s.kh * s.kw) { r in
        for p in r {
            let x = inp + p * s.h * s.w, o = out + p * ho * wo
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let win = avgWindow(s, oy, ox, countIncludePad)
                    var t: Float = 0
                    if win.ya < win.yb && win.xa < win.xb {
                        for yy in win.ya..<win.yb { for xx in win.xa..<win.xb { t += x[yy * s.w + xx] } }
                    }
                    o[oy * wo + ox] = t / win.div
                }
            }
        }
    }
}

/// dinp[window] += dout / divisor (dinp is written).
public func avgPoolBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, _ s: Pool2DShape,
                            countIncludePad: Bool) {
    let ho = s.ho, wo = s.wo, hw = s.h * s.w
    parallelRanges(s.planes, costPerItem: ho * wo * s.kh * s.kw) { r in
        for p in r {
            let d = dinp + p * hw, g = dout + p * ho * wo
            d.update(repeating: 0, count: hw)
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let win = avgWindow(s, oy, ox, countIncludePad)
                    guard win.ya < win.yb && win.xa < win.xb else { continue }
                    let v = g[oy * wo + ox] / win.div
                    for yy in win.ya..<win.yb { for xx in win.xa..<win.xb { d[yy * s.w + xx] += v } }
                }
            }
        }
    }
}

/// Global max pool: out[p] = max of plane p, argmax[p] its index.
public func globalMaxPoolForward(out: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>,
                                 inp: UnsafePointer<Float>, planes: Int, size: Int) {
    maxPoolForward(out: out, argmax: argmax, inp: inp,
                   Pool2DShape(planes: planes, h: 1, w: size, kh: 1, kw: size, sh: 1, sw: size))
}

/// PyTorch's adaptive-pool window along one axis: [⌊i·size/out⌋, ⌈(i+1)·size/out⌉).
@inline(__always)
func adaptiveRange(_ i: Int, _ out: Int, _ size: Int) -> Range<Int> {
    (i * size / out)..<(((i + 1) * size + out - 1) / out)
}

/// Adaptive average pooling of `planes` H×W planes to oh×ow (windows may overlap).
public func adaptiveAvgPoolForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, planes: Int,
                                   h: Int, w: Int, oh: Int, ow: Int) {
    parallelRanges(planes, costPerItem: h * w + oh * ow) { r in
        for p in r {
            let x = inp + p * h * w, o = out + p * oh * ow
            for oy in 0..<oh {
                let ys = adaptiveRange(oy, oh, h)
                for ox in 0..<ow {
                    let xs = adaptiveRange(ox, ow, w)
                    var t: Float = 0
                    for yy in ys { for xx in xs { t += x[yy * w + xx] } }
                    o[oy * ow + ox] = t / Float(ys.count * xs.count)
                }
            }
        }
    }
}

/// dinp[window] += dout / window size (dinp is written).
public func adaptiveAvgPoolBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, planes: Int,
                                    h: Int, w: Int, oh: Int, ow: Int) {
    parallelRanges(planes, costPerItem: h * w + oh * ow) { r in
        for p in r {
            let d = dinp + p * h * w, g = dout + p * oh * ow
            d.update(repeating: 0, count: h * w)
            for oy in 0..<oh {
                let ys = adaptiveRange(oy, oh, h)
                for ox in 0..<ow {
                    let xs = adaptiveRange(ox, ow, w)
                    let v = g[oy * ow + ox] / Float(ys.count * xs.count)
                    for yy in ys { for xx in xs { d[yy * w + xx] += v } }
                }
            }
        }
    }
}
