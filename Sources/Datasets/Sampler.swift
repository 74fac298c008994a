// The order in which an epoch visits the dataset. Every order is a pure function of
// (seed, epoch) and the labels, so a run killed mid-epoch can recompute it on resume.

import TensorCore

/// How an epoch picks its samples.
public enum SamplerKind: String, Sendable, CaseIterable {
    /// 0, 1, 2, … (evaluation).
    case sequential
    /// A uniformly random permutation per epoch (Fisher–Yates).
    case shuffle
    /// The SENet paper's "data balancing for mini-batch sampling" (Hu et al., implementation
    /// details of the ImageNet training): each position draws a class
    /// uniformly among the classes that have samples, then takes that class's next sample from a
    /// queue reshuffled whenever it runs out. An epoch has as many positions as the dataset has
    /// samples; rare classes repeat, common ones are subsampled.
    case balanced

    /// The dataset indices of epoch `epoch`, `labels.count` of them.
    public func order(labels: [Int], seed: UInt64, epoch: Int) -> [Int] {
        let n = labels.count
        var rng = SeededGenerator(seed: deriveSeed(seed, 0x5A3F, UInt64(bitPattern: Int64(epoch))))
        switch self {
        case .sequential:
            return Array(0..<n)
        case .shuffle:
            var order = Array(0..<n)
            shuffle(&order, &rng)
            return order
        case .balanced:
            guard n > 0 else { return [] }
            let classCount = (labels.max() ?? 0) + 1
            var queues = [[Int]](repeating: [], count: classCount)
            for (i, label) in labels.enumerated() { queues[label].append(i) }
            let present = queues.indices.filter { !queues[$0].isEmpty }
            for c in present { shuffle(&queues[c], &rng) }
            var cursor = [Int](repeating: 0, count: classCount)
            var order: [Int] = []
            order.reserveCapacity(n)
            for _ in 0..<n {
                let c = present[rng.nextInt(below: present.count)]
                if cursor[c] == queues[c].count {
                    shuffle(&queues[c], &rng)
                    cursor[c] = 0
                }
                order.append(queues[c][cursor[c]])
                cursor[c] += 1
            }
            return order
        }
    }

    /// Fisher–Yates from the back: swap a[i] with a[U{0…i}].
    private func shuffle(_ a: inout [Int], _ rng: inout SeededGenerator) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            a.swapAt(i, rng.nextInt(below: i + 1))
        }
    }
}

/// SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijective 64-bit mix.
@inline(__always)
func splitMix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// A seed hashed from a sequence of words (each folded in through SplitMix64), used to give every
/// (seed, epoch) its sampler stream and every (seed, epoch, position) its augmentation stream.
func deriveSeed(_ parts: UInt64...) -> UInt64 {
    var h: UInt64 = 0x243F_6A88_85A3_08D3
    for p in parts { h = splitMix64(h ^ p) }
    return h
}
