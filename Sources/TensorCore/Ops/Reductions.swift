// Sums and means over axes, argmax and top-k.

import Kernels

extension Tensor {
    /// Sum over `axes` (all when empty); `keepDims` keeps them as size 1. Gradient: broadcast back.
    public func sum(axes: [Int] = [], keepDims: Bool = false) -> Tensor {
        reduce(axes: axes, keepDims: keepDims, mean: false)
    }

    /// Mean over `axes` (all when empty).
    public func mean(axes: [Int] = [], keepDims: Bool = false) -> Tensor {
        reduce(axes: axes, keepDims: keepDims, mean: true)
    }

    private func reduce(axes: [Int], keepDims: Bool, mean: Bool) -> Tensor {
        let op = mean ? "mean" : "sum"
        let ax = Set(axes.isEmpty ? Array(0..<rank) : axes.map { $0 < 0 ? $0 + rank : $0 })
        if let bad = ax.first(where: { $0 < 0 || $0 >= rank }) { shapeFailure(op, "axis \(bad) out of range for shape \(shape)") }
        let kept = shape.enumerated().map { ax.contains($0.offset) ? 1 : $0.element }
        let reducedCount = shape.enumerated().filter { ax.contains($0.offset) }.map(\.element).reduce(1, *)
        var out: Tensor
        if let cache = cachedPlaneSums, cache.shape == shape, cache.block == channelBlock, ax == [2, 3] {
            // The producer summed the planes as `sumToShape` would have (same order, same result).
            out = Tensor(shape: kept, scalars: cache.sums)
        } else {
            out = sumToShape(self.detached, kept)
        }
        if mean { out = rawScale(out, 1 / Float(Swift.max(reducedCount, 1))) }
        let finalShape = keepDims ? kept : kept.enumerated().filter { !ax.contains($0.offset) }.map(\.element)
        out = out.viewing(as: finalShape)
        let inShape = shape, block = channelBlock
        GradientTape.record(&out, [self]) { g, _ in
            let gk = g.viewing(as: kept)
            let scale: Float = mean ? 1 / Float(Swift.max(reducedCount, 1)) : 1
            if planeBroadcast(big: inShape, small: kept) == .perPlane {
                // Over H×W of an N×C×H×W tensor (the SE squeeze): left to the tape to add.
                var t = gk
                t.pendingPlaneBroadcast = (inShape, scale, block)
                return [t]
            }
            return [broadcastTo(gk, inShape, scale: scale, block: block)]
        }
        return out
    }

    /// Index of the largest element along the last axis (first on ties): shape minus that axis.
    public func argmax() -> [Int] {
        topK(1).indices.map { $0[0] }
    }

    /// The `k` largest values along the last axis, in descending order, with their indices,
    /// one row per leading index.
    public func topK(_ k: Int) -> (values: [[Float]], indices: [[Int]]) {
        if rank < 1 || k < 1 || k > shape[rank - 1] { shapeFailure("topK", "k = \(k) for shape \(shape)") }
        let n = shape[rank - 1], rows = count / n
        let v = scalars
        var values: [[Float]] = [], indices: [[Int]] = []
        for r in 0..<rows {
            let idx = (0..<n).sorted { a, b in
                let (x, y) = (v[r * n + a], v[r * n + b])
                return x > y || (x == y && a < b)
            }.prefix(k)
            indices.append(Array(idx))
            values.append(idx.map { v[r * n + $0] })
        }
        return (values, indices)
    }
}
