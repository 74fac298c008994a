// Batch splitting, dataset slices, the learning-rate scaling rule and launch detection: the
// parts of data-parallel training that need no second process.

import Foundation
import Testing
import Datasets
import Distributed
import Training

@Suite("data-parallel pieces")
struct ShardTests {
    @Test func batchSplitCoversTheBatchOnceFirstRanksTakeTheRemainder() {
        for size in [1, 2, 7, 16, 64, 65] {
            for k in 1...min(size, 5) {
                let parts = (0..<k).map { BatchShard(rank: $0, count: k).range(inBatchOf: size) }
                #expect(parts.first?.lowerBound == 0 && parts.last?.upperBound == size)
                for (a, b) in zip(parts, parts.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
                for (r, p) in parts.enumerated() { #expect(p.count == size / k + (r < size % k ? 1 : 0)) }
            }
        }
        #expect(BatchShard(rank: 0, count: 3).range(inBatchOf: 16) == 0..<6)
        #expect(BatchShard(rank: 1, count: 3).range(inBatchOf: 16) == 6..<11)
        #expect(BatchShard(rank: 2, count: 3).range(inBatchOf: 16) == 11..<16)
    }

    @Test func lrScaling() {
        #expect(LRScaling.linear.rate(base: 0.1, batch: 1024) == 0.4)
        #expect(LRScaling.paper.rate(base: nil, batch: 1024) == 0.6)
        #expect(abs(LRScaling.paper.rate(base: nil, batch: 2048) - 1.2) < 1e-6)
        #expect(LRScaling.none.rate(base: 0.05, batch: 4096) == 0.05)
        #expect(LRScaling.linear.warmupEpochs(batch: 1024, epochs: 90) == 5)
        #expect(LRScaling.linear.warmupEpochs(batch: 1024, epochs: 20) == 2)
        #expect(LRScaling.linear.warmupEpochs(batch: 128, epochs: 90) == 0)
        #expect(LRScaling.paper.warmupEpochs(batch: 1024, epochs: 100) == 0)
    }

    @Test func launchDetection() throws {
        #expect(try MPILaunch.detect([:]) == nil)
        let l = try MPILaunch.detect(["OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "2",
                                      "OMPI_COMM_WORLD_LOCAL_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "2"])
        #expect(l == MPILaunch(rank: 2, size: 3, localRank: 2, localSize: 3))
        #expect(throws: DistributedError.self) { try MPILaunch.detect(["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "5"]) }
        #expect(throws: DistributedError.self) { try MPILaunch.detect(["PMI_SIZE": "2", "PMI_RANK": "0"]) }
    }
}
