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

/// A batch norm on a large blocked tensor runs channel block by channel block (`channelBlockMajor`);
/// it must give the very bits of the phase-by-phase order, forward and backward, with every fused
/// option. The tensors here are small, so the order is forced.
@Suite("Batch norm channel block by channel block") struct BlockMajorBatchNormTests {
    @Test(arguments: [(2, 32, 63, 16), (3, 64, 70, 16), (2, 24, 15, 8), (4, 16, 143, 8), (1, 16, 1, 16)])
    func sameBitsAsPhaseByPhase(_ dims: (Int, Int, Int, Int)) {
        let (n, c, s, b) = dims
        let count = n * c * s, label = "N\(n) C\(c) S\(s) block \(b)"
        let x = randoms(count, seed: 61, scale: 2, offset: 0.3), dy = randoms(count, seed: 62)
        let gamma = randoms(c, seed: 63, scale: 0.5, offset: 1), beta = randoms(c, seed: 64)
        let rm0 = randoms(c, seed: 65), rv0 = randoms(c, seed: 66, scale: 0.5, offset: 1)
        let planeScale = randoms(n * c, seed: 67), planeOffset = randoms(n * c, seed: 68)
        func bits(_ v: [Float]) -> [UInt32] { v.map(\.bitPattern) }

        for relu in [false, true] {
            func forward(blockMajor: Bool, policy: OutputStorePolicy) -> [[UInt32]] {
                let out = Buffer(count)
                var mean = nans(c), invStd = nans(c), rm = rm0, rv = rv0, sums = nans(n * c)
                batchNormTrainForwardBlocked(out: out.p, saveMean: &mean, saveInvStd: &invStd, runningMean: &rm, runningVar: &rv,
                                             inp: x, weight: gamma, bias: beta, n: n, c: c, s: s, block: b, eps: 1e-5,
                                             momentum: 0.1, relu: relu, planeSums: &sums, blockMajor: blockMajor, stores: policy)
                return [out.bits, bits(mean), bits(invStd), bits(rm), bits(rv), bits(sums)]
            }
            let phases = forward(blockMajor: false, policy: .plain)
            #expect(forward(blockMajor: true, policy: .plain) == phases, "\(label) forward relu \(relu)")
            #expect(forward(blockMajor: true, policy: .streaming) == phases, "\(label) forward relu \(relu), streaming")
        }

        var mean = nans(c), invStd = nans(c), rm = rm0, rv = rv0
        var y = nans(count)
        batchNormTrainForwardBlocked(out: &y, saveMean: &mean, saveInvStd: &invStd, runningMean: &rm, runningVar: &rv,
                                     inp: x, weight: gamma, bias: beta, n: n, c: c, s: s, block: b, eps: 1e-5, momentum: 0.1,
                                     relu: true)
        var reluScale = nans(c), reluShift = nans(c)
        for ch in 0..<c {
            (reluScale[ch], reluShift[ch]) = batchNormScaleShift(ch, mean: mean[ch], invStd: invStd[ch], weight: gamma, bias: beta)
        }
        // (training, ReLU mask: none / read / recomputed, dout kept per plane, dinp wanted)
        for (training, mask, perPlane, wantDx) in [(true, 0, false, true), (true, 1, false, true), (true, 2, true, true),
                                                   (false, 0, false, true), (true, 2, true, false)] {
            func backward(blockMajor: Bool, policy: OutputStorePolicy) -> [[UInt32]] {
                let dx = Buffer(count)
                var dg = nans(c), db = nans(c)
                batchNormBackwardBlocked(dinp: wantDx ? dx.p : nil, dweight: &dg, dbias: &db, dout: dy, inp: x, mean: mean,
                                         invStd: invStd, weight: gamma, n: n, c: c, s: s, block: b, training: training,
                                         reluOutput: mask == 1 ? y : nil, reluScale: mask == 2 ? reluScale : nil,
                                         reluShift: mask == 2 ? reluShift : nil, doutScale: perPlane ? planeScale : nil,
                                         doutOffset: perPlane ? planeOffset : nil, blockMajor: blockMajor, stores: policy)
                return [dx.bits, bits(dg), bits(db)]
            }
            let what = "\(label) backward training \(training) mask \(mask) per plane \(perPlane) dx \(wantDx)"
            let phases = backward(blockMajor: false, policy: .plain)
            #expect(backward(blockMajor: true, policy: .plain) == phases, "\(what)")
            #expect(backward(blockMajor: true, policy: .streaming) == phases, "\(what), streaming")
            if wantDx { #expect(phases[0].allSatisfy { !Float(bitPattern: $0).isNaN }, "\(what): dx not written") }
        }
    }
}
