// Reshaping: same elements, new dimensions (no copy).

extension Tensor {
    /// The same elements with a new shape; one dimension may be −1 (inferred).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            if known == 0 || count % known != 0 { shapeFailure("reshape", "cannot reshape \(shape) to \(newShape)") }
            s[i] = count / known
        }
        if s.reduce(1, *) != count || s.contains(where: { $0 < 0 }) { shapeFailure("reshape", "cannot reshape \(shape) (\(count) elements) to \(newShape)") }
        var out = viewing(as: s)
        let inShape = shape
        GradientTape.record(&out, [self]) { g, _ in [g.viewing(as: inShape)] }
        return out
    }

    /// [N, …] → [N, product of the rest].
    public func flattened() -> Tensor {
        if rank < 1 { shapeFailure("flatten", "cannot flatten a scalar") }
        return reshaped([shape[0], count / Swift.max(shape[0], 1)])
    }

    /// The same values stored with channel block `block` (1: NCHW; 8 or 16: oneDNN's nChw8c /
    /// nChw16c, for a 4-D tensor whose channels it divides). Convolutions pick the layout
    /// themselves; this is for tests and for feeding a network blocked input. Gradients pass
    /// through unchanged.
    public func withChannelBlock(_ block: Int) -> Tensor {
        if block != 1 && (rank != 4 || shape[1] % block != 0 || ![8, 16].contains(block)) {
            shapeFailure("withChannelBlock", "channel block \(block) for shape \(shape) (blocks of 8 or 16 channels of a 4-D tensor)")
        }
        var out = inLayout(block)
        out.trace = nil
        GradientTape.record(&out, [self]) { g, _ in [g] }
        return out
    }
}
