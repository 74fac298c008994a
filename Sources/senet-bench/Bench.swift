// senet-bench: release-mode benchmarks. `senet-bench conv` times every distinct convolution of
// ResNet-50 (timm/torchvision layout, 224×224) at the given batch sizes, forward, backward-data
// and backward-weights, and prints ms and GFLOP/s (or JSON lines for Scripts/perf_table.py,
// with the same shape ids as Scripts/bench_torch.py). `--layout blocked` times the calls as they
// run inside our networks: activations in oneDNN's channel-blocked layout on both sides (the
// image input of the stem stays NCHW), no reorders.

import ArgumentParser
import Foundation
import Kernels

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "senet-bench", abstract: "Benchmarks for the SENet kernels (build with -c release).",
        subcommands: [ConvBench.self, StepBench.self, LoaderBench.self, AllreduceBench.self, SgemmBench.self], defaultSubcommand: ConvBench.self)
}

/// (cin, cout, k, stride, pad, h) of ResNet-50's distinct convolutions.
let resnet50Convs: [(Int, Int, Int, Int, Int, Int)] = [
    (3, 64, 7, 2, 3, 224),
    (64, 64, 1, 1, 0, 56), (64, 64, 3, 1, 1, 56), (64, 256, 1, 1, 0, 56), (256, 64, 1, 1, 0, 56),
    (256, 128, 1, 1, 0, 56), (128, 128, 3, 2, 1, 56), (128, 512, 1, 1, 0, 28), (256, 512, 1, 2, 0, 56),
    (512, 128, 1, 1, 0, 28), (128, 128, 3, 1, 1, 28),
    (512, 256, 1, 1, 0, 28), (256, 256, 3, 2, 1, 28), (256, 1024, 1, 1, 0, 14), (512, 1024, 1, 2, 0, 28),
    (1024, 256, 1, 1, 0, 14), (256, 256, 3, 1, 1, 14),
    (1024, 512, 1, 1, 0, 14), (512, 512, 3, 2, 1, 14), (512, 2048, 1, 1, 0, 7), (1024, 2048, 1, 2, 0, 14),
    (2048, 512, 1, 1, 0, 7), (512, 512, 3, 1, 1, 7),
]

struct ConvBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "conv", abstract: "ResNet-50 convolution shapes.")

    @Option(help: "Comma-separated batch sizes.") var batches = "1,16"
    @Option(help: "Timed repeats per measurement (median reported).") var repeats = 5
    @Option(help: "Comma-separated shape ids to run (e.g. 64x56-64-k3s1).") var only = ""
    @Option(help: "Activations: nchw (calls on NCHW buffers) or blocked (the layout our networks keep).")
    var layout = "nchw"
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        guard layout == "nchw" || layout == "blocked" else { throw ValidationError("--layout: nchw or blocked") }
        let block = layout == "blocked" ? activationBlock : 1
        let label = layout == "blocked" ? "ours_blocked" : "ours"
        setvbuf(stdout, nil, _IOLBF, 0)
        let batchList = batches.split(separator: ",").compactMap { Int($0) }
        let filter = Set(only.split(separator: ",").map(String.init))
        if !json {
            print("shape".padding(toLength: 18, withPad: " ", startingAt: 0) + " batch  pass              ms(median)   min      max   GFLOP/s  impl")
        }
        for (cin, cout, k, s, p, h) in resnet50Convs {
            let id = "\(cin)x\(h)-\(cout)-k\(k)s\(s)"
            if !filter.isEmpty && !filter.contains(id) { continue }
            for n in batchList {
                let shape = Conv2DShape(n: n, c: cin, h: h, w: h, o: cout, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p)
                let (inB, outB) = (cin % block == 0 ? block : 1, cout % block == 0 ? block : 1)
                let x = randomBuffer(shape.inputCount), w = randomBuffer(shape.weightCount)
                let y = randomBuffer(shape.outputCount)
                defer { x.deallocate(); w.deallocate(); y.deallocate() }
                let passes: [(String, ConvPass, () -> Void)] = [
                    ("forward", .forward, {
                        conv2dForward(out: y, inp: x, weight: w, bias: nil, shape, inpBlock: inB, outBlock: outB) }),
                    ("backward_data", .backwardData, {
                        conv2dBackwardData(dinp: x, dout: y, weight: w, shape, inpBlock: inB, outBlock: outB) }),
                    ("backward_weights", .backwardWeights, {
                        conv2dBackwardWeights(dweight: w, dbias: nil, inp: x, dout: y, shape, inpBlock: inB, outBlock: outB) }),
                ]
                for (name, pass, call) in passes {
                    let t = time(call)
                    let gflops = 2 * Double(shape.macs) / (t.median * 1e6)
                    let impl = conv2dImplementation(shape, pass: pass, inpBlock: inB, outBlock: outB) ?? "?"
                    if json {
                        print(#"{"id":"\#(id)","batch":\#(n),"pass":"\#(name)","layout":"\#(label)","ms_median":\#(t.median),"ms_min":\#(t.min),"ms_max":\#(t.max),"gflops":\#(gflops),"impl":"\#(impl)","threads":\#(kernelThreads)}"#)
                    } else {
                        print(id.padding(toLength: 18, withPad: " ", startingAt: 0)
                              + String(format: " %5d  ", n) + name.padding(toLength: 16, withPad: " ", startingAt: 0)
                              + String(format: " %9.3f %8.3f %8.3f %8.1f  ", t.median, t.min, t.max, gflops) + impl)
                    }
                }
            }
        }
    }

    /// Median, min and max milliseconds per call over `repeats` timed runs after warm-up. A run
    /// loops the call enough times to last ≥ 20 ms.
    func time(_ call: () -> Void) -> (median: Double, min: Double, max: Double) {
        call(); call()  // first call picks the layout and JIT-compiles; second warms caches
        let t0 = DispatchTime.now().uptimeNanoseconds
        call()
        let once = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        let loops = max(1, min(1000, Int((20 / max(once, 1e-3)).rounded(.up))))
        var samples: [Double] = []
        for _ in 0..<repeats {
            let s = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<loops { call() }
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - s) / 1e6 / Double(loops))
        }
        samples.sort()
        return (samples[samples.count / 2], samples.first!, samples.last!)
    }

    func randomBuffer(_ n: Int) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
        var state: UInt32 = 12345
        for i in 0..<n {
            state = state &* 1_664_525 &+ 1_013_904_223
            p[i] = Float(Int32(bitPattern: state >> 8) - (1 << 23)) / Float(1 << 23)
        }
        return p
    }
}
