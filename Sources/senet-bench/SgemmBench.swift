// `senet-bench sgemm`: the machine's matrix-product rate, the yardstick for whole-network
// efficiency (the performance issue asks batch-16 SE-ResNet-50 inference for ≥ 60% of it).
// dnnl_sgemm on square float32 matrices, median of timed runs after warm-up.

import ArgumentParser
import Foundation
import Kernels

struct SgemmBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sgemm", abstract: "dnnl_sgemm GFLOP/s on an n×n×n product.")

    @Option(help: "Matrix size n (C[n×n] = A[n×n]·B[n×n]).") var size = 2048
    @Option(help: "Timed runs (median reported).") var repeats = 7
    @Flag(help: "One JSON object.") var json = false

    func run() throws {
        guard size >= 1, repeats >= 1 else { throw ValidationError("--size and --repeats must be ≥ 1") }
        let n = size
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n), b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        for i in 0..<(n * n) { a[i] = Float(i % 17) / 17 - 0.5; b[i] = Float(i % 13) / 13 - 0.5 }
        let call = { sgemm(transA: false, transB: false, m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, beta: 0, c: c, ldc: n) }
        call(); call()
        var ms: [Double] = []
        for _ in 0..<repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            call()
            ms.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        ms.sort()
        let median = ms[ms.count / 2]
        let gflops = 2 * Double(n) * Double(n) * Double(n) / (median * 1e6)
        if json {
            print(#"{"size":\#(n),"ms_median":\#(median),"ms_min":\#(ms.first!),"ms_max":\#(ms.last!),"gflops":\#(gflops),"threads":\#(kernelThreads)}"#)
        } else {
            print(String(format: "sgemm %d³: %.2f ms (min %.2f, max %.2f), %.1f GFLOP/s", n, median, ms.first!, ms.last!, gflops))
        }
    }
}
