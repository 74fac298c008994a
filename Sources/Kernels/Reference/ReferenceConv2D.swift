// Reference twin of Conv2D.swift (conv2dForward, conv2dBackwardData, conv2dBackwardWeights):
// PyTorch's grouped, strided, padded, dilated cross-correlation written as the definition, one
// multiply-accumulate per loop iteration, summed in Double.

extension Reference {
    /// Calls `tap(x, w, y)` with the flat indices of every input, weight and output element one
    /// multiply-accumulate of the convolution connects: output (n, o, oy, ox) reads input channel
    /// g·C/G + ci of group g = o / (O/G) at (oy·sh − ph + ky·dh, ox·sw − pw + kx·dw); taps that land
    /// in the zero padding contribute nothing and are skipped.
    static func forEachConvTap(_ s: Conv2DShape, _ tap: (_ x: Int, _ w: Int, _ y: Int) -> Void) {
        let cg = s.c / s.groups, og = s.o / s.groups, ho = s.ho, wo = s.wo
        for n in 0..<s.n { for o in 0..<s.o { for ci in 0..<cg { for ky in 0..<s.kh { for kx in 0..<s.kw {
            let c = (o / og) * cg + ci
            for oy in 0..<ho { for ox in 0..<wo {
                let iy = oy * s.sh - s.ph + ky * s.dh, ix = ox * s.sw - s.pw + kx * s.dw
                guard iy >= 0, iy < s.h, ix >= 0, ix < s.w else { continue }
                tap(((n * s.c + c) * s.h + iy) * s.w + ix,
                    ((o * cg + ci) * s.kh + ky) * s.kw + kx,
                    ((n * s.o + o) * ho + oy) * wo + ox)
            } }
        } } } } }
    }

    /// out[N,O,Ho,Wo] = Σ inp[N,C,H,W] · weight[O,C/G,kh,kw] + bias[O].
    public static func conv2dForward(inp: [Float], weight: [Float], bias: [Float]?, _ s: Conv2DShape) -> [Float] {
        var out = [Double](repeating: 0, count: s.outputCount)
        forEachConvTap(s) { x, w, y in out[y] += Double(inp[x]) * Double(weight[w]) }
        if let bias {
            for i in out.indices { out[i] += Double(bias[(i / (s.ho * s.wo)) % s.o]) }
        }
        return out.map { Float($0) }
    }

    /// dinp[N,C,H,W]: each tap sends dout · weight back to the input element it read.
    public static func conv2dBackwardData(dout: [Float], weight: [Float], _ s: Conv2DShape) -> [Float] {
        var dinp = [Double](repeating: 0, count: s.inputCount)
        forEachConvTap(s) { x, w, y in dinp[x] += Double(dout[y]) * Double(weight[w]) }
        return dinp.map { Float($0) }
    }

    /// dweight[O,C/G,kh,kw] = Σ over taps of inp · dout; dbias[O] = Σ_{N,Ho,Wo} dout.
    public static func conv2dBackwardWeights(inp: [Float], dout: [Float], _ s: Conv2DShape)
        -> (dweight: [Float], dbias: [Float]) {
        var dw = [Double](repeating: 0, count: s.weightCount), db = [Double](repeating: 0, count: s.o)
        forEachConvTap(s) { x, w, y in dw[w] += Double(inp[x]) * Double(dout[y]) }
        for i in dout.indices { db[(i / (s.ho * s.wo)) % s.o] += Double(dout[i]) }
        return (dw.map { Float($0) }, db.map { Float($0) })
    }
}
