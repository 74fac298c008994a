// Synchronous data-parallel training (the paper's setting: 64 GPUs, one batch of 1024–2048 split
// across them): K processes hold identical replicas of the model, each computes the gradient on
// its part of every global batch, the gradients are summed over the processes, and every replica
// takes the same SGD step.
//
// Equality with a single process: rank r's part holds n_r of the batch's N samples (DataLoader
// with a `BatchShard`) and its loss is the sum of its samples' losses divided by N, so the sum
// over ranks of the gradients is the gradient of the global batch's mean loss — the
// single-process gradient, up to float rounding. With `syncBatchNorm`, batch normalisation uses
// the whole batch's statistics (`batchNorm(…reducer:)`), which makes the forward and backward
// passes those of one process over the global batch (and with batch-invariant reductions,
// `withBatchInvariantReductions` / `senet train --reproducible`, the same computation up to
// float64 rounding: within 1e-5 after many steps, where float32 summation-order differences
// grow to ~1e-2); without it, each rank normalises with its own part (PyTorch
// DDP's default) and only rank 0's running statistics are kept (broadcast to the others before
// evaluation and at each epoch's start, as DDP broadcasts rank 0's buffers).
//
// Gradient buckets: gradients are copied into a flat buffer in the order backward finishes them
// (`GradientTape.gradients(…whenReady:)`); every time `bucketCapacity` floats have collected, the
// bucket is closed and its MPI_Iallreduce starts as soon as the one before it has finished, while
// backward goes on; after backward the trainer reduces what is left. The order is the same on
// every rank (same model, same tape).

import Datasets
import Distributed
import Foundation
import NN
import TensorCore

public final class DataParallel {
    /// The processes sharing the job.
    public let group: ProcessGroup
    /// Whether batch normalisation uses the statistics of the global batch.
    public let syncBatchNorm: Bool
    /// Floats per gradient bucket.
    public let bucketCapacity: Int

    /// Seconds spent waiting for gradient buckets after backward, summed over steps.
    public private(set) var gradientWaitSeconds = 0.0
    /// Buckets per step (known after the first step).
    public private(set) var bucketsPerStep = 0

    private var flat: UnsafeMutableBufferPointer<Float>?
    private var validationShard: (source: ObjectIdentifier, loader: DataLoader)?

    /// `bucketMegabytes`: gradient bytes per allreduce (PyTorch DDP's default bucket_cap_mb is 25).
    public init(group: ProcessGroup, syncBatchNorm: Bool = false, bucketMegabytes: Double = 25) {
        precondition(bucketMegabytes > 0, "DataParallel: the bucket size must be positive")
        (self.group, self.syncBatchNorm) = (group, syncBatchNorm)
        bucketCapacity = max(1, Int(bucketMegabytes * 1_048_576 / 4))
    }

    deinit { flat?.deallocate() }

    public var rank: Int { group.rank }
    public var size: Int { group.size }
    public var isRoot: Bool { group.isRoot }

    /// This rank's part of every training batch.
    public var shard: BatchShard { BatchShard(rank: group.rank, count: group.size) }

    // MARK: replicas

    /// Makes the replicas start equal: rank 0's parameters and buffers go to every rank, the batch
    /// norm layers get the statistics reducer (with `syncBatchNorm`), and dropout layers of ranks
    /// other than 0 draw from generators of their own (otherwise every rank would drop the same
    /// units of its samples).
    public func prepare(_ model: Module) {
        broadcast(model.namedParameters(includeBuffers: true).map { $0.1 })
        // Batch-invariant mode keeps the phased batch norm (per-image float64 sums) on every rank;
        // without --sync-bn its reducer leaves the local sums as they are.
        let reducer: BatchNormStatisticsReducer? = syncBatchNorm ? { [group] in group.allReduce($0, .sum) }
            : batchInvariantReductions ? { _ in } : nil
        model.visit { m in
            if let bn = m as? BatchNorm2d { bn.statisticsReducer = reducer }
            if let d = m as? Dropout, group.rank > 0 {
                let s = d.generatorState
                d.generatorState = SeededGenerator(seed: s.reduce(UInt64(group.rank) &* 0x9E37_79B9_7F4A_7C15) { $0 ^ ($1 &* 31) }).state
            }
        }
    }

    /// Rank 0's batch-norm running statistics (and other buffers) on every rank.
    public func broadcastBuffers(_ model: Module) {
        broadcast(model.namedParameters(includeBuffers: true).filter { $0.1.isBuffer }.map { $0.1 })
    }

    private func broadcast(_ parameters: [Parameter]) {
        guard group.size > 1 else { return }
        for p in parameters {
            let bytes = p.value.count * 4
            p.value.withUnsafeMutablePointer { group.broadcast(UnsafeMutableRawBufferPointer(start: $0, count: bytes), root: 0) }
        }
    }

    /// Checks that every rank holds the same weights, buffers and momentum (a 64-bit fingerprint
    /// compared by allreduce); if not, rank 0's are sent to all. Returns whether they agreed.
    /// (Allreduce results are identical on every rank in Open MPI, so this should never fire.)
    @discardableResult
    func synchronizeReplicas(_ model: Module, _ sgd: SGD) -> Bool {
        guard group.size > 1 else { return true }
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ t: Tensor) {
            t.withUnsafePointer { p in
                p.withMemoryRebound(to: UInt32.self, capacity: t.count) { w in
                    for i in 0..<t.count { hash = (hash ^ UInt64(w[i])) &* 0x100_0000_01B3 }
                }
            }
        }
        for (_, p) in model.namedParameters(includeBuffers: true) { mix(p.value) }
        let keys = sgd.buffers.keys.sorted()
        for k in keys { mix(sgd.buffers[k]!) }
        let parts = [Double(hash >> 32), Double(hash & 0xFFFF_FFFF), Double(keys.count)]
        let high = group.allReduced(parts, .max), low = group.allReduced(parts, .min)
        if high == low { return true }
        broadcast(model.namedParameters(includeBuffers: true).map { $0.1 })
        var buffers: [String: Tensor] = [:]
        for k in keys {
            var t = sgd.buffers[k]!
            let bytes = t.count * 4
            t.withUnsafeMutablePointer { group.broadcast(UnsafeMutableRawBufferPointer(start: $0, count: bytes), root: 0) }
            buffers[k] = t
        }
        try? sgd.restore(buffers: buffers)
        return false
    }

    // MARK: gradients

    /// This rank's share of the global batch's mean loss, and the gradient of that mean loss with
    /// respect to every trainable parameter, keyed as `valueAndGradient(of:)`: the gradients are
    /// summed over all ranks, in buckets started while backward runs. `loss` must return this
    /// rank's share (one element): the sum of its samples' losses divided by the global batch's
    /// size (`crossEntropy(…divisor:)`), so that every logit gradient is the one a single process
    /// computes for the same sample.
    ///
    /// With batch-invariant reductions on (`withBatchInvariantReductions`), the ranks add the
    /// float64 partial sums of their gradients instead (`ExactGradientSums`), so that K ranks
    /// compute the gradient one process computes, independently of how the batch is split.
    public func valueAndGradient(of model: Module, _ loss: () -> Tensor) -> (value: Tensor, gradients: [String: Tensor]) {
        let (tape, params, watched, value) = recordLoss(of: model, op: "DataParallel.valueAndGradient", loss)
        if batchInvariantReductions { return exactGradients(tape, params, watched, value) }

        let total = params.reduce(0) { $0 + $1.1.value.count }
        if flat == nil || flat!.count != total {
            flat?.deallocate()
            flat = .allocate(capacity: total)
        }
        let buffer = flat!
        var offsets = [Int](repeating: 0, count: params.count)
        var cursor = 0, bucketStart = 0, buckets = 0
        // Full buckets wait in `queued`; one is reduced at a time (Open MPI's non-blocking
        // collectives run slower side by side: docs/distributed.md), and every gradient that
        // becomes ready lets MPI progress it and, once done, start the next.
        var queued: [Range<Int>] = []
        var inFlight: PendingCollective?
        var started = 0
        func startNext() {
            let r = queued.removeFirst()
            started += 1
            inFlight = group.startSum(UnsafeMutableBufferPointer(rebasing: buffer[r]),
                                      label: "gradient bucket \(started) (\(r.count) floats)")
        }
        func pump() {
            if let f = inFlight, !f.test() { return }
            inFlight = nil
            if !queued.isEmpty { startNext() }
        }
        func close() {
            queued.append(bucketStart..<cursor)
            buckets += 1
            bucketStart = cursor
        }
        _ = tape.gradients(of: value, wrt: watched) { k, g in
            offsets[k] = cursor
            g.withUnsafePointer { (buffer.baseAddress! + cursor).update(from: $0, count: g.count) }
            cursor += g.count
            if cursor - bucketStart >= self.bucketCapacity { close() }
            pump()
        }
        if cursor > bucketStart { close() }
        let waitStart = Date()
        while true {
            inFlight?.wait()
            inFlight = nil
            if queued.isEmpty { break }
            startNext()
        }
        gradientWaitSeconds += Date().timeIntervalSince(waitStart)
        bucketsPerStep = buckets

        var out: [String: Tensor] = [:]
        for (k, (key, p)) in params.enumerated() {
            var t = Tensor(uninitializedShape: p.shape)
            let n = t.count, o = offsets[k]
            t.withUnsafeMutablePointer { $0.update(from: buffer.baseAddress! + o, count: n) }
            out[key] = t
        }
        return (value.detached, out)
    }

    /// Backward with the float64 partial sums collected, one blocking float64 allreduce of all of
    /// them, and the sums rounded to float32 (a gradient without a float64 sum, from an op that
    /// publishes none, joins as its float32 value).
    private func exactGradients(_ tape: GradientTape, _ params: [(String, Parameter)], _ watched: [Tensor],
                                _ value: Tensor) -> (value: Tensor, gradients: [String: Tensor]) {
        let sums = ExactGradientSums()
        var offsets = [Int](repeating: 0, count: params.count)
        var exact: [Double] = []
        exact.reserveCapacity(params.reduce(0) { $0 + $1.1.value.count })
        sums.collect {
            _ = tape.gradients(of: value, wrt: watched) { k, g in
                offsets[k] = exact.count
                if let partial = sums.take(for: watched[k]), partial.count == g.count {
                    exact += partial
                } else {
                    exact += g.scalars.map(Double.init)
                }
            }
        }
        let waitStart = Date()
        exact.withUnsafeMutableBufferPointer { group.allReduce($0, .sum) }
        gradientWaitSeconds += Date().timeIntervalSince(waitStart)
        bucketsPerStep = 1
        var out: [String: Tensor] = [:]
        for (k, (key, p)) in params.enumerated() {
            var t = Tensor(uninitializedShape: p.shape)
            let (o, n) = (offsets[k], t.count)
            t.withUnsafeMutablePointer { d in for i in 0..<n { d[i] = Float(exact[o + i]) } }
            out[key] = t
        }
        return (value.detached, out)
    }

    // MARK: evaluation

    /// Evaluation over `loader`'s dataset split into near-equal contiguous parts, one per rank
    /// (part r: samples ⌊rV/K⌋… as `DatasetSlice(part:of:)`), the counts and loss sums added
    /// over the ranks: every rank gets the whole dataset's figures. Batch norm runs in evaluation
    /// mode (per sample), with rank 0's running statistics.
    public func evaluate(_ model: Module, _ loader: DataLoader, classes: Int) throws -> Evaluation {
        broadcastBuffers(model)
        if validationShard?.source != ObjectIdentifier(loader) {
            let part = DatasetSlice(loader.dataset, part: group.rank, of: group.size)
            validationShard = (ObjectIdentifier(loader),
                               DataLoader(dataset: part, transform: loader.transform, batchSize: loader.batchSize, sampler: .sequential,
                                          seed: loader.seed, dropLast: false, workers: loader.workers, prefetch: loader.prefetch,
                                          skipCorrupt: loader.skipCorrupt))
        }
        let local = validationShard!.loader
        let e = local.dataset.count > 0
            ? try Training.evaluate(model, local, classes: classes)
            : Evaluation(loss: 0, top1: 0, top5: 0, count: 0, perClass: Array(repeating: (0, 0), count: classes))
        let n = Double(e.count)
        var sums = [e.loss * n, (e.top1 * n).rounded(), (e.top5 * n).rounded(), n]
        for c in e.perClass { sums += [Double(c.correct), Double(c.total)] }
        sums = group.allReduced(sums)
        let d = max(sums[3], 1)
        let perClass = (0..<classes).map { (correct: Int(sums[4 + 2 * $0]), total: Int(sums[5 + 2 * $0])) }
        return Evaluation(loss: sums[0] / d, top1: sums[1] / d, top5: sums[2] / d, count: Int(sums[3]), perClass: perClass)
    }
}
