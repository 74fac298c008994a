// A shape mismatch stops the program with a message naming the op and both shapes. Each case
// runs in a child process (Swift Testing exit tests) whose standard error is checked.

import Foundation
import Testing
import TensorCore

@Suite("Shape errors")
struct ShapeErrorTests {
    static func stderr(_ r: ExitTest.Result?) -> String {
        r.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
    }

    @Test func conv2dNamesBothShapes() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = conv2d(Tensor.zeros([1, 3, 8, 8]), weight: Tensor.zeros([4, 5, 3, 3]))
        }
        let e = Self.stderr(r)
        #expect(e.contains("conv2d") && e.contains("[1, 3, 8, 8]") && e.contains("[4, 5, 3, 3]"), "\(e)")
    }

    @Test func conv2dScaleAddReLUNamesBothShapes() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = conv2dScaleAddReLU(Tensor.zeros([2, 4, 6, 6]), weight: Tensor.zeros([8, 4, 1, 1]), bias: nil,
                                   scale: Tensor.zeros([2, 8, 1, 1]), residual: Tensor.zeros([2, 8, 5, 6]))
        }
        let e = Self.stderr(r)
        #expect(e.contains("conv2dScaleAddReLU") && e.contains("[2, 8, 5, 6]") && e.contains("[2, 8, 6, 6]"), "\(e)")
    }

    @Test func conv2dAddReLUNamesBothShapes() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = conv2dAddReLU(Tensor.zeros([2, 4, 6, 6]), weight: Tensor.zeros([8, 4, 1, 1]), bias: nil,
                              residual: Tensor.zeros([2, 8, 6, 5]))
        }
        let e = Self.stderr(r)
        #expect(e.contains("conv2dAddReLU") && e.contains("[2, 8, 6, 5]") && e.contains("[2, 8, 6, 6]"), "\(e)")
    }

    @Test func matmulNamesBothShapes() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = matmul(Tensor.zeros([2, 3]), Tensor.zeros([4, 5]))
        }
        let e = Self.stderr(r)
        #expect(e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 5]"), "\(e)")
    }

    @Test func addNamesBothShapes() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.zeros([2, 3, 4, 4]) + Tensor.zeros([2, 5, 1, 1])
        }
        let e = Self.stderr(r)
        #expect(e.contains("add") && e.contains("[2, 3, 4, 4]") && e.contains("[2, 5, 1, 1]"), "\(e)")
    }

    @Test func concatNamesBothShapes() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = concatChannels([Tensor.zeros([1, 2, 4, 4]), Tensor.zeros([1, 2, 5, 4])])
        }
        let e = Self.stderr(r)
        #expect(e.contains("concatChannels") && e.contains("[1, 2, 4, 4]") && e.contains("[1, 2, 5, 4]"), "\(e)")
    }

    @Test func linearAndBatchNormNameTheirShapes() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = linear(Tensor.zeros([2, 3]), weight: Tensor.zeros([4, 5]))
        }
        #expect(Self.stderr(r).contains("linear: input [2, 3] and weight [4, 5]"))
    }
}
