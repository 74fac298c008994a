// Batch-invariant reductions (BatchInvariance.swift): a batch split into parts gives, image by
// image, the outputs and input gradients of the whole batch bit for bit, and the float64
// parameter-gradient sums of the parts add up to the whole batch's, so that the float32
// gradient rounded from either is the same. (The end-to-end check, K processes under mpirun
// against one, is MPITrainingTests.)

import Testing
@testable import TensorCore
import _TestSupport

@Suite("batch-invariant reductions")
struct BatchInvarianceTests {
    /// Output, input gradient and published float64 parameter sums of `op` on `x` with the
    /// cotangent `r` (the loss Σ op(x)·r).
    func run(_ x: Tensor, _ r: Tensor, _ params: [Tensor], _ op: (Tensor, [Tensor]) -> Tensor)
        -> (y: [Float], dx: [Float], dp: [[Float]], sums: [[Double]]) {
        withBatchInvariantReductions {
            let sink = ExactGradientSums()
            var y = Tensor(0)
            let (_, g) = sink.collect {
                valueAndGradient(at: [x] + params) { v in
                    y = op(v[0], Array(v.dropFirst()))
                    return (y * r).sum()
                }
            }
            return (y.scalars, g[0].scalars, g.dropFirst().map(\.scalars), params.map { sink.take(for: $0) ?? [] })
        }
    }

    /// Rows `range` of a tensor whose first axis is the batch.
    func rows(_ t: Tensor, _ range: Range<Int>) -> Tensor {
        let per = t.count / t.shape[0]
        return Tensor(shape: [range.count] + t.shape.dropFirst(), scalars: Array(t.scalars[range.lowerBound * per..<range.upperBound * per]))
    }

    func check(_ name: String, x: Tensor, outputShape: [Int], params: [Tensor], _ op: @escaping (Tensor, [Tensor]) -> Tensor) {
        let n = x.shape[0]
        let r = Tensor.randomNormal(outputShape, seed: 11)
        let whole = run(x, r, params, op)
        let parts = [0..<3, 3..<5, 5..<n].map { run(rows(x, $0), rows(r, $0), params, op) }
        #expect(parts.flatMap(\.y) == whole.y, "\(name): outputs differ")
        #expect(parts.flatMap(\.dx) == whole.dx, "\(name): input gradients differ")
        for k in params.indices {
            #expect(whole.sums[k].count == params[k].count, "\(name): parameter \(k) published no float64 sum")
            let added = (0..<params[k].count).map { i in parts.reduce(0.0) { $0 + $1.sums[k][i] } }
            let worst = zip(added, whole.sums[k]).map { abs($0 - $1) / max(abs($1), 1e-30) }.max() ?? 0
            #expect(worst < 1e-12, "\(name): parameter \(k) float64 sums differ by \(worst)")
            #expect(added.map { Float($0) } == whole.dp[k], "\(name): parameter \(k) rounds differently")
            // And they are the gradient: the whole batch's float32 gradient within float32 rounding.
            let plain = valueAndGradient(at: [x] + params) { v in (op(v[0], Array(v.dropFirst())) * r).sum() }.gradients[k + 1]
            expectClose(whole.dp[k], plain.scalars, rtol: 1e-5, atol: 1e-5, "\(name) parameter \(k) vs the default path")
        }
    }

    @Test func convolutionSplitsExactly() {
        let x = Tensor.randomNormal([7, 4, 9, 9], seed: 1)
        let w = Tensor.randomNormal([6, 2, 3, 3], seed: 2), b = Tensor.randomNormal([6], seed: 3)
        check("conv2d", x: x, outputShape: [7, 6, 5, 5], params: [w, b]) { x, p in
            conv2d(x, weight: p[0], bias: p[1], stride: (2, 2), padding: (1, 1), groups: 2)
        }
    }

    @Test func linearSplitsExactly() {
        let x = Tensor.randomNormal([7, 13], seed: 4)
        let w = Tensor.randomNormal([5, 13], seed: 5), b = Tensor.randomNormal([5], seed: 6)
        check("linear", x: x, outputShape: [7, 5], params: [w, b]) { x, p in linear(x, weight: p[0], bias: p[1]) }
    }

    @Test func crossEntropyDivisorGivesTheWholeBatchGradient() {
        let logits = Tensor.randomNormal([6, 4], seed: 7), targets = [0, 3, 1, 2, 2, 0]
        let whole = valueAndGradient(at: logits) { crossEntropy(logits: $0, targets: targets) }
        let part = valueAndGradient(at: rows(logits, 0..<2)) { crossEntropy(logits: $0, targets: Array(targets[0..<2]), divisor: 6) }
        #expect(part.gradient.scalars == Array(whole.gradient.scalars[0..<8]))
        let rest = valueAndGradient(at: rows(logits, 2..<6)) { crossEntropy(logits: $0, targets: Array(targets[2..<6]), divisor: 6) }
        #expect(abs(Double(part.value.item) + Double(rest.value.item) - Double(whole.value.item)) < 1e-6)
    }
}
