// `senet-bench loader`: data loader throughput. (a) Fashion-MNIST training batches (in memory,
// flip-only and pad-crop + flip augmentation); (b) 224×224 ImageNet-style training images decoded
// from JPEG files (the foolbox ImageNet samples copied into a temporary ImageFolder, repeated to
// `--jpeg-files` files) through RandomResizedCrop + flip.

import ArgumentParser
import Foundation
import SENet

struct LoaderBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "loader",
        abstract: "Data loader throughput: Fashion-MNIST batches/s and 224×224 JPEG images/s.")

    @Option(help: "Background worker threads.") var workers = 2
    @Option(help: "Fashion-MNIST batch size.") var batchSize = 128
    @Option(help: "Fashion-MNIST batches timed per transform.") var batches = 300
    @Option(help: "JPEG files in the temporary ImageFolder.") var jpegFiles = 200
    @Option(help: "JPEG batch size.") var jpegBatchSize = 32
    @Option(help: "JPEG epochs timed (after one warm-up epoch).") var jpegEpochs = 2
    @Flag(help: "Also time decode, crop+resize+flip and normalisation of the JPEGs on one thread.") var profile = false
    @Option(help: "Folder holding imagenet_*.jpg (default: <repo>/.assets/foolbox).")
    var assets = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".assets/foolbox").path

    func run() throws {
        setvbuf(stdout, nil, _IOLBF, 0)
        try fashionMNIST()
        try jpegs()
    }

    func fashionMNIST() throws {
        var t0 = Date()
        let train = try openDataset("fashion-mnist", train: true)
        print(String(format: "fashion-mnist: read %d images in %.2f s", train.count, Date().timeIntervalSince(t0)))
        let stats = ChannelStatistics.fashionMNIST
        for (label, transform) in [("flipOnly", Transform.flipOnly(mean: stats.mean, std: stats.std)),
                                   ("cifarTraining(padding: 4)", Transform.cifarTraining(padding: 4, mean: stats.mean, std: stats.std))] {
            let loader = DataLoader(dataset: train, transform: transform, batchSize: batchSize, sampler: .shuffle,
                                    seed: 1, workers: workers)
            let stream = loader.batches(epoch: 0)
            defer { stream.cancel() }
            _ = try stream.next()  // warm-up: order, threads
            t0 = Date()
            var n = 0, images = 0
            while n < min(batches, loader.batchesPerEpoch - 1), let b = try stream.next() {
                n += 1
                images += b.labels.count
            }
            let seconds = Date().timeIntervalSince(t0)
            print(String(format: "fashion-mnist %@, batch %d, %d workers: %.1f batches/s, %.0f images/s (%d batches)",
                         label, batchSize, workers, Double(n) / seconds, Double(images) / seconds, n))
        }
    }

    func jpegs() throws {
        let fm = FileManager.default
        let sources = ((try? fm.contentsOfDirectory(atPath: assets)) ?? [])
            .filter { $0.hasPrefix("imagenet_") && $0.hasSuffix(".jpg") }.sorted()
        guard !sources.isEmpty else { throw ValidationError("no imagenet_*.jpg in \(assets): run `make assets`") }
        let root = (NSTemporaryDirectory() as NSString).appendingPathComponent("senet-loader-bench-\(getpid())")
        defer { try? fm.removeItem(atPath: root) }
        for i in 0..<jpegFiles {
            let name = sources[i % sources.count]
            let label = (name as NSString).deletingPathExtension.split(separator: "_").last.map(String.init) ?? "0"
            let dir = "\(root)/train/\(label)"
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try fm.copyItem(atPath: "\(assets)/\(name)", toPath: "\(dir)/\(i).jpg")
        }
        let ds = try openDataset("folder:" + root, train: true)
        let stats = ChannelStatistics.imagenet
        let loader = DataLoader(dataset: ds, transform: .imagenetTraining(size: 224, mean: stats.mean, std: stats.std),
                                batchSize: jpegBatchSize, sampler: .shuffle, seed: 1, workers: workers)
        var images = 0
        var seconds = 0.0
        for epoch in 0...jpegEpochs {
            let t0 = Date()
            var n = 0
            let stream = loader.batches(epoch: epoch)
            while let b = try stream.next() { n += b.labels.count }
            if epoch > 0 { images += n; seconds += Date().timeIntervalSince(t0) }
        }
        if profile { try stages(ds) }
        print(String(format: "jpeg folder (%d files, %d classes), RandomResizedCrop 224 + flip, batch %d, %d workers: %.0f images/s",
                     ds.count, ds.classNames.count, jpegBatchSize, workers, Double(images) / seconds))
    }

    /// Per-image milliseconds of each stage on the calling thread (medians over the files).
    func stages(_ ds: Dataset) throws {
        let stats = ChannelStatistics.imagenet
        let t = Transform.imagenetTraining(size: 224, mean: stats.mean, std: stats.std)
        var decode: [Double] = [], augment: [Double] = [], normalise: [Double] = []
        for i in 0..<min(ds.count, 60) {
            var t0 = Date()
            let image = try ds.image(at: i)
            decode.append(Date().timeIntervalSince(t0) * 1000)
            var rng = SeededGenerator(seed: UInt64(i))
            t0 = Date()
            let out = t.augmented(image, rng: &rng)
            augment.append(Date().timeIntervalSince(t0) * 1000)
            let flipOnly = Transform.flipOnly(mean: stats.mean, std: stats.std)
            t0 = Date()
            var r2 = SeededGenerator(seed: 1)
            _ = flipOnly(out, rng: &r2)
            normalise.append(Date().timeIntervalSince(t0) * 1000)
        }
        func median(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
        func cpu() -> Double { Double(clock()) / Double(CLOCKS_PER_SEC) }
        var c0 = cpu()
        for i in 0..<ds.count {
            var rng = SeededGenerator(seed: UInt64(i))
            _ = t(try ds.image(at: i), rng: &rng)
        }
        let sequentialCPU = (cpu() - c0) / Double(ds.count) * 1000
        let inline = DataLoader(dataset: ds, transform: t, batchSize: jpegBatchSize, sampler: .shuffle, seed: 1, workers: 0)
        c0 = cpu()
        var n = 0
        let stream = inline.batches(epoch: 0)
        while let b = try stream.next() { n += b.labels.count }
        print(String(format: "CPU per image: plain loop %.2f ms, loader inline (0 workers) %.2f ms", sequentialCPU, (cpu() - c0) / Double(n) * 1000))
        print(String(format: "per image, one thread: decode %.2f ms, crop+resize+flip %.2f ms, flip+normalise %.2f ms",
                     median(decode), median(augment), median(normalise)))
    }
}
