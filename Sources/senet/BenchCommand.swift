// `senet bench`: how fast a model runs here — inference (evaluation mode, no gradients) or a
// training step (forward, backward, SGD update) — as median and range of ms per batch, images/s,
// effective GFLOP/s and peak resident memory. `Scripts/bench_peers.py` times PyTorch, torch.compile
// and ONNX Runtime on the same workloads; `make bench` sets them side by side.

import ArgumentParser
import Foundation
import SENet
#if canImport(Glibc)
import Glibc
#endif

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a model: inference or training steps at a batch size and input size (median, min–max, images/s, GFLOP/s, peak RSS).")

    @Option(help: "Model name (see `senet models`).") var model: String
    @Option(help: "Batch size.") var batchSize = 1
    @Option(parsing: .upToNextOption, help: "Input height and width (default: the model's).") var inputSize: [Int] = []
    @Option(help: "Input channels.") var inChannels = 3
    @Option(help: "Number of classes (default: the model's).") var numClasses: Int?
    @Option(help: "inference or training (forward + backward + SGD step).") var mode = "inference"
    @Option(help: "Timed iterations.") var iterations = 10
    @Option(help: "Untimed warm-up iterations (the first calls plan and tune kernels).") var warmup = 3
    @Flag(help: "Run the reference (unfused) inference path.") var noFuse = false
    @Flag(help: "Print one JSON object.") var json = false

    @Option(help: ArgumentHelp("A second model timed in the same run, batch for batch in turn with the first (same batch, input and mode); prints the time ratio.",
                               discussion: "Two networks timed in one process, one batch of each in turn, see the same state of a shared machine: the ratio of their times (median of the pairs' ratios) is steadier than two separate runs give.",
                               valueName: "model")) var against: String?

    /// One timed step of `name` (inference or a training step) on this command's workload, and
    /// its FLOPs per image.
    private func makeStep(_ name: String, _ h: Int, _ w: Int) throws -> (step: () -> Void, flopsPerImage: Double, macs: Int) {
        let entry = try ModelRegistry.entry(name)
        let net = try ModelRegistry.create(name, ModelOptions(numClasses: numClasses, inChannels: inChannels))
        let macs = profile(net, height: h, width: w, inChannels: inChannels).totalMACs
        let x = Tensor.randomNormal([batchSize, inChannels, h, w], seed: 1)
        let classes = numClasses ?? entry.defaultNumClasses
        let targets = (0..<batchSize).map { $0 % classes }
        let batchSize = self.batchSize
        if mode == "inference" {
            net.eval()
            let engine = noFuse ? nil : InferenceEngine(net)
            return ({
                let y = withoutGradients { engine?(x) ?? net(x) }
                precondition(y.count == batchSize * classes)
            }, 2.0 * Double(macs), macs)
        }
        net.train()
        let sgd = SGD(net, learningRate: 0.01, momentum: 0.9, weightDecay: 1e-4)
        return ({
            let (_, grads) = valueAndGradient(of: net) { crossEntropy(logits: net(x), targets: targets) }
            sgd.step(grads)
        }, 6.0 * Double(macs), macs)  // forward, backward-data, backward-weights
    }

    func run() throws {
        guard ["inference", "training"].contains(mode) else { throw ValidationError("--mode must be inference or training") }
        guard batchSize >= 1, iterations >= 1, warmup >= 0 else { throw ValidationError("--batch-size and --iterations must be ≥ 1, --warmup ≥ 0") }
        let entry = try ModelRegistry.entry(model)
        let (h, w) = try resolveInputSize(inputSize, model: model, entry: entry)
        let (step, flopsPerImage, macs) = try makeStep(model, h, w)
        let other = try against.map { try makeStep($0, h, w).step }

        func timed(_ f: () -> Void) -> Double {
            let t0 = DispatchTime.now().uptimeNanoseconds
            f()
            return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        }
        for _ in 0..<warmup {
            step()
            other?()
        }
        var times: [Double] = [], otherTimes: [Double] = []
        for i in 0..<iterations {
            // In turn, each model first every other time.
            if let other, i % 2 == 1 { otherTimes.append(timed(other)) }
            times.append(timed(step))
            if let other, i % 2 == 0 { otherTimes.append(timed(other)) }
        }
        func median(_ v: [Double]) -> Double {
            let s = v.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        // The time ratio model ÷ against: the median of the pairs' ratios, and the ratio of medians.
        let comparison = against.map { name in
            (name: name, median: median(otherTimes), paired: median(zip(times, otherTimes).map { $0 / $1 }))
        }
        let sorted = times.sorted()
        let median = median(times)
        let imagesPerSecond = Double(batchSize) / (median / 1000)
        let gflops = flopsPerImage * Double(batchSize) / (median / 1000) / 1e9
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peak = Int(usage.ru_maxrss) * 1024
        if json {
            var obj: [String: Any] = [
                "model": model, "mode": mode, "batch_size": batchSize, "input_size": [h, w], "in_channels": inChannels,
                "iterations": iterations, "warmup": warmup, "fused": mode == "inference" && !noFuse,
                "ms_per_batch_median": median, "ms_per_batch_min": sorted.first!, "ms_per_batch_max": sorted.last!,
                "images_per_second": imagesPerSecond, "gflops_effective": gflops, "macs_per_image": macs,
                "peak_rss_bytes": peak, "peak_tensor_bytes": TensorStorage.peakBytes, "threads": Int(ProcessInfo.processInfo.environment["OMP_NUM_THREADS"] ?? "") ?? ProcessInfo.processInfo.activeProcessorCount,
            ]
            if let c = comparison {
                obj["against"] = ["model": c.name, "ms_per_batch_median": c.median,
                                     "images_per_second": Double(batchSize) / (c.median / 1000),
                                     "time_ratio_paired": c.paired, "time_ratio_medians": median / c.median] as [String: Any]
            }
            let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: "%@ %@ batch %d at %d×%d: %.2f ms per batch (min %.2f, max %.2f over %d), %.2f images/s, %.1f GFLOP/s effective, peak RSS %.0f MiB",
                         model, mode, batchSize, h, w, median, sorted.first!, sorted.last!, iterations, imagesPerSecond, gflops,
                         Double(peak) / 1_048_576))
            if let c = comparison {
                print(String(format: "%@ in turn: %.2f ms per batch; time %@ ÷ %@ = %.3f (median of the %d pairs' ratios; ratio of medians %.3f)",
                             c.name, c.median, model, c.name, c.paired, iterations, median / c.median))
            }
        }
    }
}
