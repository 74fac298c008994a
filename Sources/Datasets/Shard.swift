// Sharding for data-parallel training: each of K processes loads a disjoint part of every global
// batch (`BatchShard`), or a contiguous part of a dataset (`DatasetSlice`, for sharded evaluation).

/// The part of every batch that one of `count` processes loads.
///
/// A global batch of B samples (positions p₀ ..< p₀+B of the epoch order) is split into `count`
/// contiguous runs in rank order; the first B mod count ranks take ⌊B/count⌋ + 1 samples and the
/// others ⌊B/count⌋. With B = 16 and 3 ranks: positions 0–5, 6–10 and 11–15. Each sample keeps the
/// generator of its global position, so the K shards together are exactly the single-process batch.
public struct BatchShard: Sendable, Equatable, CustomStringConvertible {
    /// This process's index, 0 ..< count.
    public let rank: Int
    /// Number of processes sharing each batch.
    public let count: Int

    /// The whole batch (a single process).
    public static let whole = BatchShard(rank: 0, count: 1)

    public init(rank: Int, count: Int) {
        precondition(count >= 1 && rank >= 0 && rank < count, "BatchShard: rank \(rank) outside 0..<\(count)")
        (self.rank, self.count) = (rank, count)
    }

    /// Offsets within a batch of `size` samples that this rank takes.
    public func range(inBatchOf size: Int) -> Range<Int> {
        let base = size / count, extra = size % count
        let start = rank * base + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }

    public var description: String { "rank \(rank) of \(count)" }
}

/// Samples `range` of `base`, re-indexed from 0.
public struct DatasetSlice: Dataset {
    public let base: Dataset
    public let range: Range<Int>
    public let labels: [Int]

    public init(_ base: Dataset, range: Range<Int>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= base.count, "DatasetSlice: \(range) outside 0..<\(base.count)")
        (self.base, self.range) = (base, range)
        labels = Array(base.labels[range])
    }

    /// Part `part` of `parts` near-equal contiguous parts (the first count mod parts one longer).
    public init(_ base: Dataset, part: Int, of parts: Int) {
        self.init(base, range: BatchShard(rank: part, count: parts).range(inBatchOf: base.count))
    }

    public var count: Int { range.count }
    public var classNames: [String] { base.classNames }
    public var channels: Int { base.channels }
    public var name: String { "\(base.name) [\(range.lowerBound)..<\(range.upperBound)]" }
    public func image(at index: Int) throws -> Image8 { try base.image(at: range.lowerBound + index) }
}
