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

    func run() throws {
        guard ["inference", "training"].contains(mode) else { throw ValidationError("--mode must be inference or training") }
        guard batchSize >= 1, iterations >= 1, warmup >= 0 else { throw ValidationError("--batch-size and --iterations must be ≥ 1, --warmup ≥ 0") }
        let entry = try ModelRegistry.entry(model)
        let (h, w) = try resolveInputSize(inputSize, model: model, entry: entry)
        let net = try ModelRegistry.create(model, ModelOptions(numClasses: numClasses, inChannels: inChannels))
        let macs = profile(net, height: h, width: w, inChannels: inChannels).totalMACs
        let x = Tensor.randomNormal([batchSize, inChannels, h, w], seed: 1)
        let classes = numClasses ?? entry.defaultNumClasses
        let targets = (0..<batchSize).map { $0 % classes }

        let step: () -> Void
        var flopsPerImage = 2.0 * Double(macs)
        if mode == "inference" {
            net.eval()
            let engine = noFuse ? nil : InferenceEngine(net)
            step = {
                let y = withoutGradients { engine?(x) ?? net(x) }
                precondition(y.count == batchSize * classes)
            }
        } else {
            net.train()
            let sgd = SGD(net, learningRate: 0.01, momentum: 0.9, weightDecay: 1e-4)
            flopsPerImage *= 3  // forward, backward-data, backward-weights
            step = {
                let (_, grads) = valueAndGradient(of: net) { crossEntropy(logits: net(x), targets: targets) }
                sgd.step(grads)
            }
        }
        for _ in 0..<warmup { step() }
        var times: [Double] = []
        for _ in 0..<iterations {
            let t0 = DispatchTime.now().uptimeNanoseconds
            step()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        let sorted = times.sorted()
        let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        let imagesPerSecond = Double(batchSize) / (median / 1000)
        let gflops = flopsPerImage * Double(batchSize) / (median / 1000) / 1e9
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peak = Int(usage.ru_maxrss) * 1024
        if json {
            let obj: [String: Any] = [
                "model": model, "mode": mode, "batch_size": batchSize, "input_size": [h, w], "in_channels": inChannels,
                "iterations": iterations, "warmup": warmup, "fused": mode == "inference" && !noFuse,
                "ms_per_batch_median": median, "ms_per_batch_min": sorted.first!, "ms_per_batch_max": sorted.last!,
                "images_per_second": imagesPerSecond, "gflops_effective": gflops, "macs_per_image": macs,
                "peak_rss_bytes": peak, "peak_tensor_bytes": TensorStorage.peakBytes, "threads": Int(ProcessInfo.processInfo.environment["OMP_NUM_THREADS"] ?? "") ?? ProcessInfo.processInfo.activeProcessorCount,
            ]
            let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: "%@ %@ batch %d at %d×%d: %.2f ms per batch (min %.2f, max %.2f over %d), %.2f images/s, %.1f GFLOP/s effective, peak RSS %.0f MiB",
                         model, mode, batchSize, h, w, median, sorted.first!, sorted.last!, iterations, imagesPerSecond, gflops,
                         Double(peak) / 1_048_576))
        }
    }
}
