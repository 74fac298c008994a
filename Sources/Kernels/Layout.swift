// Data movement along the channel axis of NCHW tensors: concatenation and ShuffleNet's channel
// shuffle. Dims legend: N batch, C channels, S = H·W plane size.

/// Copies `src` (N×cs×S) into channels [offset, offset + cs) of `dst` (N×cd×S), or back when
/// `reverse` (slicing a gradient out of a concatenation).
public func copyChannels(dst: UnsafeMutablePointer<Float>, dstChannels cd: Int, offset: Int,
                         src: UnsafePointer<Float>, srcChannels cs: Int, n: Int, s: Int) {
    for b in 0..<n {
        (dst + (b * cd + offset) * s).update(from: src + b * cs * s, count: cs * s)
    }
}

/// The inverse of `copyChannels`: out (N×cs×S) = channels [offset, offset + cs) of src (N×cd×S).
public func sliceChannels(out: UnsafeMutablePointer<Float>, src: UnsafePointer<Float>, srcChannels cd: Int,
                          offset: Int, channels cs: Int, n: Int, s: Int) {
    for b in 0..<n {
        out.advanced(by: b * cs * s).update(from: src + (b * cd + offset) * s, count: cs * s)
    }
}

/// ShuffleNet channel shuffle: view C as (g, C/g), transpose to (C/g, g). Output channel
/// j·g + i takes input channel i·(C/g) + j. With `inverse`, the opposite permutation (backward).
public func channelShuffle(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, c: Int, s: Int,
                           groups g: Int, inverse: Bool = false) {
    let per = c / g
    for b in 0..<n {
        for i in 0..<g {
            for j in 0..<per {
                let src = i * per + j, dst = j * g + i
                let (from, to) = inverse ? (dst, src) : (src, dst)
                (out + (b * c + to) * s).update(from: inp + (b * c + from) * s, count: s)
            }
        }
    }
}
