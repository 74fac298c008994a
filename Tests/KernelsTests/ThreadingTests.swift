// Plans are created on one thread and run on others (Swift concurrency moves tasks between
// threads). With oneDNN's default thread-local scratchpad this read freed memory once the
// creating thread had exited; plans now own their scratchpads.

import Foundation
import Kernels
import Testing
import _TestSupport

@Suite struct ThreadingTests {
    @Test func planCreatedOnAnExitedThreadRunsElsewhere() {
        // A gemm-based (im2col) shape: oneDNN asks for a scratchpad.
        let s = Conv2DShape(n: 2, c: 24, h: 13, w: 11, o: 40, kh: 3, kw: 3, sh: 2, sw: 1, ph: 1, pw: 2, dh: 1, dw: 2)
        var state: UInt64 = 7
        func rand(_ n: Int) -> [Float] {
            (0..<n).map { _ in state = state &* 6_364_136_223_846_793_005 &+ 1; return Float(state >> 40) / Float(1 << 23) - 1 }
        }
        let x = rand(s.inputCount), w = rand(s.weightCount), dy = rand(s.outputCount)
        let done = DispatchSemaphore(value: 0)
        let creator = Thread {
            var y = [Float](repeating: 0, count: s.outputCount), dx = [Float](repeating: 0, count: s.inputCount)
            conv2dForward(out: &y, inp: x, weight: w, bias: nil, s)
            conv2dBackwardData(dinp: &dx, dout: dy, weight: w, s)
            done.signal()
        }
        creator.start()
        done.wait()
        Thread.sleep(forTimeInterval: 0.05)  // let the creating thread exit
        for _ in 0..<3 {
            var y = [Float](repeating: .nan, count: s.outputCount), dx = [Float](repeating: .nan, count: s.inputCount)
            conv2dForward(out: &y, inp: x, weight: w, bias: nil, s)
            conv2dBackwardData(dinp: &dx, dout: dy, weight: w, s)
            expectClose(y, Reference.conv2dForward(inp: x, weight: w, bias: nil, s), rtol: 1e-4, atol: 1e-5, "forward")
            expectClose(dx, Reference.conv2dBackwardData(dout: dy, weight: w, s), rtol: 1e-4, atol: 1e-5, "backward data")
        }
    }

    /// Our loops run on oneDNN's OpenMP team: every index exactly once, also when several threads
    /// start loops at the same time and when a loop starts inside another one's chunk (nested
    /// regions run their chunks in turn).
    @Test func parallelRangesCoverEveryIndexOnceFromAnyThread() {
        let count = 100_003
        func check(_ label: String) {
            let hits = UnsafeMutablePointer<Int32>.allocate(capacity: count)
            hits.initialize(repeating: 0, count: count)
            defer { hits.deallocate() }
            parallelRanges(count, costPerItem: 1_000) { r in for i in r { hits[i] += 1 } }
            #expect((0..<count).allSatisfy { hits[$0] == 1 }, "\(label)")
        }
        check("main")
        DispatchQueue.concurrentPerform(iterations: 4) { t in check("thread \(t)") }
        let outer = UnsafeMutablePointer<Int32>.allocate(capacity: 4 * count)
        outer.initialize(repeating: 0, count: 4 * count)
        defer { outer.deallocate() }
        parallelRanges(4, costPerItem: 1_000_000) { r in
            for j in r { parallelRanges(count, costPerItem: 1_000) { inner in for i in inner { outer[j * count + i] += 1 } } }
        }
        #expect((0..<(4 * count)).allSatisfy { outer[$0] == 1 }, "nested")
    }
}
