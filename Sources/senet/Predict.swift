// `senet predict`: classify photos with a model and its weights, preprocessed as the weights
// expect (the file's metadata, else the model's pretrained configuration).

import ArgumentParser
import Foundation
import SENet

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images (JPEG, PNG): the top-k classes with probabilities per image.")

    @Option(help: "Model name (see `senet models`).") var model: String
    @Option(help: "Weights (safetensors).") var weights: String
    @Argument(help: "Image files.") var images: [String]
    @Option(help: "Classes to print per image.") var topk = 5
    @Option(help: "Number of classes (default: read off the weights).") var numClasses: Int?
    @Option(help: "Images per forward pass.") var batchSize = 8
    @Flag(help: "Run the reference (unfused) inference path.") var noFuse = false
    @Flag(help: "Print one JSON array, one object per image.") var json = false

    func validate() throws {
        guard topk >= 1 else { throw ValidationError("--topk must be at least 1") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        let entry = try ModelRegistry.entry(model)
        let probe = try SafeTensors.read(URL(fileURLWithPath: weights))
        // Input channels: those of the first convolution in the file (1 for a Fashion-MNIST model).
        let inChannels = probe.entries.first { $0.tensor.rank == 4 }?.tensor.shape[1] ?? 3
        guard inChannels == 1 || inChannels == 3 else {
            throw CheckpointError(file: weights, "the first convolution takes \(inChannels) channels; images give 1 or 3")
        }
        let (net, state) = try buildModel(model, weights: weights, numClasses: numClasses, inChannels: inChannels)
        net.eval()
        let engine = noFuse ? nil : InferenceEngine(net)
        let config = PretrainedConfig(metadata: state?.metadata ?? [:], fallback: entry.pretrained)
        let pre = Preprocessing(
            resize: config.cropFraction >= 1 ? config.inputSize : config.resizeSize, crop: config.inputSize,
            interpolation: config.interpolation == .bicubic ? .bicubic : .bilinear,
            normalization: Normalization(mean: inChannels == 1 ? [0, 0, 0] : config.mean,
                                         std: inChannels == 1 ? nil : config.std,
                                         order: config.channelOrder == .bgr ? .bgr : .rgb,
                                         scale: config.pixelScale == 255 ? .byte : .unit))
        var results: [(String, [(Int, Float)])] = []
        var failed = 0
        var batch: [(String, Tensor)] = []
        func flush() {
            guard !batch.isEmpty else { return }
            let x = stack(batch.map(\.1))
            let logits = withoutGradients { engine?(x) ?? net(x) }
            let probs = logSoftmax(logits).scalars.map { exp($0) }
            let classes = logits.shape[1]
            for (i, (path, _)) in batch.enumerated() {
                let row = Array(probs[(i * classes)..<((i + 1) * classes)])
                let top = row.indices.sorted { row[$0] > row[$1] }.prefix(min(topk, classes)).map { ($0, row[$0]) }
                results.append((path, top))
            }
            batch.removeAll()
        }
        for path in images {
            do {
                let image = try ImageDecoder.load(path: path)
                var t = pre(image)
                if inChannels == 1 { t = grayscale(t, mean: config.mean.first ?? 0, std: config.std.first ?? 1) }
                batch.append((path, t))
                if batch.count == batchSize { flush() }
            } catch {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                failed += 1
            }
        }
        flush()
        let labels = config.labels
        func label(_ c: Int) -> String { labels.flatMap { c < $0.count ? $0[c] : nil } ?? "class \(c)" }
        if json {
            let objects: [[String: Any]] = results.map { path, top in
                ["image": path, "top": top.map { ["class": $0.0, "label": label($0.0), "probability": Double($0.1)] as [String: Any] }]
            }
            let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (path, top) in results {
                print(path)
                for (rank, (c, p)) in top.enumerated() {
                    print(String(format: "  %d. %6.2f%%  %@ (%d)", rank + 1, Double(p) * 100, label(c), c))
                }
            }
        }
        if failed > 0 { throw ExitCode.failure }
    }

    /// Stacks [C, H, W] tensors into [N, C, H, W].
    func stack(_ xs: [Tensor]) -> Tensor {
        let shape = xs[0].shape
        return Tensor(shape: [xs.count] + shape, scalars: xs.flatMap(\.scalars))
    }

    /// ITU-R 601 luma (as PIL's convert("L")) of an RGB [3, H, W] tensor, normalised.
    func grayscale(_ t: Tensor, mean: Float, std: Float) -> Tensor {
        let plane = t.shape[1] * t.shape[2]
        let s = t.scalars
        return Tensor(shape: [1, t.shape[1], t.shape[2]], scalars: (0..<plane).map { i in
            let l = 0.299 * s[i] + 0.587 * s[plane + i] + 0.114 * s[2 * plane + i]
            return (l - mean) / std
        })
    }
}
