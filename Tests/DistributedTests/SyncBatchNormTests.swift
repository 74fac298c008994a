// Synchronised batch norm without MPI: K threads stand for K processes, each holding a slice of
// one batch, and a `ThreadGroup` sums their statistics. Forward output, running statistics and
// gradients must equal batch norm over the whole batch in one piece.

import Foundation
import Testing
import Datasets
import Distributed
import TensorCore
import _TestSupport

/// K threads of this process as a process group: collectives meet at a barrier, and the sum is
/// formed in rank order (identical on every rank, as MPI's allreduce results are).
final class ThreadGroup: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var slots: [[Double]]
    private var arrived = 0, generation = 0

    init(size: Int) {
        self.size = size
        slots = Array(repeating: [], count: size)
    }

    /// Sums `values` over all threads (each calls it with its rank).
    func allReduce(_ values: UnsafeMutableBufferPointer<Double>, rank: Int) {
        condition.lock()
        slots[rank] = Array(values)
        arrive()
        var total = slots[0]
        for r in 1..<size { for i in total.indices { total[i] += slots[r][i] } }
        condition.unlock()
        for i in values.indices { values[i] = total[i] }
        condition.lock()
        arrive()  // nobody overwrites a slot before all have read
        condition.unlock()
    }

    /// Barrier; the caller holds the lock.
    private func arrive() {
        let g = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == g { condition.wait() }
        }
    }

    /// Runs `body(rank)` on `size` threads and waits for all.
    func run(_ body: @escaping @Sendable (Int) -> Void) {
        let done = DispatchGroup()
        for r in 0..<size {
            done.enter()
            Thread { body(r); done.leave() }.start()
        }
        done.wait()
    }
}

final class Box<T>: @unchecked Sendable { var value: T; init(_ v: T) { value = v } }

@Suite("synchronised batch norm")
struct SyncBatchNormTests {
    func rows(_ t: Tensor, _ range: Range<Int>) -> Tensor {
        let per = t.count / t.shape[0]
        return Tensor(shape: [range.count] + Array(t.shape.dropFirst()), scalars: Array(t.scalars[(range.lowerBound * per)..<(range.upperBound * per)]))
    }

    @Test(arguments: [2, 3])
    func slicesWithSummedStatisticsEqualTheWholeBatch(processes k: Int) {
        let (n, c, h) = (10, 6, 5)  // 10 samples: 5+5 or 4+3+3
        let x = Tensor.randomNormal([n, c, h, h], mean: 0.5, std: 3, seed: 11)
        let w = Tensor.randomNormal([c], seed: 12), b = Tensor.randomNormal([c], seed: 13)
        let upstream = Tensor.randomNormal([n, c, h, h], seed: 14)
        var rm = Tensor.randomNormal([c], seed: 15), rv = Tensor(shape: [c], repeating: 2)
        let (rm0, rv0) = (rm, rv)

        var y = Tensor(0)
        let (_, g) = valueAndGradient(at: [x, w, b]) { v in
            y = batchNorm(v[0], weight: v[1], bias: v[2], runningMean: &rm, runningVar: &rv, training: true)
            return (y * upstream).sum()
        }

        let group = ThreadGroup(size: k)
        let parts = Box([(y: Tensor, dx: Tensor, dw: Tensor, db: Tensor, rm: Tensor, rv: Tensor)?](repeating: nil, count: k))
        let lock = NSLock()
        group.run { r in
            let range = BatchShard(rank: r, count: k).range(inBatchOf: n)
            let xr = rows(x, range), ur = rows(upstream, range)
            var rmr = rm0, rvr = rv0
            var yr = Tensor(0)
            let (_, gr) = valueAndGradient(at: [xr, w, b]) { v in
                yr = batchNorm(v[0], weight: v[1], bias: v[2], runningMean: &rmr, runningVar: &rvr, training: true,
                               reducer: { group.allReduce($0, rank: r) })
                return (yr * ur).sum()
            }
            lock.lock()
            parts.value[r] = (yr, gr[0], gr[1], gr[2], rmr, rvr)
            lock.unlock()
        }
        let p = parts.value.map { $0! }
        expectClose(p.flatMap { $0.y.scalars }, y.scalars, rtol: 1e-5, atol: 1e-5)
        expectClose(p.flatMap { $0.dx.scalars }, g[0].scalars, rtol: 1e-4, atol: 1e-5)
        // Weight and bias gradients stay per-process sums; the data-parallel reduction adds them.
        let dw = p.dropFirst().reduce(p[0].dw.scalars) { acc, q in zip(acc, q.dw.scalars).map(+) }
        let db = p.dropFirst().reduce(p[0].db.scalars) { acc, q in zip(acc, q.db.scalars).map(+) }
        expectClose(dw, g[1].scalars, rtol: 1e-5, atol: 1e-5)
        expectClose(db, g[2].scalars, rtol: 1e-5, atol: 1e-5)
        for q in p {
            expectClose(q.rm.scalars, rm.scalars, rtol: 1e-6, atol: 1e-7)
            expectClose(q.rv.scalars, rv.scalars, rtol: 1e-6, atol: 1e-7)  // unbiased with the global count
        }
    }

    @Test func identityReducerIsBitIdenticalToPlainBatchNorm() {
        let x = Tensor.randomNormal([4, 8, 7, 7], seed: 1), w = Tensor.randomNormal([8], seed: 2), b = Tensor.randomNormal([8], seed: 3)
        let upstream = Tensor.randomNormal([4, 8, 7, 7], seed: 4)
        func run(_ reducer: BatchNormStatisticsReducer?) -> [[Float]] {
            var rm = Tensor.zeros([8]), rv = Tensor.ones([8])
            var y = Tensor(0)
            let (_, g) = valueAndGradient(at: [x, w, b]) { v in
                y = batchNorm(v[0], weight: v[1], bias: v[2], runningMean: &rm, runningVar: &rv, training: true, reducer: reducer)
                return (y * upstream).sum()
            }
            return [y.scalars, rm.scalars, rv.scalars] + g.map(\.scalars)
        }
        #expect(run({ _ in }) == run(nil))
    }
}
