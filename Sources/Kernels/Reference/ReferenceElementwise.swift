// Reference twin of Elementwise.swift (activations forward/backward, add, mul, affine, scalePlanes,
// sumPlanes, dotPlanes), in Double, one element at a time.

import Foundation

extension Reference {
    /// max(x, 0).
    public static func reluForward(inp: [Float]) -> [Float] { inp.map { max($0, 0) } }
    /// dout except where out ≤ 0 (0 at exactly 0; a NaN output passes the gradient), as PyTorch.
    public static func reluBackward(dout: [Float], out: [Float]) -> [Float] { zip(dout, out).map { $1 <= 0 ? 0 : $0 } }

    /// 1/(1 + e^(−x)).
    public static func sigmoidForward(inp: [Float]) -> [Float] { inp.map { Float(1 / (1 + exp(-Double($0)))) } }
    /// dout·y·(1 − y), y = sigmoid(x).
    public static func sigmoidBackward(dout: [Float], out: [Float]) -> [Float] {
        zip(dout, out).map { Float(Double($0) * Double($1) * (1 - Double($1))) }
    }

    /// tanh(x).
    public static func tanhForward(inp: [Float]) -> [Float] { inp.map { Float(tanh(Double($0))) } }
    /// dout·(1 − y²), y = tanh(x).
    public static func tanhBackward(dout: [Float], out: [Float]) -> [Float] {
        zip(dout, out).map { Float(Double($0) * (1 - Double($1) * Double($1))) }
    }

    /// relu6(x + 3)/6 = clamp(x/6 + 1/2, 0, 1) (PyTorch `hardsigmoid`).
    public static func hardSigmoidForward(inp: [Float]) -> [Float] { inp.map { Float(min(max(Double($0) + 3, 0), 6) / 6) } }
    /// dout/6 on the open interval −3 < x < 3, else 0.
    public static func hardSigmoidBackward(dout: [Float], inp: [Float]) -> [Float] {
        zip(dout, inp).map { abs($1) < 3 ? Float(Double($0) / 6) : 0 }
    }

    /// min(max(x, 0), 6).
    public static func relu6Forward(inp: [Float]) -> [Float] { inp.map { min(max($0, 0), 6) } }
    /// dout where 0 < x < 6, else 0.
    public static func relu6Backward(dout: [Float], inp: [Float]) -> [Float] {
        zip(dout, inp).map { $1 > 0 && $1 < 6 ? $0 : 0 }
    }

    /// x·relu6(x + 3)/6.
    public static func hardSwishForward(inp: [Float]) -> [Float] {
        inp.map { Float(Double($0) * min(max(Double($0) + 3, 0), 6) / 6) }
    }
    /// 0 below −3, dout·(2x + 3)/6 on [−3, 3], dout above.
    public static func hardSwishBackward(dout: [Float], inp: [Float]) -> [Float] {
        zip(dout, inp).map { (d: Float, x: Float) -> Float in
            if x < -3 { return 0 }
            if x > 3 { return d }
            let slope: Double = (2 * Double(x) + 3) / 6
            return Float(Double(d) * slope)
        }
    }

    /// a + b (also the twin of `accumulate`).
    public static func add(a: [Float], b: [Float]) -> [Float] { zip(a, b).map { $0 + $1 } }
    /// a·b.
    public static func mul(a: [Float], b: [Float]) -> [Float] { zip(a, b).map { $0 * $1 } }
    /// a·scale + shift.
    public static func affine(a: [Float], scale: Float, shift: Float) -> [Float] {
        a.map { Float(Double($0) * Double(scale) + Double(shift)) }
    }

    /// out[p,i] = x[p,i]·s[p] over planes of `size` (the SE channel scale).
    public static func scalePlanes(x: [Float], s: [Float], size: Int) -> [Float] { x.indices.map { x[$0] * s[$0 / size] } }
    /// out[p,i] = max(x[p,i]·s[p] + r[p,i], 0).
    public static func scaleAddReLUPlanes(x: [Float], s: [Float], residual r: [Float], size: Int) -> [Float] {
        x.indices.map { max(x[$0] * s[$0 / size] + r[$0], 0) }
    }
    /// out[p] = Σ_i x[p,i] (the SE squeeze; with size = count, the twin of `sum`).
    public static func sumPlanes(x: [Float], size: Int) -> [Float] { dotPlanes(a: x, b: x.map { _ in 1 }, size: size) }
    /// out[p] = Σ_i a[p,i]·b[p,i].
    public static func dotPlanes(a: [Float], b: [Float], size: Int) -> [Float] {
        stride(from: 0, to: a.count, by: size).map { p in
            Float((p..<(p + size)).reduce(0.0) { $0 + Double(a[$1]) * Double(b[$1]) })
        }
    }

    /// max(a + b, 0), the sum rounded to Float first (NaN stays NaN).
    public static func addReLUForward(a: [Float], b: [Float]) -> [Float] {
        zip(a, b).map { x, y in
            let sum: Float = x + y
            return sum.isNaN ? sum : max(sum, 0)
        }
    }

    /// One step of torch.optim.SGD (dampening 0), one element at a time, in Float as PyTorch:
    /// d = g + decay·w; b = d on the first step (`buffer` nil), else μ·b + d; w −= lr·(d + μ·b if
    /// Nesterov, else b). Without momentum (μ = 0) there is no buffer: w −= lr·d.
    public static func sgdUpdate(weights: [Float], gradient: [Float], buffer: [Float]?, learningRate lr: Float,
                                 momentum mu: Float, decay: Float, nesterov: Bool) -> (weights: [Float], buffer: [Float]?) {
        var w = weights
        var b = mu == 0 ? nil : (buffer ?? [Float](repeating: 0, count: w.count))
        for i in w.indices {
            let decayed: Float = decay * w[i]
            let d: Float = gradient[i] + decayed
            var direction = d
            if b != nil {
                let scaled: Float = mu * b![i]
                b![i] = buffer == nil ? d : scaled + d
                let ahead: Float = mu * b![i]
                direction = nesterov ? d + ahead : b![i]
            }
            let step: Float = lr * direction
            w[i] = w[i] - step
        }
        return (w, b)
    }
}
