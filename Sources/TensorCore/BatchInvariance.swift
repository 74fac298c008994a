// Batch-invariant reductions: results that do not depend on how a batch is split.
//
// Float addition is not associative, so a batch's gradient summed by one process differs in the
// last bits from the same gradient summed as K partial sums by K processes; in training those
// differences grow (a pre-activation within rounding distance of a ReLU's kink flips, and the
// gradient of every layer below jumps), and after a few dozen steps two runs that differ only in
// summation order disagree far above float32 precision (docs/distributed.md measures it).
//
// Inside `withBatchInvariantReductions`, every op whose result mixes the samples of a batch
// computes it so that grouping does not matter:
//
// - convolutions run image by image (oneDNN's choice of kernel and blocking can depend on the
//   batch size), and their weight and bias gradients are per-image gradients summed in float64
//   in image order;
// - linear layers compute each row alone and sum their weight and bias gradients in float64
//   (a float32 product is exact in float64);
// - batch norm (given a statistics reducer, which `Trainer` installs in this mode) already sums
//   per image in float64;
// - the float64 partial sums of the parameter gradients are published to `ExactGradientSums`,
//   so that data-parallel training adds the ranks' float64 partials, not rounded float32 ones;
// - (always, not only in this mode) a data-parallel rank divides its loss by the global batch's
//   size (`crossEntropy(…divisor:)`), so each logit gradient is the one-process value.
//
// Two float64 sums of the same float32 terms in different groupings agree to ~1e-16 relative,
// so the float32 gradients they round to are equal except at rare rounding ties. One process and
// K processes then train alike within 1e-5 over many steps (tested over 20 steps with mpirun).
// Per-element results inside one image still depend on the thread count that oneDNN uses (not
// on our own kernels' threads), so compared runs must give oneDNN the same number of threads per
// process: `senet train --reproducible` gives it one.

import Kernels

/// Scope of the batch-invariant mode (task-local, like the gradient tape: concurrent work
/// elsewhere in the process is unaffected).
enum BatchInvariance {
    @TaskLocal static var enabled = false
}

/// Whether ops compute batch reductions independently of how the batch is split (see above).
public var batchInvariantReductions: Bool { BatchInvariance.enabled }

/// Runs `body` with batch-invariant reductions on (or off). Slower: convolutions run one image
/// at a time. For reproducible data-parallel training (`senet train --reproducible`).
public func withBatchInvariantReductions<R>(_ on: Bool = true, _ body: () throws -> R) rethrows -> R {
    try BatchInvariance.$enabled.withValue(on) { try body() }
}

/// Collects, during a backward pass, the float64 sums behind parameter gradients computed in
/// batch-invariant mode, keyed by the parameter's storage: `DataParallel` reduces these over
/// the processes instead of the float32 gradients.
public final class ExactGradientSums {
    private var sums: [ObjectIdentifier: [Double]] = [:]

    @TaskLocal static var current: ExactGradientSums?

    public init() {}

    /// Runs `body` (a backward pass) with this collector receiving the float64 sums.
    public func collect<R>(_ body: () throws -> R) rethrows -> R {
        try ExactGradientSums.$current.withValue(self) { try body() }
    }

    /// The float64 gradient sum for `parameter` (the tensor the op received), if one was
    /// published; a parameter used by several ops gets the sum of their contributions.
    public func take(for parameter: Tensor) -> [Double]? {
        sums.removeValue(forKey: ObjectIdentifier(parameter.storage))
    }

    /// Publishes `sums` for `parameter` and returns their float32 rounding: the parameter's
    /// gradient, of its shape.
    static func gradient(_ sums: [Double], for parameter: Tensor) -> Tensor {
        publish(sums, for: parameter)
        return Tensor(shape: parameter.shape, rounding: sums)
    }

    static func publish(_ values: [Double], for parameter: Tensor) {
        guard let sink = current else { return }
        let key = ObjectIdentifier(parameter.storage)
        if var old = sink.sums[key], old.count == values.count {
            for i in values.indices { old[i] += values[i] }
            sink.sums[key] = old
        } else {
            sink.sums[key] = values
        }
    }
}

extension Tensor {
    /// A tensor of `shape` holding `values` rounded to float32.
    init(shape: [Int], rounding values: [Double]) {
        self.init(uninitializedShape: shape)
        withUnsafeMutablePointer { p in for i in values.indices { p[i] = Float(values[i]) } }
    }
}

/// acc[i] += Double(x[i]) for i < n.
@inline(__always)
func accumulateDouble(_ acc: inout [Double], _ x: UnsafePointer<Float>, n: Int) {
    acc.withUnsafeMutableBufferPointer { a in for i in 0..<n { a[i] += Double(x[i]) } }
}
