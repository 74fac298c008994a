// Channel concatenation (Inception modules) and channel shuffle (ShuffleNet).

import Kernels

/// Concatenates 4-D tensors along the channel axis: [N, C1, H, W] ++ [N, C2, H, W] → [N, C1+C2, H, W].
/// Gradient: each input gets its slice of the output gradient.
public func concatChannels(_ xs: [Tensor]) -> Tensor {
    let op = "concatChannels"
    guard let first = xs.first else { shapeFailure(op, "needs at least one tensor") }
    for x in xs where x.rank != 4 || x.shape[0] != first.shape[0] || x.shape[2...] != first.shape[2...] {
        shapeFailure(op, "shapes \(first.shape) and \(x.shape) differ outside the channel axis")
    }
    let (n, s) = (first.shape[0], first.shape[2] * first.shape[3])
    let channels = xs.map { $0.shape[1] }
    let total = channels.reduce(0, +)
    // Parts all in one channel-blocked layout concatenate in it: per image, a part's channel
    // blocks are one contiguous run in both layouts, so the NCHW copy applies to the storage as
    // it is. Otherwise every part is read as NCHW.
    let block = xs.allSatisfy { $0.channelBlock == first.channelBlock } ? first.channelBlock : 1
    var out = Tensor(uninitializedShape: [n, total, first.shape[2], first.shape[3]], channelBlock: block)
    var offset = 0
    out.withUnsafeMutableStorage { o in
        for x in xs {
            let part = x.inLayout(block)
            part.withUnsafeStorage { copyChannels(dst: o, dstChannels: total, offset: offset, src: $0, srcChannels: x.shape[1], n: n, s: s) }
            offset += x.shape[1]
        }
    }
    let shapes = xs.map(\.shape)
    GradientTape.record(&out, xs) { g, need in
        let g = g.inLayout(block)
        var off = 0
        return zip(shapes, need).map { shape, needed in
            defer { off += shape[1] }
            guard needed else { return nil }
            var d = Tensor(uninitializedShape: shape, channelBlock: block)
            d.withUnsafeMutableStorage { pd in
                g.withUnsafeStorage { sliceChannels(out: pd, src: $0, srcChannels: total, offset: off, channels: shape[1], n: n, s: s) }
            }
            return d
        }
    }
    return out
}

/// ShuffleNet's channel shuffle of [N, C, H, W] with `groups` g (C divisible by g): view the
/// channels as g × C/g and transpose. Gradient: the inverse permutation.
public func channelShuffle(_ x: Tensor, groups: Int) -> Tensor {
    if x.rank != 4 || groups < 1 || x.shape[1] % groups != 0 {
        shapeFailure("channelShuffle", "input \(x.shape) cannot be split into \(groups) channel groups")
    }
    let (n, c, s) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    var out = Tensor(uninitializedShape: x.shape)
    out.withUnsafeMutablePointer { o in x.withUnsafePointer { Kernels.channelShuffle(out: o, inp: $0, n: n, c: c, s: s, groups: groups) } }
    GradientTape.record(&out, [x]) { g, _ in
        var d = Tensor(uninitializedShape: g.shape)
        d.withUnsafeMutablePointer { pd in g.withUnsafePointer { Kernels.channelShuffle(out: pd, inp: $0, n: n, c: c, s: s, groups: groups, inverse: true) } }
        return [d]
    }
    return out
}
