// Tensor values: creation, copy-on-write, reshaping, reductions, top-k, random init, printing.

import Testing
import TensorCore
import _TestSupport

@Suite("Tensor")
struct TensorTests {
    @Test func creationAndShape() {
        let t = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        #expect(t.shape == [2, 3] && t.count == 6 && t[1, 2] == 6)
        #expect(Tensor.zeros([4]).scalars == [0, 0, 0, 0])
        #expect(Tensor.ones([2, 2]).scalars == [1, 1, 1, 1])
        #expect(t.reshaped([3, -1]).shape == [3, 2])
        #expect(Tensor.zeros([2, 3, 4, 5]).flattened().shape == [2, 60])
    }

    @Test func copyOnWrite() {
        let a = Tensor(shape: [3], scalars: [1, 2, 3])
        var b = a
        b[0] = 10
        #expect(a.scalars == [1, 2, 3])
        #expect(b.scalars == [10, 2, 3])
    }

    @Test func storageIs64ByteAligned() {
        let t = Tensor.zeros([7])
        t.withUnsafePointer { #expect(Int(bitPattern: $0) % 64 == 0) }
    }

    @Test func reductionsByHand() {
        let t = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        #expect(t.sum().item == 21)
        #expect(t.sum(axes: [0]).scalars == [5, 7, 9])
        #expect(t.mean(axes: [1]).scalars == [2, 5])
        #expect(t.mean(axes: [1], keepDims: true).shape == [2, 1])
    }

    @Test func argmaxAndTopK() {
        let t = Tensor(shape: [2, 4], scalars: [0.1, 0.7, 0.2, 0.7, 5, -1, 3, 4])
        #expect(t.argmax() == [1, 0])
        let top = t.topK(3)
        #expect(top.indices == [[1, 3, 2], [0, 3, 2]])
        #expect(top.values[1] == [5, 4, 3])
    }

    @Test func seededRandomIsReproducibleAndHasTheRightMoments() {
        let a = Tensor.randomNormal([10_000], mean: 1, std: 2, seed: 42)
        #expect(a.scalars == Tensor.randomNormal([10_000], mean: 1, std: 2, seed: 42).scalars)
        let m = a.mean().item
        let sd = ((a - m) * (a - m)).mean().item.squareRoot()
        #expect(abs(m - 1) < 0.06 && abs(sd - 2) < 0.06)
        let u = Tensor.randomUniform([10_000], low: -1, high: 3, seed: 7).scalars
        #expect(u.min()! >= -1 && u.max()! < 3 && abs(u.reduce(0, +) / 10_000 - 1) < 0.05)
    }

    @Test func pytorchDefaultInitBounds() {
        var g = SeededGenerator(seed: 1)
        let w = Tensor.pytorchDefaultWeight([64, 32, 3, 3], generator: &g).scalars
        let bound = 1 / Float(32 * 9).squareRoot()
        #expect(w.allSatisfy { abs($0) <= bound })
        #expect(w.max()! > 0.95 * bound)
        let he = Tensor.heNormal([256, 64, 1, 1], generator: &g).scalars
        let sd = (he.reduce(0) { $0 + $1 * $1 } / Float(he.count)).squareRoot()
        #expect(abs(sd - (2 / Float(256)).squareRoot()) < 0.005)
    }

    @Test func printing() {
        #expect(Tensor(shape: [2], scalars: [1, 2.5]).description == "tensor([1.0000, 2.5000], shape: [2])")
        #expect(Tensor.zeros([10]).description.contains("..."))
    }
}
