// The fused inference path: a model run through an `InferenceEngine` computes what it computes in
// evaluation mode, with
// - every BatchNorm that directly follows a convolution folded into that convolution's weights
//   and bias (W' = W·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β), so the normalisation pass over the
//   activations disappears and oneDNN adds the bias in its epilogue;
// - every ReLU that directly follows such a convolution (or a convolution without BatchNorm)
//   computed in the convolution's epilogue (a oneDNN post-op, or the GEMM/Winograd output pass),
//   the ReLU call itself then returning its already rectified input;
// - SE scale + residual add + ReLU in one pass where the blocks ask for it (`isFusing`), and in
//   the epilogue of the block's last convolution where that is a 1×1 convolution
//   (`seBlockEnd`: the squeeze then comes from the pooled input of that convolution);
// - each folded weight converted once to the layout its convolution kernel reads (oneDNN's
//   blocked weights, or its Winograd-transformed ones for `forward_inference`) and kept, instead
//   of converted at every call (`ConstantWeights`).
//
// What can be fused is found by tracing, not assumed: the first call runs the model unfused on the
// batch's first image while recording every convolution, BatchNorm and ReLU call with the buffers
// it read and wrote; a BatchNorm is folded when the call just before it was a convolution whose
// output buffer is the BatchNorm's input, and a ReLU is fused when its input is such a
// convolution's (or folded BatchNorm's) output. The same first call then runs the fused model on
// that image and compares: if the outputs disagree by more than rounding (a fused ReLU whose
// input had another reader, say), ReLU fusion is dropped, and if they still disagree, all fusion —
// the engine never returns a silently different result. (Every model of the registry is also checked fused
// against unfused in the tests.) The engine snapshots the weights when it folds: build a new
// engine after changing them. Models called outside the engine, or in training mode, are
// unaffected.

import Foundation
import TensorCore

public final class InferenceEngine: @unchecked Sendable {
    @TaskLocal static var active: InferenceEngine?
    @TaskLocal static var tracer: FusionTracer?

    public let model: Module
    /// Folded weight and bias per convolution, with the folded weight converted to the layouts of
    /// the convolution plans that read it (made on first use, kept for the engine's life).
    private var folded: [ObjectIdentifier: (weight: Tensor, bias: Tensor, converted: ConstantWeights)] = [:]
    /// Whether the folded weights' converted copies are used (not during the first call's check,
    /// which runs a single image: its plans' copies would stay alive beside the batch's).
    private var convertsWeights = true
    /// Per SE block whose squeeze comes from its block's last convolution (`seBlockEnd`): fc1
    /// composed with that convolution's folded weights (made on first use).
    private var squeezeProducts: [ObjectIdentifier: (weight: Tensor, bias: Tensor)] = [:]
    private let squeezeProductsLock = NSLock()
    /// BatchNorms that became the identity.
    private var absorbed: Set<ObjectIdentifier> = []
    /// Convolutions whose following ReLU runs in their epilogue.
    var rectifying: Set<ObjectIdentifier> = []
    private var traced = false
    /// The largest difference between fused and unfused outputs, relative to the output's largest
    /// magnitude, that the first call's check accepts (BN folding changes the rounding only).
    static let agreement: Float = 1e-3

    /// An engine for `model`, which is put in evaluation mode.
    public init(_ model: Module) {
        self.model = model
        model.eval()
    }

    /// Number of BatchNorm layers folded into convolutions (after the first call).
    public var foldedCount: Int { absorbed.count }
    /// Number of ReLUs computed in a convolution's epilogue (after the first call).
    public var fusedReLUCount: Int { rectifying.count }

    /// The first call's tracing and checking, one caller at a time (later calls only read).
    private let setup = NSLock()

    /// The model's output for `x`, without gradients. Callers on several threads may share an
    /// engine: the first call's tracing runs once, the others wait for it.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        setup.withLock { prepare(x) }
        return run(x)
    }

    /// Evaluation mode, and on the first call the tracing, folding and check (under `setup`).
    private func prepare(_ x: Tensor) {
        if model.isTraining { model.eval() }
        if !traced {
            // Trace and check on the first image alone: the tracer keeps every activation of
            // the pass alive, which for a whole batch would raise the peak memory many times.
            let probe = firstImage(x)
            let tracer = FusionTracer()
            let y = withoutGradients {
                InferenceEngine.$tracer.withValue(tracer) {
                    ReLUTrace.$current.withValue(ReLUTrace { tracer.events.append(.init(module: nil, input: $0, output: $1)) }) { model(probe) }
                }
            }
            fold(tracer.events)
            traced = true
            // The check: fused against unfused on this input; drop what disagrees.
            convertsWeights = false
            if !agrees(run(probe), y) {
                rectifying = []
                if !agrees(run(probe), y) { folded = [:]; absorbed = [] }
            }
            convertsWeights = true
        }
    }

    /// Image 0 of a batch (the batch itself when it holds one image).
    private func firstImage(_ x: Tensor) -> Tensor {
        guard x.rank >= 2, x.shape[0] > 1 else { return x }
        let per = x.count / x.shape[0]
        return x.withUnsafePointer { Tensor(shape: [1] + x.shape.dropFirst(), scalars: Array(UnsafeBufferPointer(start: $0, count: per))) }
    }

    func run(_ x: Tensor) -> Tensor {
        withoutGradients { InferenceEngine.$active.withValue(self) { model(x) } }
    }

    private func agrees(_ a: Tensor, _ b: Tensor) -> Bool {
        guard a.shape == b.shape else { return false }
        let (u, v) = (a.scalars, b.scalars)
        var scale: Float = 0, worst: Float = 0
        for (p, q) in zip(u, v) {
            scale = max(scale, abs(q))
            if p.isNaN != q.isNaN { return false }
            if !p.isNaN { worst = max(worst, abs(p - q)) }
        }
        return worst <= InferenceEngine.agreement * max(scale, 1e-30)
    }

    private func fold(_ events: [FusionTracer.Event]) {
        for (i, e) in events.enumerated() where i > 0 {
            guard let bn = e.module as? BatchNorm2d, let conv = events[i - 1].module as? Conv2d,
                  events[i - 1].output == e.input, conv.weight.shape[0] == bn.weight.shape[0],
                  folded[ObjectIdentifier(conv)] == nil else { continue }
            let o = conv.weight.shape[0], perOut = conv.weight.value.count / o
            let gamma = bn.weight.value.scalars, beta = bn.bias.value.scalars
            let mean = bn.runningMean.value.scalars, variance = bn.runningVar.value.scalars
            let scale = (0..<o).map { gamma[$0] / (variance[$0] + bn.eps).squareRoot() }
            let w = conv.weight.value.scalars
            var wf = [Float](repeating: 0, count: w.count)
            for j in 0..<o { for k in 0..<perOut { wf[j * perOut + k] = w[j * perOut + k] * scale[j] } }
            let b0 = conv.bias?.value.scalars ?? [Float](repeating: 0, count: o)
            let bf = (0..<o).map { (b0[$0] - mean[$0]) * scale[$0] + beta[$0] }
            folded[ObjectIdentifier(conv)] = (Tensor(shape: conv.weight.shape, scalars: wf), Tensor(shape: [o], scalars: bf),
                                              ConstantWeights())
            absorbed.insert(ObjectIdentifier(bn))
        }
        // A ReLU right after a convolution, or after a BatchNorm folded into the one before it.
        for (i, e) in events.enumerated() where i > 0 && e.module == nil {
            let before = events[i - 1]
            if let conv = before.module as? Conv2d, before.output == e.input {
                rectifying.insert(ObjectIdentifier(conv))
            } else if let bn = before.module as? BatchNorm2d, absorbed.contains(ObjectIdentifier(bn)), before.output == e.input,
                      i > 1, let conv = events[i - 2].module as? Conv2d, events[i - 2].output == before.input,
                      folded[ObjectIdentifier(conv)] != nil {
                rectifying.insert(ObjectIdentifier(conv))
            }
        }
    }

    /// Whether an engine is running the current forward pass (layers may take fused paths).
    public static var isFusing: Bool { active != nil }

    /// The folded (weight, bias) of `conv` while an engine runs it, and the store of its
    /// converted weights.
    static func foldedParameters(_ conv: Conv2d) -> (weight: Tensor, bias: Tensor, converted: ConstantWeights?)? {
        guard let e = active, !conv.isTraining, let f = e.folded[ObjectIdentifier(conv)] else { return nil }
        return (f.weight, f.bias, e.convertsWeights ? f.converted : nil)
    }

    /// Bytes of folded weights kept converted to the convolutions' layouts.
    public var convertedWeightBytes: Int { folded.values.reduce(0) { $0 + $1.converted.bytes } }

    /// Whether `conv`'s following ReLU runs in its epilogue while an engine runs it.
    static func fusesReLU(_ conv: Conv2d) -> Bool {
        guard let e = active, !conv.isTraining else { return false }
        return e.rectifying.contains(ObjectIdentifier(conv))
    }

    /// Whether `bn` is the identity while an engine runs it (its work was folded upstream).
    static func isAbsorbed(_ bn: BatchNorm2d) -> Bool {
        guard let e = active, !bn.isTraining else { return false }
        return e.absorbed.contains(ObjectIdentifier(bn))
    }

    /// SENET_SE_EPILOGUE=0 keeps the SE scale, residual add and ReLU as their own pass after the
    /// block's last convolution (for comparisons).
    private static let seEpilogue = ProcessInfo.processInfo.environment["SENET_SE_EPILOGUE"] != "0"
    private static let seEpilogueEverywhere = ProcessInfo.processInfo.environment["SENET_SE_EPILOGUE"] == "all"

    /// Whether an engine runs `conv` (1×1, stride 1, no padding, its BatchNorm `bn` folded in)
    /// followed by `se` (average squeeze) such that `seBlockEnd` may compute the block's end.
    public static func fusesBlockEnd(_ conv: Conv2d, _ bn: BatchNorm2d, _ se: SqueezeExcitation) -> Bool {
        guard seEpilogue, runsFolded(conv, bn), !se.isTraining, se.config.squeeze == .average,
              conv.weight.shape[2] == 1, conv.weight.shape[3] == 1, conv.groups == 1,
              conv.stride == (1, 1), conv.padding == (0, 0), conv.dilation == (1, 1) else { return false }
        return true
    }

    /// relu(se(bn(conv(x))) + residual) with the SE scale, the residual add and the ReLU in the
    /// convolution's epilogue, or nil where that kernel is not available (compose the ops then).
    /// The squeeze needs the convolution's output before the convolution has run; for a 1×1
    /// convolution with stride 1 it does not: the spatial mean of W·x + b is W·mean(x) + b, so the
    /// squeeze is the folded convolution applied to the pooled input, a product of the weights
    /// with one vector per image, and the pass that averaged the block's (four times wider)
    /// output is gone too. Since fc1 is linear too, fc1 of that squeeze is one product of the
    /// pooled input with W1·W, fc1's weights composed with the convolution's once per engine: a
    /// C'×C matrix, 1/16 of W's O×C for the paper's r = 16 (SE-ResNet-50: 1.3 MB of weights read
    /// per batch instead of W's 20 MB and fc1's 5 MB). Call only where `fusesBlockEnd` holds.
    public static func seBlockEnd(_ conv: Conv2d, _ se: SqueezeExcitation, input x: Tensor, residual: Tensor) -> Tensor? {
        // Composed with fc1 (below), the squeeze reads C'×C weights, C' = O/16. Not composed, it
        // reads the O×C weights once per call, and the passes it replaces about four N·H·W×O
        // maps: then it pays only where N·H·W exceeds C (measured, SE-ResNet-50 at batch 1: a
        // loss on the 14² and 7² stages, a gain on 56² and 28²).
        guard x.rank == 4, composedSqueeze || x.shape[0] * x.shape[2] * x.shape[3] >= x.shape[1] || seEpilogueEverywhere,
              let e = active, let f = foldedParameters(conv) else { return nil }
        let s: Tensor
        if composedSqueeze {
            // fc1(W·mean(x) + b) = (W1·W)·mean(x) + (W1·b + b1): one product with the C'×C matrix
            // W1·W (C' = C/16 wide) instead of the O×C weights W (O = 4C) and then fc1's C'×O.
            let p = e.squeezeProduct(se, f)
            s = se.excitation(fc1Output: conv2d(globalAvgPool2d(x), weight: p.weight, bias: p.bias))
        } else {
            s = se.excitation(squeezed: conv2d(globalAvgPool2d(x), weight: f.weight, bias: f.bias))
        }
        return conv2dScaleAddReLU(x, weight: f.weight, bias: f.bias, scale: s, residual: residual, constantWeights: f.converted)
    }

    /// SENET_SE_COMPOSED=0 computes a fused block end's squeeze as W·mean(x) + b, then fc1 (for
    /// comparisons).
    private static let composedSqueeze = ProcessInfo.processInfo.environment["SENET_SE_COMPOSED"] != "0"

    /// `se`'s fc1 composed with the folded 1×1 convolution (weight W [O, C, 1, 1], bias b) whose
    /// output it squeezes: weight W1·W [C', C, 1, 1] and bias W1·b + b1, summed in Double.
    private func squeezeProduct(_ se: SqueezeExcitation, _ f: (weight: Tensor, bias: Tensor, converted: ConstantWeights?))
        -> (weight: Tensor, bias: Tensor) {
        squeezeProductsLock.withLock {
            if let p = squeezeProducts[ObjectIdentifier(se)] { return p }
            let (o, c, r) = (f.weight.shape[0], f.weight.shape[1], se.fc1.weight.shape[0])
            precondition(se.fc1.weight.shape[1] == o, "SE block on \(se.fc1.weight.shape[1]) channels after a convolution with \(o)")
            let w = f.weight.scalars, b = f.bias.scalars, w1 = se.fc1.weight.value.scalars
            let b1 = se.fc1.bias?.value.scalars ?? [Float](repeating: 0, count: r)
            var m = [Float](repeating: 0, count: r * c), mb = [Float](repeating: 0, count: r)
            var row = [Double](repeating: 0, count: c)
            w.withUnsafeBufferPointer { wp in
                row.withUnsafeMutableBufferPointer { rp in
                    for j in 0..<r {
                        rp.update(repeating: 0)
                        var t = Double(b1[j])
                        for i in 0..<o {
                            let a = Double(w1[j * o + i])
                            t += a * Double(b[i])
                            for k in 0..<c { rp[k] += a * Double(wp[i * c + k]) }
                        }
                        for k in 0..<c { m[j * c + k] = Float(rp[k]) }
                        mb[j] = Float(t)
                    }
                }
            }
            let p = (Tensor(shape: [r, c, 1, 1], scalars: m), Tensor(shape: [r], scalars: mb))
            squeezeProducts[ObjectIdentifier(se)] = p
            return p
        }
    }

    /// SENET_PLAIN_EPILOGUE=0 keeps a plain block's residual add and ReLU as their own pass after
    /// its last convolution (for comparisons).
    private static let plainEpilogue = ProcessInfo.processInfo.environment["SENET_PLAIN_EPILOGUE"] != "0"

    /// Whether an engine runs `conv` (its BatchNorm `bn` folded in) such that `plainBlockEnd` may
    /// compute a plain residual block's end, relu(bn(conv(x)) + residual), in its epilogue.
    public static func fusesPlainBlockEnd(_ conv: Conv2d, _ bn: BatchNorm2d) -> Bool {
        plainEpilogue && runsFolded(conv, bn)
    }

    /// Whether an engine is running (not tracing, nothing captured or recorded) with `bn` folded
    /// into `conv`: the condition both block-end fusions start from.
    private static func runsFolded(_ conv: Conv2d, _ bn: BatchNorm2d) -> Bool {
        guard let e = active, tracer == nil, !conv.isTraining, ActivationCapture.current == nil,
              LayerRecorder.current == nil else { return false }
        return e.absorbed.contains(ObjectIdentifier(bn)) && e.folded[ObjectIdentifier(conv)] != nil
    }

    /// relu(bn(conv(x)) + residual) with the residual add and the ReLU in the convolution's
    /// epilogue (as SE blocks' ends, less the scale), or nil where that kernel is not available
    /// (compose the ops then). Call only where `fusesPlainBlockEnd` holds.
    public static func plainBlockEnd(_ conv: Conv2d, input x: Tensor, residual: Tensor) -> Tensor? {
        guard let f = foldedParameters(conv) else { return nil }
        return conv2dAddReLU(x, weight: f.weight, bias: f.bias, residual: residual, stride: conv.stride,
                             padding: conv.padding, dilation: conv.dilation, groups: conv.groups,
                             constantWeights: f.converted)
    }

    static func trace(_ m: Module, input: Tensor, output: Tensor) {
        tracer?.events.append(.init(module: m, input: input, output: output))
    }
}

/// The convolution, BatchNorm and ReLU calls of one forward pass, with their buffers. The events
/// hold the tensors themselves, so no buffer is freed and reused during the traced pass: equal
/// addresses mean the same tensor (with addresses alone, a freed SE excitation and a later sum of
/// the same size could share one, and a ReLU would be fused into the wrong convolution).
final class FusionTracer: @unchecked Sendable {
    /// A convolution or BatchNorm call, or a ReLU call (`module` nil).
    struct Event {
        let module: Module?
        let inputTensor: Tensor
        let outputTensor: Tensor

        init(module: Module?, input: Tensor, output: Tensor) {
            (self.module, inputTensor, outputTensor) = (module, input, output)
        }

        // Storage addresses (`withUnsafePointer` would hand out a fresh NCHW copy of a
        // channel-blocked tensor).
        var input: UInt { inputTensor.withUnsafeStorage { UInt(bitPattern: $0) } }
        var output: UInt { outputTensor.withUnsafeStorage { UInt(bitPattern: $0) } }
    }
    var events: [Event] = []
}
