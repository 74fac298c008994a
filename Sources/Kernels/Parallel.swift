// Work splitting for the project's own kernels. Two cores: a loop is split into at most
// `kernelThreads` contiguous chunks, and only when it is big enough to pay for the hand-off
// (~10 µs); oneDNN's OpenMP threads are idle while our kernels run, so the two never overlap.

import CDNNL
import Dispatch
import Foundation

/// Threads used by the project's own kernels (SENET_NUM_THREADS, else OMP_NUM_THREADS, else cores).
public let kernelThreads: Int = {
    let env = ProcessInfo.processInfo.environment
    if let s = env["SENET_NUM_THREADS"] ?? env["OMP_NUM_THREADS"], let n = Int(s), n > 0 { return n }
    return max(1, ProcessInfo.processInfo.activeProcessorCount)
}()

/// Calls `body(range)` over `0..<count` split into contiguous chunks, in parallel when
/// `count * costPerItem` exceeds a threshold. `costPerItem` is a rough count of flops per item.
@inline(__always)
public func parallelRanges(_ count: Int, costPerItem: Int = 1, _ body: (Range<Int>) -> Void) {
    let threads = kernelThreads
    if threads <= 1 || count < 2 || count * costPerItem < 32_768 {
        body(0..<count)
        return
    }
    let chunks = min(threads, count)
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: chunks) { i in
            let lo = count * i / chunks, hi = count * (i + 1) / chunks
            if lo < hi { body(lo..<hi) }
        }
    }
}

