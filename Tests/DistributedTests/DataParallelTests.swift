// Data-parallel training inside one process: the batch shards put back together are the
// single-process batch, and the trainer's data-parallel path over a one-process group (gradient
// buckets, seeding, phased batch norm, step reductions, sharded evaluation) ends bit-identical to
// the plain trainer.

import Foundation
import Testing
import Checkpoints
import Datasets
import Distributed
import Models
import NN
import TensorCore
import Training
import _TestSupport

/// `count` noise images (1 × side × side) with labels i mod 10.
struct NoiseDataset: Dataset {
    let count: Int
    let side: Int
    var classNames: [String] { (0..<10).map { "c\($0)" } }
    var labels: [Int] { (0..<count).map { $0 % 10 } }
    var channels: Int { 1 }
    var name: String { "noise" }
    func image(at index: Int) throws -> Image8 {
        var g = SeededGenerator(seed: UInt64(index) &+ 99)
        return Image8(width: side, height: side, channels: 1, pixels: (0..<(side * side)).map { _ in UInt8.random(in: 0...255, using: &g) })
    }
}

@Suite("data-parallel trainer in one process", .serialized)
struct DataParallelTests {
    @Test(arguments: [2, 3])
    func shardsOfABatchMakeTheWholeBatch(processes k: Int) throws {
        let data = NoiseDataset(count: 50, side: 12)
        func loader(_ shard: BatchShard) -> DataLoader {
            DataLoader(dataset: data, transform: .cifarTraining(padding: 2, mean: [0.5], std: [0.25]), batchSize: 16,
                       sampler: .shuffle, seed: 7, dropLast: true, workers: 0, shard: shard)
        }
        let whole = loader(.whole)
        let parts = (0..<k).map { loader(BatchShard(rank: $0, count: k)) }
        for index in 0..<whole.batchesPerEpoch {
            let full = try whole.batch(epoch: 1, index: index)
            let pieces = try parts.map { try $0.batch(epoch: 1, index: index) }
            #expect(pieces.map(\.labels.count) == (0..<k).map { 16 / k + ($0 < 16 % k ? 1 : 0) })
            #expect(pieces.flatMap(\.indices) == full.indices)
            #expect(pieces.flatMap(\.labels) == full.labels)
            #expect(pieces.flatMap { $0.images.scalars } == full.images.scalars)  // same augmentation per global position
            #expect(whole.globalBatchCount(index: index) == 16)
        }
    }

    func train(parallel: DataParallel?, directory: String) throws -> (StateDict, [String]) {
        let data = NoiseDataset(count: 64, side: 12)
        var o = TrainingOptions(epochs: 2, batchSize: 16, learningRate: 0.05)
        o.seed = 3
        let net = try ModelRegistry.create("seresnet20", ModelOptions(numClasses: 10, inChannels: 1, seed: 3))
        let loader = DataLoader(dataset: data, transform: .flipOnly(mean: [0.5], std: [0.25]), batchSize: 16, sampler: .shuffle,
                                seed: 3, workers: 1, shard: parallel?.shard ?? .whole)
        let validation = DataLoader(dataset: NoiseDataset(count: 40, side: 12), transform: .evaluation(resize: nil, crop: nil, mean: [0.5], std: [0.25]),
                                    batchSize: 16, sampler: .sequential, seed: 0, dropLast: false, workers: 1)
        let dir = try freshDirectory(directory)
        let trainer = Trainer(model: net, name: "seresnet20", options: o, train: loader, validation: validation, classes: 10,
                              directory: URL(fileURLWithPath: dir))
        trainer.parallel = parallel
        trainer.log = { _ in }
        try trainer.run()
        let metrics = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map(String.init)
        return (try SafeTensors.read(trainer.lastCheckpoint), metrics)
    }

    @Test func oneProcessGroupIsBitIdenticalToPlainTraining() throws {
        let (plain, plainMetrics) = try train(parallel: nil, directory: "dp-plain")
        // 0.01 MB buckets: every tensor above 2,621 floats is a bucket of its own, the small ones share.
        let parallel = DataParallel(group: SingleProcessGroup(), syncBatchNorm: true, bucketMegabytes: 0.01)
        let (dp, dpMetrics) = try train(parallel: parallel, directory: "dp-group")
        #expect(parallel.bucketsPerStep > 10)
        #expect(Set(plain.entries.map(\.key)) == Set(dp.entries.map(\.key)))
        for (key, t) in plain.entries {
            #expect(dp[key]?.scalars == t.scalars, "\(key) differs")
        }
        #expect(plainMetrics == dpMetrics)
    }
}

/// An empty directory `name` under this test process's temporary folder.
func freshDirectory(_ name: String) throws -> String {
    let d = processScratchDirectory("senet-distributed").appendingPathComponent(name).path
    try? FileManager.default.removeItem(atPath: d)
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}
