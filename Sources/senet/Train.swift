// `senet train` and `senet eval`: training on real data with the paper's or He et al.'s recipe,
// and evaluation of a checkpoint.

import ArgumentParser
import Foundation
import SENet

/// What a dataset kind implies: normalisation statistics, training and evaluation transforms.
struct DataPlan {
    let stats: ChannelStatistics
    let trainTransform: Transform
    let evalTransform: Transform
    let inputSize: Int
    let resize: Int?

    /// `augment`: "paper" (random-resized crop 224 + flip, mean subtraction), "cifar" (pad-4
    /// crop + flip), "flip" or "none".
    static func make(spec: String, dataset: Dataset, augment: String) -> DataPlan {
        let isFolder = spec.hasPrefix("folder:")
        let stats: ChannelStatistics
        if spec == "fashion-mnist" || dataset.name.lowercased().contains("fashion") {
            stats = .fashionMNIST
        } else if spec.hasPrefix("idx:") {
            stats = ChannelStatistics(mean: [0.1307], std: [0.3081])  // MNIST
        } else if spec.hasPrefix("cifar") {
            stats = ChannelStatistics(mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616])
        } else {
            stats = .imagenet
        }
        let meanOnly = augment == "paper"
        let std: [Float]? = meanOnly ? nil : stats.std
        let train: Transform
        switch augment {
        case "paper": train = .imagenetTraining(size: isFolder ? 224 : 28, mean: stats.mean, std: std)
        case "cifar": train = .cifarTraining(padding: 4, mean: stats.mean, std: std)
        case "flip": train = .flipOnly(mean: stats.mean, std: std)
        default: train = .evaluation(resize: nil, crop: nil, mean: stats.mean, std: std)
        }
        let eval: Transform = isFolder ? .evaluation(resize: 256, crop: 224, mean: stats.mean, std: std)
                                       : .evaluation(resize: nil, crop: nil, mean: stats.mean, std: std)
        return DataPlan(stats: DataPlan.effective(stats, meanOnly), trainTransform: train, evalTransform: eval,
                        inputSize: isFolder ? 224 : 0, resize: isFolder ? 256 : nil)
    }

    static func effective(_ s: ChannelStatistics, _ meanOnly: Bool) -> ChannelStatistics {
        meanOnly ? ChannelStatistics(mean: s.mean, std: s.mean.map { _ in 1 }) : s
    }

    /// Preprocessing metadata for checkpoints, so that `senet predict` prepares images the same way.
    func metadata(dataset: Dataset, sampleSide: Int) -> [String: String] {
        let side = inputSize > 0 ? inputSize : sampleSide
        var config = PretrainedConfig(inputSize: side, cropFraction: resize.map { Double(side) / Double($0) } ?? 1,
                                      mean: stats.mean, std: stats.std, labels: dataset.classNames)
        config.interpolation = .bilinear
        var m = config.metadata
        m["in_channels"] = "\(dataset.channels)"
        m["num_classes"] = "\(dataset.classNames.count)"
        return m
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model on real data; per-epoch metrics to OUT/metrics.jsonl, checkpoints OUT/last.safetensors and OUT/best.safetensors.",
        discussion: """
            Recipes: `paper` is the ImageNet recipe of the SENet paper §5.1 (SGD momentum 0.9, lr 0.6 × batch/1024, \
            ÷10 every 30 epochs, 100 epochs, random-size crop 224 + flip, mean subtraction, class-balanced sampling); \
            `cifar` is He et al.'s (lr 0.1, ÷10 at 50% and 75% of training, weight decay 1e-4, pad-4 crop + flip, 164 epochs); \
            `quick` (the default) is a short cosine run for small data such as Fashion-MNIST (lr 0.1, 5% warm-up, \
            flips, shuffling). Every value can be overridden. Ctrl-C writes a checkpoint and exits with status 130; \
            --resume continues from OUT/last.safetensors exactly where it stopped.

            Under Open MPI's mpirun (`mpirun -np K senet train …`) the K processes train one model data-parallel: \
            each takes its part of every global batch of --batch-size samples, gradients are summed with MPI_Allreduce, \
            --sync-bn makes batch norm use the whole batch's statistics (then K processes compute what one does, up to float32 rounding), \
            and rank 0 alone writes OUT. `kill -USR1` to mpirun checkpoints and stops. With --reproducible (and --sync-bn) \
            every sum over a batch is computed so that its result does not depend on how the batch is split, and oneDNN runs one \
            thread per process: K processes then train as one process does, within 1e-5 over many steps. \
            See docs/distributed.md.
            """)

    @Option(help: "Model name (see `senet models`).") var model: String
    @Option(help: "Training data: fashion-mnist, idx:DIR, cifar10:DIR, cifar100:DIR or folder:DIR.") var data: String
    @Option(help: "Recipe: quick, cifar or paper.") var recipe = "quick"
    @Option(help: "Epochs.") var epochs: Int?
    @Option(help: "Batch size.") var batchSize: Int?
    @Option(help: "Base learning rate.") var lr: Float?
    @Option(help: "Schedule: cosine, step, multistep or constant.") var schedule: String?
    @Option(help: "Linear warm-up epochs (fractions allowed).") var warmupEpochs: Double?
    @Option(help: "Momentum.") var momentum: Float?
    @Flag(help: "Nesterov momentum.") var nesterov = false
    @Option(help: "Weight decay.") var weightDecay: Float?
    @Flag(help: "No weight decay on BN parameters and biases.") var noDecayNormBias = false
    @Option(help: "Label smoothing.") var labelSmoothing: Float = 0
    @Option(help: "Freeze BN statistics for this many final epochs.") var freezeBnEpochs = 0
    @Option(help: "Sampler: shuffle or balanced.") var sampler: String?
    @Option(help: "Augmentation: paper, cifar, flip or none (default: the recipe's).") var augment: String?
    @Option(help: "Use only the first N training samples.") var limit: Int?
    @Option(help: "Validate each epoch on only the first N test samples.") var valLimit: Int?
    @Option(help: "Checkpoint every N steps within an epoch as well (0: epoch ends only).") var checkpointEvery = 0
    @Option(help: "Loader threads.") var workers = 2
    @Option(help: "Random seed (initialisation, order, augmentation).") var seed: UInt64 = 0
    @Option(help: "Output directory.") var out = "runs/train"
    @Flag(help: "Continue from OUT/last.safetensors.") var resume = false
    @Flag(help: "Skip (and count) corrupt images instead of stopping.") var skipCorrupt = false
    @Option(help: "Input channels (default: the dataset's).") var inChannels: Int?
    @Option(help: "Number of classes (default: the dataset's).") var numClasses: Int?
    @Option(help: "Stop after this many optimizer steps in total (for tests and crash drills).") var stopAfterSteps: Int?
    @Option(help: "Scale the learning rate with the global batch: none, linear (lr × batch / --lr-reference-batch, lr being the rate at that batch) or paper (0.6 × batch / 1024); adds a warm-up (5 epochs, at most a tenth of the run) above the reference batch unless --warmup-epochs is given.")
    var lrScaling = "none"
    @Option(help: "Reference batch of --lr-scaling linear.") var lrReferenceBatch = 256
    @Flag(help: "Under mpirun: batch norm with the statistics of the whole global batch, summed over the processes (as one process with the global batch).")
    var syncBn = false
    @Flag(help: "Batch-invariant reductions: results independent of how each batch is split over processes and of thread counts (convolutions image by image on one oneDNN thread, gradient sums in float64); with --sync-bn, mpirun -np K trains as one process does. Slower in one process: use one process per core.")
    var reproducible = false
    @Option(help: "Under mpirun: megabytes of gradients per MPI_Allreduce bucket.") var bucketMb: Double = 25
    @Option(help: "Under mpirun: seconds a collective may wait for the other processes before the job is stopped.") var mpiTimeout: Double = 600

    func run() throws {
        // oneDNN's per-image results depend on its thread count (our own kernels' do not):
        // reproducible runs give it one thread in every process.
        if reproducible { setOpenMPThreads(1) }
        guard let launch = try MPILaunch.detect() else {
            if syncBn { FileHandle.standardError.write(Data("note: --sync-bn has no effect outside mpirun (one process sees the whole batch)\n".utf8)) }
            return try train(parallel: nil)
        }
        // One process per core by default: each rank gets its share of this host's cores, unless
        // OMP_NUM_THREADS or SENET_NUM_THREADS says otherwise (oneDNN's OpenMP has read the
        // environment already, so it is told directly).
        let env = ProcessInfo.processInfo.environment
        if env["OMP_NUM_THREADS"] == nil && env["SENET_NUM_THREADS"] == nil {
            let threads = max(1, ProcessInfo.processInfo.activeProcessorCount / launch.localSize)
            setenv("SENET_NUM_THREADS", "\(threads)", 1)
            if !reproducible { setOpenMPThreads(threads) }
        }
        guard mpiTimeout > 0 else { throw ValidationError("--mpi-timeout must be positive") }
        let group = try MPIProcessGroup(timeout: mpiTimeout)
        let parallel = DataParallel(group: group, syncBatchNorm: syncBn, bucketMegabytes: bucketMb)
        do {
            try train(parallel: parallel)
        } catch let e as ExitCode {
            group.finalize()  // interrupted: every rank stopped at the same step
            throw e
        } catch let e as TrainingError where e.description.hasPrefix("loss is") {
            // The loss is the global batch's, so every rank stops here together.
            if group.isRoot { FileHandle.standardError.write(Data("senet: \(e)\n".utf8)) }
            group.finalize()
            throw ExitCode.failure
        } catch let e as ValidationError {
            // Made from the arguments alone, before any collective: every rank throws it.
            if group.isRoot { FileHandle.standardError.write(Data("Error: \(e)\n".utf8)) }
            group.finalize()
            throw ExitCode(2)
        } catch {
            group.abort("\(error)")  // one rank's failure: mpirun stops the others
        }
        group.finalize()
    }

    func train(parallel: DataParallel?) throws {
        let isRoot = parallel?.isRoot ?? true
        let trainSet = try openDataset(data, train: true)
        let valSet = try openDataset(data, train: false)
        let subset: Dataset = limit.map { SubsetDataset(trainSet, count: $0) } ?? trainSet
        let classes = numClasses ?? trainSet.classNames.count
        let channels = inChannels ?? trainSet.channels
        var o: TrainingOptions
        var defaultSampler = "shuffle", defaultAugment = "flip"
        switch recipe {
        case "paper":
            let b = batchSize ?? 256
            o = TrainingOptions(epochs: epochs ?? 100, batchSize: b, learningRate: lr ?? 0.6 * Float(b) / 1024)
            (o.schedule, o.stepEvery) = ("step", 30)
            (defaultSampler, defaultAugment) = ("balanced", "paper")
        case "cifar":
            o = TrainingOptions(epochs: epochs ?? 164, batchSize: batchSize ?? 128, learningRate: lr ?? 0.1)
            o.schedule = "multistep"
            o.milestones = [o.epochs / 2, o.epochs * 3 / 4]
            defaultAugment = "cifar"
        case "quick":
            o = TrainingOptions(epochs: epochs ?? 2, batchSize: batchSize ?? 128, learningRate: lr ?? 0.1)
            o.schedule = "cosine"
            o.warmupEpochs = 0.05 * Double(o.epochs)
        default:
            throw ValidationError("unknown recipe '\(recipe)' (quick, cifar or paper)")
        }
        if let schedule { o.schedule = schedule }
        if let warmupEpochs { o.warmupEpochs = warmupEpochs }
        if let momentum { o.momentum = momentum }
        if let weightDecay { o.weightDecay = weightDecay }
        o.nesterov = nesterov
        o.decayNormAndBias = !noDecayNormBias
        o.labelSmoothing = labelSmoothing
        o.freezeBNEpochs = freezeBnEpochs
        o.seed = seed
        o.checkpointEvery = checkpointEvery
        o.reproducible = reproducible
        guard let scaling = LRScaling(rawValue: lrScaling) else {
            throw ValidationError("unknown --lr-scaling '\(lrScaling)' (none, linear or paper)")
        }
        if scaling != .none {
            guard lrReferenceBatch > 0 else { throw ValidationError("--lr-reference-batch must be positive") }
            o.learningRate = scaling.rate(base: scaling == .paper ? lr : o.learningRate, batch: o.batchSize, reference: lrReferenceBatch)
            if warmupEpochs == nil {
                o.warmupEpochs = max(o.warmupEpochs, scaling.warmupEpochs(batch: o.batchSize, reference: lrReferenceBatch, epochs: o.epochs))
            }
        }
        if let parallel, o.batchSize < parallel.size {
            throw ValidationError("--batch-size \(o.batchSize) is the global batch; it needs at least one sample for each of the \(parallel.size) processes")
        }
        guard let samplerKind = SamplerKind(rawValue: sampler ?? defaultSampler), samplerKind != .sequential else {
            throw ValidationError("unknown sampler '\(sampler ?? "")' (shuffle or balanced)")
        }
        let plan = DataPlan.make(spec: data, dataset: trainSet, augment: augment ?? defaultAugment)
        let net = try ModelRegistry.create(model, ModelOptions(numClasses: classes, inChannels: channels, seed: seed))
        let trainLoader = DataLoader(dataset: subset, transform: plan.trainTransform, batchSize: o.batchSize,
                                     sampler: samplerKind, seed: seed, dropLast: true, workers: workers, skipCorrupt: skipCorrupt,
                                     shard: parallel?.shard ?? .whole)
        let valLoader = DataLoader(dataset: valLimit.map { SubsetDataset(valSet, count: $0) } ?? valSet, transform: plan.evalTransform, batchSize: 256, sampler: .sequential,
                                   seed: 0, dropLast: false, workers: workers, skipCorrupt: skipCorrupt)
        let trainer = Trainer(model: net, name: model, options: o, train: trainLoader, validation: valLoader,
                              classes: classes, directory: URL(fileURLWithPath: out))
        let side = try trainSet.image(at: 0).height
        trainer.metadata = plan.metadata(dataset: trainSet, sampleSide: side)
        trainer.stopAfterSteps = stopAfterSteps
        trainer.parallel = parallel
        if !isRoot { trainer.log = { _ in } }
        if resume { try trainer.resume() }
        if isRoot {
            var processes = ""
            if let parallel {
                let split = (0..<parallel.size).map { BatchShard(rank: $0, count: parallel.size).range(inBatchOf: o.batchSize).count }
                let sizes = Set(split).sorted(by: >).map(String.init).joined(separator: "/")
                processes = " over \(parallel.size) processes (\(sizes) samples each\(syncBn ? ", synchronised batch norm" : ""))"
            }
            FileHandle.standardError.write(Data(("training \(model) (\(net.parameterCount) parameters) on \(subset.name): "
                + "\(subset.count) images, \(classes) classes; \(o.epochs) epochs of \(trainLoader.batchesPerEpoch) steps, "
                + "batch \(o.batchSize)\(processes), lr \(o.lrSchedule), sampler \(samplerKind.rawValue), augmentation \(augment ?? defaultAugment)\n").utf8))
        }
        do {
            try trainer.run()
        } catch let e as TrainingInterrupted {
            if isRoot { FileHandle.standardError.write(Data("\(e)\n".utf8)) }
            throw ExitCode(130)
        }
        if skipCorrupt && trainLoader.skippedCount > 0 {
            FileHandle.standardError.write(Data("skipped \(trainLoader.skippedCount) corrupt images\(isRoot ? "" : " (rank \(parallel!.rank))")\n".utf8))
        }
        guard isRoot else { return }
        print("checkpoint: \(trainer.lastCheckpoint.path)")
        print("best: \(trainer.bestCheckpoint.path)")
        print("metrics: \(trainer.metricsFile.path)")
    }
}

/// The first `count` samples of a dataset.
struct SubsetDataset: Dataset {
    let base: Dataset
    let count: Int
    init(_ base: Dataset, count: Int) { (self.base, self.count) = (base, min(count, base.count)) }
    var classNames: [String] { base.classNames }
    var labels: [Int] { Array(base.labels.prefix(count)) }
    var channels: Int { base.channels }
    var name: String { base.name + " (first \(count))" }
    func image(at index: Int) throws -> Image8 { try base.image(at: index) }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval", abstract: "Evaluate weights on a dataset's test split: top-1, top-5, loss, per-class accuracy.")

    @Option(help: "Model name.") var model: String
    @Option(help: "Weights or training checkpoint (safetensors).") var weights: String
    @Option(help: "Data: fashion-mnist, idx:DIR, cifar10:DIR, cifar100:DIR or folder:DIR.") var data: String
    @Option(help: "Batch size.") var batchSize = 256
    @Option(help: "Loader threads.") var workers = 2
    @Flag(help: "Skip (and count) corrupt images instead of stopping.") var skipCorrupt = false
    @Flag(help: "Run the reference (unfused) inference path.") var noFuse = false
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let valSet = try openDataset(data, train: false)
        let (net, _) = try buildModel(model, weights: weights, numClasses: nil, inChannels: valSet.channels)
        let plan = DataPlan.make(spec: data, dataset: valSet, augment: "none")
        let loader = DataLoader(dataset: valSet, transform: plan.evalTransform, batchSize: batchSize, sampler: .sequential,
                                seed: 0, dropLast: false, workers: workers, skipCorrupt: skipCorrupt)
        let e = try evaluate(net, loader, classes: valSet.classNames.count, fused: !noFuse)
        let perClass = e.perClass.enumerated().map { i, c in
            (valSet.classNames[i], c.total > 0 ? Double(c.correct) / Double(c.total) : 0, c.total)
        }
        if json {
            let obj: [String: Any] = [
                "model": model, "weights": weights, "data": valSet.name, "images": e.count, "loss": e.loss,
                "top1": e.top1, "top5": e.top5, "skipped": loader.skippedCount,
                "per_class": perClass.map { ["class": $0.0, "top1": $0.1, "images": $0.2] as [String: Any] },
            ]
            let data = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: "%@ on %@: %d images, loss %.4f, top-1 %.2f%%, top-5 %.2f%%", model, valSet.name, e.count,
                         e.loss, 100 * e.top1, 100 * e.top5))
            for (name, acc, n) in perClass { print(String(format: "  %-24@ %6.2f%%  (%d)", name, 100 * acc, n)) }
        }
    }
}
