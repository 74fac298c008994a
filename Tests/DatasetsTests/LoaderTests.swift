// Samplers and the threaded loader: determinism over worker counts and resume points, the
// balanced sampler's class histogram, early stop, corrupt samples.

import Foundation
import Testing
@testable import Datasets
import ImageIO
import TensorCore

/// Wraps a dataset; the listed indices fail like a corrupt file would.
struct FailingDataset: Dataset {
    let base: ArrayDataset
    let failing: Set<Int>
    var count: Int { base.count }
    var classNames: [String] { base.classNames }
    var labels: [Int] { base.labels }
    var channels: Int { base.channels }
    var name: String { "failing" }
    func image(at index: Int) throws -> Image8 {
        if failing.contains(index) { throw DatasetError("/data/bad_\(index).jpg: corrupt or truncated JPEG") }
        return try base.image(at: index)
    }
}

@Suite struct SamplerTests {
    @Test func ordersArePureFunctionsOfSeedAndEpoch() {
        let labels = (0..<1000).map { $0 % 7 }
        #expect(SamplerKind.sequential.order(labels: labels, seed: 1, epoch: 3) == Array(0..<1000))
        let a = SamplerKind.shuffle.order(labels: labels, seed: 1, epoch: 0)
        #expect(a.sorted() == Array(0..<1000) && a != Array(0..<1000))
        #expect(a == SamplerKind.shuffle.order(labels: labels, seed: 1, epoch: 0))
        #expect(a != SamplerKind.shuffle.order(labels: labels, seed: 1, epoch: 1))
        #expect(a != SamplerKind.shuffle.order(labels: labels, seed: 2, epoch: 0))
        let b = SamplerKind.balanced.order(labels: labels, seed: 1, epoch: 0)
        #expect(b.count == 1000 && b == SamplerKind.balanced.order(labels: labels, seed: 1, epoch: 0))
        #expect(b.allSatisfy { (0..<1000).contains($0) })
    }

    /// One class cut to 10 % of the others. Over 100 batches of 64 (6,400 draws) the balanced
    /// sampler's class counts pass Pearson's χ² test against uniform: χ² with 9 degrees of freedom
    /// stays below 27.88, its 0.999 quantile. The shuffle sampler gives the small class ~1/91 of the
    /// draws, a χ² in the hundreds.
    @Test func balancedHistogramIsUniform() throws {
        var labels: [Int] = []
        for c in 0..<10 { labels += Array(repeating: c, count: c == 9 ? 100 : 1000) }
        let tiny = Image8(width: 1, height: 1, channels: 1, pixels: [0])
        let ds = ArrayDataset(images: Array(repeating: tiny, count: labels.count), labels: labels,
                              classNames: (0..<10).map(String.init))
        func chiSquare(_ sampler: SamplerKind) throws -> Double {
            let loader = DataLoader(dataset: ds, transform: .flipOnly(mean: [0], std: nil), batchSize: 64,
                                    sampler: sampler, seed: 2024, workers: 2)
            let stream = loader.batches(epoch: 0)
            defer { stream.cancel() }
            var counts = [Int](repeating: 0, count: 10)
            for _ in 0..<100 {
                let batch = try #require(try stream.next())
                for l in batch.labels { counts[l] += 1 }
            }
            let expected = 6400.0 / 10
            return counts.reduce(0.0) { $0 + pow(Double($1) - expected, 2) / expected }
        }
        let balanced = try chiSquare(.balanced)
        let shuffled = try chiSquare(.shuffle)
        #expect(balanced < 27.88, "balanced χ² \(balanced)")
        #expect(shuffled > 200, "shuffle χ² \(shuffled)")
        // Over several epochs the small class's 100 images are all used, each repeatedly.
        let order = SamplerKind.balanced.order(labels: labels, seed: 7, epoch: 1)
        #expect(Set(order.filter { $0 >= 9000 }).count == 100)
    }
}

@Suite struct LoaderTests {
    let data = randomDataset(count: 103, width: 12, height: 10, channels: 3, classes: 5, seed: 11)

    func loader(workers: Int, prefetch: Int = 4, sampler: SamplerKind = .balanced, dropLast: Bool = true) -> DataLoader {
        DataLoader(dataset: data, transform: .cifarTraining(padding: 3, mean: [0.5, 0.4, 0.3], std: [0.2, 0.2, 0.2]),
                   batchSize: 8, sampler: sampler, seed: 99, dropLast: dropLast, workers: workers, prefetch: prefetch)
    }

    @Test(.timeLimit(.minutes(1))) func identicalAcrossWorkersAndResume() throws {
        let reference = try drain(loader(workers: 0).batches(epoch: 3))
        #expect(reference.count == 12 && loader(workers: 0).batchesPerEpoch == 12)
        #expect(reference[0].images.shape == [8, 3, 10, 12])
        for (w, p) in [(1, 1), (2, 4), (2, 1), (3, 2)] {
            #expect(sameBatches(try drain(loader(workers: w, prefetch: p).batches(epoch: 3)), reference), "workers \(w) prefetch \(p)")
        }
        for k in [0, 1, 5, 11, 12] {
            #expect(sameBatches(try drain(loader(workers: 2).batches(epoch: 3, startingAt: k)), Array(reference[k...])), "start \(k)")
        }
        #expect(sameBatches([try loader(workers: 0).batch(epoch: 3, index: 7)], [reference[7]]))
        let other = try drain(loader(workers: 2).batches(epoch: 4))
        #expect(!sameBatches(other, reference))
        // Labels and indices agree with the dataset and the sampler's order.
        let order = loader(workers: 0).order(epoch: 3)
        #expect(reference.flatMap(\.indices) == Array(order.prefix(96)))
        #expect(reference.flatMap(\.labels) == order.prefix(96).map { data.labels[$0] })
        // Without dropLast the 13th batch holds the remaining 7 samples.
        let all = try drain(loader(workers: 2, sampler: .sequential, dropLast: false).batches(epoch: 0))
        #expect(all.count == 13 && all.last?.labels.count == 7 && all.flatMap(\.indices) == Array(0..<103))
    }

    /// Real JPEGs through RandomResizedCrop: same batches with 1 and 2 workers.
    @Test(.timeLimit(.minutes(1))) func imageFolderDeterminism() throws {
        let jpegs = try foolboxImages("imagenet_")
        let dir = try TemporaryDirectory("folder-det")
        for (i, f) in jpegs.prefix(12).enumerated() {
            try FileManager.default.createDirectory(atPath: dir.file("train/c\(i % 3)"), withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: f.path, toPath: dir.file("train/c\(i % 3)/\(i).jpg"))
        }
        let ds = try openDataset("folder:" + dir.path, train: true)
        let stats = ChannelStatistics.imagenet
        func run(_ workers: Int) throws -> [Batch] {
            try drain(DataLoader(dataset: ds, transform: .imagenetTraining(size: 64, mean: stats.mean, std: stats.std),
                                 batchSize: 4, sampler: .shuffle, seed: 5, workers: workers).batches(epoch: 1))
        }
        let one = try run(1)
        #expect(one.count == 3 && one[0].images.shape == [4, 3, 64, 64])
        #expect(sameBatches(try run(2), one))
        // Variable sizes without a crop cannot be batched: a clear error.
        let eval = DataLoader(dataset: ds, transform: .evaluation(resize: nil, crop: nil, mean: [0], std: nil),
                              batchSize: 4, sampler: .sequential, seed: 0, workers: 2)
        #expect { try drain(eval.batches(epoch: 0)) } throws: { "\($0)".contains("batching needs equal sizes") }
    }

    /// Stopping after one batch, dropping streams without cancelling, and cancelling twice all
    /// return promptly with the workers joined.
    @Test(.timeLimit(.minutes(1))) func earlyStopDoesNotHang() throws {
        let l = loader(workers: 2, prefetch: 2)
        for _ in 0..<20 {
            let s = l.batches(epoch: 0)
            _ = try s.next()
            s.cancel()
            s.cancel()
            #expect(try s.next() == nil)
        }
        for _ in 0..<20 { _ = l.batches(epoch: 1) }  // deinit cancels
        let s = l.batches(epoch: 2, startingAt: 12)
        #expect(try s.next() == nil)
    }

    @Test(.timeLimit(.minutes(1))) func corruptSamples() throws {
        let ds = FailingDataset(base: data, failing: [3, 40])
        let transform = Transform.flipOnly(mean: [0], std: nil)
        for workers in [0, 2] {
            let strict = DataLoader(dataset: ds, transform: transform, batchSize: 8, sampler: .sequential, seed: 1, workers: workers)
            let stream = strict.batches(epoch: 0)
            #expect { try stream.next() } throws: { "\($0)".contains("/data/bad_3.jpg") }
            #expect(try stream.next() == nil)
        }
        func skipping(_ workers: Int) throws -> (DataLoader, [Batch]) {
            let l = DataLoader(dataset: ds, transform: transform, batchSize: 8, sampler: .shuffle, seed: 1,
                               dropLast: false, workers: workers, skipCorrupt: true)
            return (l, try drain(l.batches(epoch: 0)))
        }
        let (l0, b0) = try skipping(0)
        let (l2, b2) = try skipping(2)
        #expect(sameBatches(b0, b2))
        #expect(b0.count == 13 && b0.map(\.labels.count) == Array(repeating: 8, count: 12) + [7])
        #expect(!b0.flatMap(\.indices).contains(3) && !b0.flatMap(\.indices).contains(40))
        #expect(l0.skippedCount >= 2 && l0.corruptIndices == [3, 40] && l2.corruptIndices == [3, 40])
    }
}
