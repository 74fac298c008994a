// Streaming stores (Streaming.swift): every kernel that can write its output with them must write
// the very bytes its plain stores write, in both channel-blocked layouts, whether or not its output
// is aligned for them. (The plain path itself is checked against the reference twins in
// ReferenceTwinTests.) Outputs here are small, so the kernels are asked to stream whatever the size.

@testable import Kernels
import Testing

/// `count` floats at a 64-byte aligned address plus `shift` floats (shift 1: not aligned for
/// streaming stores), filled with NaN.
private final class Buffer {
    let raw: UnsafeMutableRawPointer
    let p: UnsafeMutablePointer<Float>
    let count: Int

    init(_ count: Int, shift: Int = 0) {
        raw = UnsafeMutableRawPointer.allocate(byteCount: (count + shift) * 4, alignment: 64)
        p = (raw + shift * 4).bindMemory(to: Float.self, capacity: count)
        p.initialize(repeating: .nan, count: count)
        self.count = count
    }

    deinit { raw.deallocate() }

    /// The bit patterns (so that NaNs compare too).
    var bits: [UInt32] { (0..<count).map { p[$0].bitPattern } }
}

@Suite("Streaming stores") struct StreamingStoreTests {
    @Test func alignmentDecidesWhetherAKernelStreams() {
        let aligned = Buffer(64), shifted = Buffer(64, shift: 1)
        #expect(OutputStores(aligned.p, count: 64, .streaming).streaming)
        #expect(!OutputStores(shifted.p, count: 64, .streaming).streaming)
        #expect(!OutputStores(aligned.p, count: 64, .plain).streaming)
        #expect(!OutputStores(aligned.p, count: 64, .automatic).streaming, "64 floats are below the default size")
    }

    // (N, C, positions per plane, block): both blocks, odd plane sizes, planes longer than a run of 64.
    @Test(arguments: [(2, 16, 15, 8), (2, 32, 63, 16), (3, 16, 143, 16), (1, 8, 1, 8), (2, 48, 70, 16), (4, 64, 200, 16)])
    func sameBytesAsPlainStores(_ dims: (Int, Int, Int, Int)) {
        let (n, c, s, b) = dims
        let count = n * c * s, label = "N\(n) C\(c) S\(s) block \(b)"
        let x = randoms(count, seed: 41, scale: 2, offset: 0.3), r = randoms(count, seed: 42), dy = randoms(count, seed: 43)
        let scale = randoms(c, seed: 44, scale: 0.5, offset: 1), shift = randoms(c, seed: 45)
        let planeScale = randoms(n * c, seed: 46), planeOffset = randoms(n * c, seed: 47)
        let mean = randoms(c, seed: 48), invStd = randoms(c, seed: 49, scale: 0.2, offset: 1)
        let sums = randoms(2 * c, seed: 50).map(Double.init)

        /// Runs `write(out, policy)` with plain stores, then streaming into an aligned and into a
        /// misaligned output (the kernel then falls back to plain stores); all three must agree.
        func check(_ what: String, outputs: Int = 1,
                   _ write: ([UnsafeMutablePointer<Float>], OutputStorePolicy) -> [Float]) {
            func run(_ policy: OutputStorePolicy, shift: Int) -> ([[UInt32]], [Float]) {
                let bufs = (0..<outputs).map { _ in Buffer(count, shift: shift) }
                let extra = write(bufs.map(\.p), policy)
                return (bufs.map(\.bits), extra)
            }
            let plain = run(.plain, shift: 0)
            for shift in [0, 1] {
                let streamed = run(.streaming, shift: shift)
                #expect(streamed.0 == plain.0, "\(label) \(what): streamed output (shift \(shift)) differs")
                #expect(streamed.1.map(\.bitPattern) == plain.1.map(\.bitPattern), "\(label) \(what): sums differ")
            }
            #expect(plain.0.allSatisfy { $0.allSatisfy { !Float(bitPattern: $0).isNaN } }, "\(label) \(what): output not written")
        }

        for relu in [false, true] {
            check("affine relu \(relu)") { out, policy in
                blockedAffine(out: out[0], inp: x, scale: scale, shift: shift, n: n, c: c, s: s, block: b, relu: relu, stores: policy)
                return []
            }
            check("affine + plane sums relu \(relu)") { out, policy in
                var sums = nans(n * c)
                blockedAffine(out: out[0], inp: x, scale: scale, shift: shift, n: n, c: c, s: s, block: b, relu: relu,
                              planeSums: &sums, stores: policy)
                return sums
            }
        }
        for (training, fused) in [(true, false), (true, true), (false, false)] {
            check("batch norm backward input, training \(training), fused ReLU and plane affine \(fused)") { out, policy in
                sums.withUnsafeBufferPointer { sd in
                    batchNormBackwardInputBlocked(dinp: out[0], dout: dy, inp: x, mean: mean, invStd: invStd, weight: scale,
                                                  sumDout: sd.baseAddress!, sumDoutCentered: sd.baseAddress! + c,
                                                  count: n * s, n: n, c: c, s: s, block: b, training: training,
                                                  reluScale: fused ? scale : nil, reluShift: fused ? shift : nil,
                                                  doutScale: fused ? planeScale : nil, doutOffset: fused ? planeOffset : nil,
                                                  stores: policy)
                }
                return []
            }
        }
        check("scale + add + ReLU") { out, policy in
            blockedScaleAddReLU(out: out[0], x: x, scale: planeScale, residual: r, n: n, c: c, s: s, block: b, stores: policy)
            return []
        }
        let seOut = randoms(count, seed: 51)  // a stand-in forward output: its sign masks dout
        check("scale + add + ReLU backward, dr and dx", outputs: 2) { out, policy in
            blockedScaleAddReLUBackward(dx: out[1], dr: out[0], dout: dy, out: seOut, scale: planeScale,
                                        n: n, c: c, s: s, block: b, stores: policy)
            return []
        }
        check("scale + add + ReLU backward, dr and ds") { out, policy in
            var ds = nans(n * c)
            blockedScaleAddReLUBackward(dx: nil, dr: out[0], dout: dy, out: seOut, scale: planeScale, x: x, ds: &ds,
                                        n: n, c: c, s: s, block: b, stores: policy)
            return ds
        }
    }
}
