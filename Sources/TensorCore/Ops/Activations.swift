// Pointwise non-linearities: ReLU (He et al.), sigmoid (the SE gate, paper §3.2), tanh and
// hard-sigmoid (the paper's Table 12 gate ablation; MobileNetV3's SE gate).

import Kernels

typealias UnaryKernel = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int) -> Void

/// Applies a pointwise kernel, in the input's storage layout; its pullback reads the output
/// (`fromOutput`) or the input.
func pointwise(_ x: Tensor, _ forward: UnaryKernel, fromOutput: Bool,
               _ backward: @escaping (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Void) -> Tensor {
    var out = Tensor(uninitializedShape: x.shape, channelBlock: x.channelBlock)
    out.withUnsafeMutableStorage { o in x.withUnsafeStorage { forward(o, $0, x.count) } }
    if GradientTape.isRecording(x) {
        let saved = fromOutput ? out.detached : x.detached
        GradientTape.record(&out, [x]) { g, _ in
            let g = g.inLayout(saved.channelBlock)
            var dx = Tensor(uninitializedShape: g.shape, channelBlock: g.channelBlock)
            dx.withUnsafeMutableStorage { d in g.withUnsafeStorage { pg in saved.withUnsafeStorage { backward(d, pg, $0, g.count) } } }
            return [dx]
        }
    }
    return out
}

/// max(x, 0), any shape (NaN stays NaN, as PyTorch). Gradient 1 where the output is positive.
public func relu(_ x: Tensor) -> Tensor {
    let recording = GradientTape.isRecording(x)
    if x.isRectified && !recording {
        ReLUTrace.current?.record(input: x, output: x)
        return x
    }
    let y = pointwise(x, { reluForward(out: $0, inp: $1, n: $2) }, fromOutput: true) {
        reluBackward(dinp: $0, dout: $1, out: $2, n: $3)
    }
    ReLUTrace.current?.record(input: x, output: y)
    return y
}

/// Observes `relu` calls (the inference engine's tracer: which convolutions a ReLU directly follows).
public final class ReLUTrace: @unchecked Sendable {
    @TaskLocal public static var current: ReLUTrace?
    private let onReLU: (Tensor, Tensor) -> Void

    /// `onReLU(input, output)` receives each call's input and output.
    public init(_ onReLU: @escaping (_ input: Tensor, _ output: Tensor) -> Void) { self.onReLU = onReLU }

    func record(input: Tensor, output: Tensor) { onReLU(input, output) }
}

/// 1 / (1 + e^−x), any shape.
public func sigmoid(_ x: Tensor) -> Tensor {
    pointwise(x, { sigmoidForward(out: $0, inp: $1, n: $2) }, fromOutput: true) {
        sigmoidBackward(dinp: $0, dout: $1, out: $2, n: $3)
    }
}

/// tanh(x), any shape.
public func tanh(_ x: Tensor) -> Tensor {
    pointwise(x, { tanhForward(out: $0, inp: $1, n: $2) }, fromOutput: true) {
        tanhBackward(dinp: $0, dout: $1, out: $2, n: $3)
    }
}

/// clamp(x/6 + 1/2, 0, 1), any shape (PyTorch `hardsigmoid`).
public func hardSigmoid(_ x: Tensor) -> Tensor {
    pointwise(x, { hardSigmoidForward(out: $0, inp: $1, n: $2) }, fromOutput: false) {
        hardSigmoidBackward(dinp: $0, dout: $1, inp: $2, n: $3)
    }
}

/// min(max(x, 0), 6), any shape (MobileNetV2). Gradient 1 where 0 < x < 6.
public func relu6(_ x: Tensor) -> Tensor {
    pointwise(x, { relu6Forward(out: $0, inp: $1, n: $2) }, fromOutput: false) {
        relu6Backward(dinp: $0, dout: $1, inp: $2, n: $3)
    }
}

/// x · relu6(x + 3) / 6, any shape (MobileNetV3's hard-swish).
public func hardSwish(_ x: Tensor) -> Tensor {
    pointwise(x, { hardSwishForward(out: $0, inp: $1, n: $2) }, fromOutput: false) {
        hardSwishBackward(dinp: $0, dout: $1, inp: $2, n: $3)
    }
}
