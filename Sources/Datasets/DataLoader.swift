// The data loader: background threads decode and augment whole batches into a bounded prefetch
// window; the consumer takes them strictly in order.
//
// Determinism: epoch e's order comes from (seed, e) (see `SamplerKind.order`); batch b covers
// positions b·N ..< (b+1)·N of that order; the sample at position p gets its own generator
// seeded from (seed, e, p). Nothing depends on which thread computes what or when, so batches
// are bit-identical for any worker count, and `startingAt: k` reproduces batches k… of the
// uninterrupted epoch (resume after a crash).
//
// Threads: each stream starts `workers` Foundation threads. A worker claims the lowest unclaimed
// batch index below (next batch the consumer takes) + prefetch, computes it, and files the result.
// `cancel()` (also run by `deinit`) sets a flag every worker checks between samples, then waits
// for all of them to exit, so stopping early or after an error never leaves a thread behind.

import Foundation
import TensorCore

/// Batches of a `Dataset`, transformed on background threads, reproducible from
/// (seed, epoch, batch index) alone.
public final class DataLoader: @unchecked Sendable {
    /// The samples.
    public let dataset: Dataset
    /// Applied to every sample with its own generator.
    public let transform: Transform
    /// Samples per batch (N of the [N, C, H, W] images).
    public let batchSize: Int
    /// The epoch order.
    public let sampler: SamplerKind
    /// With the epoch, the batch index and the position, the only source of randomness.
    public let seed: UInt64
    /// Whether the last, short batch of an epoch is dropped.
    public let dropLast: Bool
    /// Background threads per stream; 0 computes each batch inside `next()`.
    public let workers: Int
    /// Most batches computed ahead of the consumer (≥ 1).
    public let prefetch: Int
    /// Whether a sample that fails to decode is replaced (see `batch(epoch:index:)`) instead of
    /// failing the batch.
    public let skipCorrupt: Bool
    /// The part of every batch this process loads (data-parallel training; `.whole` otherwise).
    /// `batchSize` and `batchesPerEpoch` stay those of the global batch.
    public let shard: BatchShard

    private let lock = NSLock()
    private var _skipped = 0
    private var _corrupt = Set<Int>()

    /// A loader; `batchSize` ≥ 1, `workers` ≥ 0, `prefetch` ≥ 1, and the transform's mean (and
    /// std) must have one value or one per dataset channel.
    public init(dataset: Dataset, transform: Transform, batchSize: Int, sampler: SamplerKind, seed: UInt64,
                dropLast: Bool = true, workers: Int = 2, prefetch: Int = 4, skipCorrupt: Bool = false, shard: BatchShard = .whole) {
        precondition(batchSize >= 1 && workers >= 0 && prefetch >= 1, "DataLoader: batchSize ≥ 1, workers ≥ 0, prefetch ≥ 1")
        precondition(transform.mean.count == 1 || transform.mean.count == dataset.channels,
                     "DataLoader: the transform has \(transform.mean.count) mean values for \(dataset.channels)-channel images (\(dataset.name))")
        (self.dataset, self.transform, self.batchSize, self.sampler, self.seed) = (dataset, transform, batchSize, sampler, seed)
        (self.dropLast, self.workers, self.prefetch, self.skipCorrupt) = (dropLast, workers, prefetch, skipCorrupt)
        self.shard = shard
    }

    /// ⌊count / batchSize⌋ with `dropLast`, else ⌈count / batchSize⌉.
    public var batchesPerEpoch: Int {
        dropLast ? dataset.count / batchSize : (dataset.count + batchSize - 1) / batchSize
    }

    /// Samples in global batch `index` over all shards (`batchSize`, or fewer in a short last batch).
    public func globalBatchCount(index: Int) -> Int {
        max(0, min(batchSize, dataset.count - index * batchSize))
    }

    /// Corrupt samples skipped so far (each time one is passed over), over all streams.
    public var skippedCount: Int { lock.lock(); defer { lock.unlock() }; return _skipped }

    /// Dataset indices found corrupt so far, sorted.
    public var corruptIndices: [Int] { lock.lock(); defer { lock.unlock() }; return _corrupt.sorted() }

    /// The dataset indices epoch `epoch` visits, in order.
    public func order(epoch: Int) -> [Int] {
        sampler.order(labels: dataset.labels, seed: seed, epoch: epoch)
    }

    /// The batches of `epoch` from batch index `start` (0 ≤ start ≤ batchesPerEpoch) to the end.
    /// Workers start at once.
    public func batches(epoch: Int, startingAt start: Int = 0) -> BatchStream {
        precondition(start >= 0 && start <= batchesPerEpoch, "DataLoader: start \(start) outside 0...\(batchesPerEpoch)")
        return BatchStream(loader: self, epoch: epoch, order: order(epoch: epoch), start: start)
    }

    /// Batch `index` of `epoch`, computed on the calling thread (what a stream's workers run).
    public func batch(epoch: Int, index: Int) throws -> Batch {
        try makeBatch(epoch: epoch, index: index, order: order(epoch: epoch), isCancelled: { false })
    }

    struct Cancelled: Error {}

    /// Positions index·N ..< min((index+1)·N, count), or this shard's part of them. Sample p is
    /// transformed with a generator seeded from (seed, epoch, p). With `skipCorrupt`, a sample that
    /// fails to load is replaced by the next loadable sample of the epoch order (p+1, p+2, …,
    /// wrapping), keeping p's generator, so the batch keeps its size and stays deterministic.
    func makeBatch(epoch: Int, index: Int, order: [Int], isCancelled: () -> Bool) throws -> Batch {
        let n = order.count
        let global = (index * batchSize)..<min((index + 1) * batchSize, n)
        let part = shard.range(inBatchOf: global.count)
        let positions = (global.lowerBound + part.lowerBound)..<(global.lowerBound + part.upperBound)
        if positions.isEmpty && !global.isEmpty {
            throw DatasetError("\(dataset.name): batch \(index) of epoch \(epoch) has \(global.count) samples, none for \(shard) "
                               + "(the global batch must have at least one sample per process)")
        }
        var images: Tensor?
        var first: (w: Int, h: Int, c: Int, index: Int) = (0, 0, 0, 0)
        var labels: [Int] = [], indices: [Int] = []
        labels.reserveCapacity(positions.count)
        indices.reserveCapacity(positions.count)
        for (k, p) in positions.enumerated() {
            if isCancelled() { throw Cancelled() }
            var rng = SeededGenerator(seed: deriveSeed(seed, 0xA5A5, UInt64(bitPattern: Int64(epoch)), UInt64(p)))
            let (sample, image) = try load(position: p, order: order)
            let (out, flip) = transform.geometric(image, rng: &rng)
            if images == nil {
                first = (out.width, out.height, out.channels, sample)
                images = Tensor(uninitializedShape: [positions.count, out.channels, out.height, out.width])
            } else if (out.width, out.height, out.channels) != (first.w, first.h, first.c) {
                throw DatasetError("\(dataset.name): sample \(sample) is \(out.width)×\(out.height)×\(out.channels) after the transform "
                                   + "but sample \(first.index) is \(first.w)×\(first.h)×\(first.c); batching needs equal sizes (add a crop)")
            }
            let size = out.width * out.height * out.channels
            images!.withUnsafeMutablePointer { transform.normalize(out, flipped: flip, into: $0 + k * size) }
            labels.append(dataset.labels[sample])
            indices.append(sample)
        }
        guard let images else { throw DatasetError("\(dataset.name): batch \(index) of epoch \(epoch) is empty") }
        return Batch(images: images, labels: labels, indices: indices)
    }

    /// The sample for `position` and its image, skipping corrupt ones when allowed.
    private func load(position p: Int, order: [Int]) throws -> (Int, Image8) {
        let n = order.count
        for step in 0..<n {
            let sample = order[(p + step) % n]
            if step > 0 || skipCorrupt {
                lock.lock(); let known = _corrupt.contains(sample); lock.unlock()
                if known { lock.lock(); _skipped += 1; lock.unlock(); continue }
            }
            do {
                return (sample, try dataset.image(at: sample))
            } catch {
                guard skipCorrupt else {
                    if let error = error as? DatasetError { throw error }
                    throw DatasetError("\(dataset.name): sample \(sample): \(error)")
                }
                lock.lock(); _corrupt.insert(sample); _skipped += 1; lock.unlock()
            }
        }
        throw DatasetError("\(dataset.name): every sample failed to load")
    }
}

/// The batches of one epoch, in order. `next()` returns nil after the last batch, after
/// `cancel()`, and after it has thrown once.
public final class BatchStream: @unchecked Sendable {
    /// The epoch being read.
    public let epoch: Int
    /// One past the last batch index.
    public let endIndex: Int

    private let loader: DataLoader
    private let order: [Int]
    private let state: State

    /// Shared between the consumer and the workers; every field is guarded by `condition`.
    private final class State: @unchecked Sendable {
        let condition = NSCondition()
        var nextClaim: Int
        var nextYield: Int
        var results: [Int: Result<Batch, Error>] = [:]
        var cancelled = false
        var failed = false
        var finished = false
        var running = 0
        init(start: Int) { (nextClaim, nextYield) = (start, start) }
        var isCancelled: Bool { condition.lock(); defer { condition.unlock() }; return cancelled }
    }

    init(loader: DataLoader, epoch: Int, order: [Int], start: Int) {
        self.loader = loader
        self.epoch = epoch
        self.order = order
        self.endIndex = loader.batchesPerEpoch
        self.state = State(start: start)
        guard loader.workers > 0, start < endIndex else { return }
        state.running = loader.workers
        for w in 0..<loader.workers {
            let thread = Thread { [state, loader, order, endIndex] in
                Self.work(state: state, loader: loader, epoch: epoch, order: order, end: endIndex)
            }
            thread.name = "DataLoader worker \(w)"
            thread.stackSize = 1 << 22
            thread.start()
        }
    }

    deinit { cancel() }

    /// The index of the batch the next `next()` returns.
    public var nextIndex: Int { state.condition.lock(); defer { state.condition.unlock() }; return state.nextYield }

    private static func work(state: State, loader: DataLoader, epoch: Int, order: [Int], end: Int) {
        let c = state.condition
        while true {
            c.lock()
            while !state.cancelled && !state.failed && state.nextClaim < end && state.nextClaim >= state.nextYield + loader.prefetch {
                c.wait()
            }
            if state.cancelled || state.failed || state.nextClaim >= end {
                state.running -= 1
                c.broadcast()
                c.unlock()
                return
            }
            let b = state.nextClaim
            state.nextClaim += 1
            c.unlock()
            let result = Result { try loader.makeBatch(epoch: epoch, index: b, order: order, isCancelled: { state.isCancelled }) }
            c.lock()
            if case .failure = result { state.failed = true }
            state.results[b] = result
            c.broadcast()
            c.unlock()
        }
    }

    /// The next batch, waiting for the workers if needed; nil at the end of the epoch or once
    /// stopped. A failed batch (a corrupt image without `skipCorrupt`) throws its `DatasetError`
    /// and stops the stream.
    public func next() throws -> Batch? {
        let c = state.condition
        if loader.workers == 0 {
            c.lock()
            guard !state.finished, !state.cancelled, state.nextYield < endIndex else { c.unlock(); return nil }
            let b = state.nextYield
            state.nextYield += 1
            c.unlock()
            do {
                return try loader.makeBatch(epoch: epoch, index: b, order: order, isCancelled: { false })
            } catch {
                c.lock(); state.finished = true; c.unlock()
                throw error
            }
        }
        c.lock()
        guard !state.finished, state.nextYield < endIndex else { c.unlock(); return nil }
        while state.results[state.nextYield] == nil && !state.cancelled { c.wait() }
        if state.cancelled { c.unlock(); return nil }
        let result = state.results.removeValue(forKey: state.nextYield)!
        state.nextYield += 1
        c.broadcast()
        c.unlock()
        switch result {
        case .success(let batch):
            return batch
        case .failure(let error):
            cancel()
            c.lock(); state.finished = true; c.unlock()
            throw error
        }
    }

    /// Stops the workers and waits until every one has exited; later `next()` calls return nil.
    /// Safe to call more than once.
    public func cancel() {
        let c = state.condition
        c.lock()
        state.cancelled = true
        c.broadcast()
        while state.running > 0 { c.wait() }
        state.results.removeAll()
        c.unlock()
    }
}
