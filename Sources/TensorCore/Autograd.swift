// Reverse-mode automatic differentiation over a tape.
//
// Recording happens only inside `valueAndGradient` (or `GradientTape.record`): each op whose
// inputs are on the active tape appends one entry — the tape indices of its inputs and a pullback
// that maps the output's gradient to the inputs' gradients. Backward walks the tape in reverse
// (already a topological order) and sums the gradients of a tensor consumed several times.
// Outside a recording, and inside `withoutGradients`, ops record nothing and pullbacks capture
// nothing, so activations die as soon as the caller drops them.

import Kernels

/// A recording of differentiable operations.
public final class GradientTape {
    /// Maps the output gradient to one gradient per input; `needed[i]` is false for inputs that
    /// are not on the tape (the pullback may skip them and return nil).
    public typealias Pullback = (_ gradient: Tensor, _ needed: [Bool]) -> [Tensor?]

    struct Entry {
        let inputs: [Int]  // tape indices, −1 for untracked inputs
        let pullback: Pullback?  // nil for leaves
        /// The pullback reads a gradient kept as a per-plane scale and offset
        /// (`Tensor.pendingPlaneAffine`) itself; others get it written out.
        var takesPlaneAffine = false
    }

    var entries: [Entry] = []

    @TaskLocal static var current: GradientTape?

    public init() {}

    /// Marks `x` as a leaf of this tape (a variable to differentiate with respect to).
    public func watch(_ x: Tensor) -> Tensor {
        var t = x
        t.trace = (ObjectIdentifier(self), entries.count)
        entries.append(Entry(inputs: [], pullback: nil))
        return t
    }

    /// Runs `body` with this tape recording.
    public func record<R>(_ body: () throws -> R) rethrows -> R {
        try GradientTape.$current.withValue(self) { try body() }
    }

    /// Gradients of `output` (which must have been recorded on this tape) with respect to each of
    /// `inputs`, seeded with `seed` (ones of the output's shape when nil). Consumes the tape.
    ///
    /// `whenReady(k, gradient)` is called once for each `inputs[k]`, as soon as its gradient is
    /// final (every op that consumed it has run its pullback), during the backward walk — what
    /// data-parallel training needs to start reducing gradients while backward goes on. The
    /// order is the same on every run of the same computation.
    public func gradients(of output: Tensor, seed: Tensor? = nil, wrt inputs: [Tensor],
                          whenReady: ((Int, Tensor) -> Void)? = nil) -> [Tensor] {
        let id = ObjectIdentifier(self)
        var grads = [Tensor?](repeating: nil, count: entries.count)
        if let t = output.trace, t.tape == id {
            grads[t.index] = seed ?? Tensor.ones(output.shape)
        }
        // For `whenReady`: the inputs whose first (lowest-index) consumer is entry i, by i.
        var readyAfter: [Int: [Int]] = [:]
        var unconsumed: [Int] = []
        if whenReady != nil {
            var firstUse = [Int](repeating: -1, count: entries.count)
            for (i, e) in entries.enumerated() { for j in e.inputs where j >= 0 && firstUse[j] < 0 { firstUse[j] = i } }
            for (k, x) in inputs.enumerated() {
                if let t = x.trace, t.tape == id, firstUse[t.index] >= 0 {
                    readyAfter[firstUse[t.index], default: []].append(k)
                } else {
                    unconsumed.append(k)
                }
            }
        }
        func gradient(_ x: Tensor) -> Tensor {
            if let t = x.trace, t.tape == id, let g = grads[t.index] { return g.expandedGradient }
            return Tensor.zeros(x.shape)
        }
        for i in stride(from: entries.count - 1, through: 0, by: -1) {
            defer { if let ready = readyAfter[i] { for k in ready { whenReady!(k, gradient(inputs[k])) } } }
            guard var g = grads[i], let pullback = entries[i].pullback else { continue }
            let ins = entries[i].inputs
            if !entries[i].takesPlaneAffine { g = g.expandedGradient }
            grads[i] = nil  // free as we go (leaves, which keep theirs, have no pullback)
            let inputGrads = pullback(g, ins.map { $0 >= 0 })
            // The pullback has run: drop it and the activations it saved now, not when the whole
            // backward pass ends (PyTorch frees a node's saved tensors the same way).
            entries[i] = Entry(inputs: ins, pullback: nil)
            for (j, gi) in zip(ins, inputGrads) where j >= 0 {
                guard let gi else { continue }
                // Taken out of `grads` first, so that the sum is formed in place when nothing
                // else holds the buffer (otherwise copy-on-write copied it at every fan-in).
                if var acc = grads[j].take() {
                    acc.accumulate(gi)
                    grads[j] = acc
                } else {
                    grads[j] = gi.pendingPlaneAffine != nil ? gi : gi.expandedGradient
                }
            }
        }
        for k in unconsumed { whenReady!(k, gradient(inputs[k])) }
        entries.removeAll()
        return inputs.map(gradient)
    }

    /// Records `out` as produced from `inputs` by an op with the given pullback, when a tape is
    /// recording and at least one input is on it. Ops call this after computing their result.
    static func record(_ out: inout Tensor, _ inputs: [Tensor], takesPlaneAffine: Bool = false,
                       _ pullback: @escaping Pullback) {
        guard let tape = current else { return }
        let id = ObjectIdentifier(tape)
        var any = false
        let idx = inputs.map { x -> Int in
            if let t = x.trace, t.tape == id { any = true; return t.index }
            return -1
        }
        guard any else { return }
        out.trace = (id, tape.entries.count)
        tape.entries.append(Entry(inputs: idx, pullback: pullback, takesPlaneAffine: takesPlaneAffine))
    }

    /// True when an op's result would be recorded (lets ops skip saving what only backward needs).
    static func isRecording(_ inputs: Tensor...) -> Bool {
        guard let tape = current else { return false }
        let id = ObjectIdentifier(tape)
        return inputs.contains { $0.trace?.tape == id }
    }
}

extension Tensor {
    /// self += b for equal shapes (gradient accumulation; never recorded), in self's layout.
    mutating func accumulate(_ b: Tensor) {
        trace = nil
        if let pa = pendingPlaneAffine {
            if let pb = b.pendingPlaneBroadcast, pb.shape == shape, pb.block == channelBlock {
                // Added to the offset: no pass over memory at all.
                var offset = pa.offset ?? [Float](repeating: 0, count: shape[0] * shape[1])
                b.withUnsafePointer { v in for i in offset.indices { offset[i] += v[i] * pb.scale } }
                pendingPlaneAffine = (pa.scale, offset)
                return
            }
            self = expandedGradient
        }
        if let pb = b.pendingPlaneBroadcast, pb.shape == shape, rank == 4 {
            let (n, c, s, block) = (shape[0], shape[1], shape[2] * shape[3], channelBlock)
            withUnsafeMutableStorage { o in b.withUnsafePointer { v in
                if block > 1 {
                    blockedAccumulatePlanes(o, value: v, factor: pb.scale, n: n, c: c, s: s, block: block)
                } else {
                    accumulatePlanes(o, value: v, factor: pb.scale, planes: n * c, size: s)
                }
            } }
            return
        }
        let b = b.expandedGradient.inLayout(channelBlock)
        withUnsafeMutableStorage { o in b.withUnsafeStorage { Kernels.accumulate(o, $0, n: b.count) } }
    }

    /// A gradient with `pendingPlaneBroadcast` or `pendingPlaneAffine` written out in full; any
    /// other tensor unchanged.
    var expandedGradient: Tensor {
        if let pa = pendingPlaneAffine {
            var t = Tensor(uninitializedShape: shape, channelBlock: channelBlock)
            t.withUnsafeMutableStorage { o in withUnsafeStorage { x in pa.scale.withUnsafeBufferPointer { sc in
                optionalArrayPointer(pa.offset) { off in
                    blockedPlaneAffine(out: o, inp: x, scale: sc.baseAddress!, offset: off,
                                       n: shape[0], c: shape[1], s: shape[2] * shape[3], block: channelBlock)
                }
            } } }
            return t
        }
        guard let pb = pendingPlaneBroadcast else { return self }
        var t = self
        t.pendingPlaneBroadcast = nil
        return broadcastTo(t, pb.shape, scale: pb.scale, block: pb.block)
    }

    /// Whether this tensor is on the active gradient tape.
    public var isTracked: Bool { GradientTape.isRecording(self) }

    /// The same values, detached from any tape (gradients stop here).
    public var detached: Tensor { var t = self; t.trace = nil; return t }
}

/// Runs `body` without recording gradients: nothing is taped, no activation is kept for backward.
public func withoutGradients<R>(_ body: () throws -> R) rethrows -> R {
    try GradientTape.$current.withValue(nil) { try body() }
}

/// The value of `f` at `inputs` and its gradient with respect to each input. `f` must return a
/// one-element tensor (a loss).
public func valueAndGradient(at inputs: [Tensor], of f: ([Tensor]) -> Tensor) -> (value: Tensor, gradients: [Tensor]) {
    let tape = GradientTape()
    let watched = inputs.map { tape.watch($0) }
    let y = tape.record { f(watched) }
    if y.count != 1 { shapeFailure("valueAndGradient", "the function must return one element, got shape \(y.shape)") }
    let g = tape.gradients(of: y, wrt: watched)
    return (y.detached, g)
}

/// Single-input convenience for `valueAndGradient(at:of:)`.
public func valueAndGradient(at x: Tensor, of f: (Tensor) -> Tensor) -> (value: Tensor, gradient: Tensor) {
    let (v, g) = valueAndGradient(at: [x]) { f($0[0]) }
    return (v, g[0])
}

/// Calls `body` with the array's elements, or nil.
func optionalArrayPointer<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress) }
}
