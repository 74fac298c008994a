// Reference twin of Layout.swift (copyChannels/sliceChannels as a concatenation, channelShuffle)
// and of Blocked.swift's layout conversion, element by element.

extension Reference {
    /// Concatenation along channels of N×C_i×S parts (the twin of copyChannels at successive offsets).
    public static func concatChannels(_ parts: [[Float]], channels: [Int], n: Int, s: Int) -> [Float] {
        var out: [Float] = []
        for b in 0..<n {
            for (part, c) in zip(parts, channels) { out += part[(b * c * s)..<((b + 1) * c * s)] }
        }
        return out
    }

    /// Channel shuffle: view C as (g, C/g), transpose, flatten: out[b, j·g + i] = inp[b, i·(C/g) + j];
    /// `inverse` undoes it (its backward).
    public static func channelShuffle(inp: [Float], n: Int, c: Int, s: Int, groups g: Int, inverse: Bool = false) -> [Float] {
        var out = inp
        for b in 0..<n { for i in 0..<g { for j in 0..<(c / g) { for e in 0..<s {
            let (grouped, shuffled) = ((b * c + i * (c / g) + j) * s + e, (b * c + j * g + i) * s + e)
            if inverse { out[grouped] = inp[shuffled] } else { out[shuffled] = inp[grouped] }
        } } } }
        return out
    }

    /// An N×C×S NCHW buffer in the channel-blocked layout with block B: element (n, c, s) moves
    /// to ((n·C/B + c/B)·S + s)·B + c mod B (oneDNN's nChw8c / nChw16c).
    public static func channelBlocked(_ x: [Float], n: Int, c: Int, s: Int, block b: Int) -> [Float] {
        var out = x
        for i in 0..<n { for ch in 0..<c { for e in 0..<s {
            out[((i * (c / b) + ch / b) * s + e) * b + ch % b] = x[(i * c + ch) * s + e]
        } } }
        return out
    }

    /// The inverse of `channelBlocked`.
    public static func fromChannelBlocked(_ x: [Float], n: Int, c: Int, s: Int, block b: Int) -> [Float] {
        var out = x
        for i in 0..<n { for ch in 0..<c { for e in 0..<s {
            out[(i * c + ch) * s + e] = x[((i * (c / b) + ch / b) * s + e) * b + ch % b]
        } } }
        return out
    }
}
