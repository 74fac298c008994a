// The fused inference path: a model run through an `InferenceEngine` computes what it computes in
// evaluation mode, with every BatchNorm that directly follows a convolution folded into that
// convolution's weights and bias (W' = W·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β), so the
// normalisation pass over the activations disappears and oneDNN adds the bias in its epilogue.
//
// Which BatchNorms can be folded is found by tracing, not assumed: the first call runs the model
// unfused while recording every convolution and BatchNorm call with the buffers it read and wrote;
// a BatchNorm is folded when the call just before it was a convolution whose output buffer is the
// BatchNorm's input. (Every model of the registry is checked fused against unfused in the tests.)
// The engine snapshots the weights when it folds: build a new engine after changing them. Models
// called outside the engine, or in training mode, are unaffected.

import TensorCore

public final class InferenceEngine: @unchecked Sendable {
    @TaskLocal static var active: InferenceEngine?
    @TaskLocal static var tracer: FusionTracer?

    public let model: Module
    /// Folded weight and bias per convolution.
    private var folded: [ObjectIdentifier: (weight: Tensor, bias: Tensor)] = [:]
    /// BatchNorms that became the identity.
    private var absorbed: Set<ObjectIdentifier> = []
    private var traced = false

    /// An engine for `model`, which is put in evaluation mode.
    public init(_ model: Module) {
        self.model = model
        model.eval()
    }

    /// Number of BatchNorm layers folded into convolutions (after the first call).
    public var foldedCount: Int { absorbed.count }

    /// The model's output for `x`, without gradients.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if model.isTraining { model.eval() }
        if !traced {
            let tracer = FusionTracer()
            let y = withoutGradients { InferenceEngine.$tracer.withValue(tracer) { model(x) } }
            fold(tracer.events)
            traced = true
            return y
        }
        return withoutGradients { InferenceEngine.$active.withValue(self) { model(x) } }
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
            folded[ObjectIdentifier(conv)] = (Tensor(shape: conv.weight.shape, scalars: wf), Tensor(shape: [o], scalars: bf))
            absorbed.insert(ObjectIdentifier(bn))
        }
    }

    /// Whether an engine is running the current forward pass (layers may take fused paths).
    public static var isFusing: Bool { active != nil }

    /// The folded (weight, bias) of `conv` while an engine runs it.
    static func foldedParameters(_ conv: Conv2d) -> (weight: Tensor, bias: Tensor)? {
        guard let e = active, !conv.isTraining else { return nil }
        return e.folded[ObjectIdentifier(conv)]
    }

    /// Whether `bn` is the identity while an engine runs it (its work was folded upstream).
    static func isAbsorbed(_ bn: BatchNorm2d) -> Bool {
        guard let e = active, !bn.isTraining else { return false }
        return e.absorbed.contains(ObjectIdentifier(bn))
    }

    static func trace(_ m: Module, input: Tensor, output: Tensor) {
        guard let t = tracer else { return }
        t.events.append(.init(module: m, input: input.withUnsafePointer { UInt(bitPattern: $0) },
                              output: output.withUnsafePointer { UInt(bitPattern: $0) }))
    }
}

/// The convolution and BatchNorm calls of one forward pass, with their buffers.
final class FusionTracer: @unchecked Sendable {
    struct Event {
        let module: Module
        let input: UInt
        let output: UInt
    }
    var events: [Event] = []
}
