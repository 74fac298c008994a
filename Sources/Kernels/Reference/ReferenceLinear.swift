// Reference twin of Linear.swift (linearForward, linearBackwardData, linearBackwardWeights):
// y = x·Wᵀ + b as explicit dot products in Double. Dims legend: B rows, I inputs, O outputs.

extension Reference {
    /// out[B,O] = Σ_I inp[B,I] · weight[O,I] + bias[O].
    public static func linearForward(inp: [Float], weight: [Float], bias: [Float]?, b: Int, i: Int, o: Int) -> [Float] {
        var out = [Float](repeating: 0, count: b * o)
        for r in 0..<b { for j in 0..<o {
            var t = Double(bias?[j] ?? 0)
            for k in 0..<i { t += Double(inp[r * i + k]) * Double(weight[j * i + k]) }
            out[r * o + j] = Float(t)
        } }
        return out
    }

    /// dinp[B,I] = Σ_O dout[B,O] · weight[O,I].
    public static func linearBackwardData(dout: [Float], weight: [Float], b: Int, i: Int, o: Int) -> [Float] {
        var dinp = [Float](repeating: 0, count: b * i)
        for r in 0..<b { for k in 0..<i {
            var t = 0.0
            for j in 0..<o { t += Double(dout[r * o + j]) * Double(weight[j * i + k]) }
            dinp[r * i + k] = Float(t)
        } }
        return dinp
    }

    /// dweight[O,I] = Σ_B dout[B,O] · inp[B,I]; dbias[O] = Σ_B dout[B,O].
    public static func linearBackwardWeights(inp: [Float], dout: [Float], b: Int, i: Int, o: Int)
        -> (dweight: [Float], dbias: [Float]) {
        var dw = [Float](repeating: 0, count: o * i), db = [Float](repeating: 0, count: o)
        for j in 0..<o {
            for k in 0..<i {
                var t = 0.0
                for r in 0..<b { t += Double(dout[r * o + j]) * Double(inp[r * i + k]) }
                dw[j * i + k] = Float(t)
            }
            db[j] = Float((0..<b).reduce(0.0) { $0 + Double(dout[$1 * o + j]) })
        }
        return (dw, db)
    }
}
