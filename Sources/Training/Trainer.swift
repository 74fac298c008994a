// The training loop: SGD steps over a data loader, per-epoch evaluation, metrics.jsonl, atomic
// checkpoints that resume bit-exactly, SIGINT and NaN handling.
//
// Exactness of a resumed run rests on three things: batches depend only on (seed, epoch, batch
// index) (DataLoader), convolutions are chosen by a fixed rule rather than by timing
// (`setConvSelection(.deterministic)`), and the checkpoint holds everything that changes during
// training — weights, BN statistics, momentum buffers, dropout generators, epoch/step counters and
// the running sums of the epoch's metrics.

import Checkpoints
import Datasets
import Foundation
import Models
import NN
import TensorCore
#if canImport(Glibc)
import Glibc
#endif

/// Everything that shapes a training run (recorded in each checkpoint's metadata).
public struct TrainingOptions: Sendable, Codable, Equatable {
    public var epochs: Int
    public var batchSize: Int
    public var learningRate: Float
    /// "step", "multistep", "cosine" or "constant".
    public var schedule: String = "cosine"
    /// Epochs between ÷10 steps (`step`); milestone epochs (`multistep`).
    public var stepEvery: Int = 30
    public var milestones: [Int] = []
    public var gamma: Float = 0.1
    public var warmupEpochs: Double = 0
    public var momentum: Float = 0.9
    public var nesterov = false
    public var weightDecay: Float = 1e-4
    public var decayNormAndBias = true
    public var labelSmoothing: Float = 0
    /// BN statistics are frozen (BN layers in evaluation mode) for this many final epochs.
    public var freezeBNEpochs = 0
    public var seed: UInt64 = 0
    /// Also checkpoint every this many steps within an epoch (0: at epoch ends only).
    public var checkpointEvery = 0
    /// Batch-invariant reductions (`withBatchInvariantReductions`): results that do not depend on
    /// how each batch is split over processes, so `mpirun -np K` with --sync-bn trains as one
    /// process does, within 1e-5 over many steps. Slower: convolutions run image by image.
    public var reproducible = false

    public init(epochs: Int, batchSize: Int, learningRate: Float) {
        (self.epochs, self.batchSize, self.learningRate) = (epochs, batchSize, learningRate)
    }

    public var lrSchedule: LRSchedule {
        let shape: LRSchedule.Shape
        switch schedule {
        case "step": shape = .step(every: stepEvery, gamma: gamma)
        case "multistep": shape = .multiStep(milestones: milestones, gamma: gamma)
        case "constant": shape = .constant
        default: shape = .cosine(epochs: epochs, minimum: 0)
        }
        return LRSchedule(base: learningRate, shape: shape, warmupEpochs: warmupEpochs)
    }
}

/// Loss and accuracy over a dataset.
public struct Evaluation: Sendable {
    public var loss: Double
    public var top1: Double
    public var top5: Double
    public var count: Int
    /// Per class: (correct, total).
    public var perClass: [(correct: Int, total: Int)]
}

/// Runs `model` in evaluation mode over every batch of `loader` (epoch 0), through an
/// `InferenceEngine` (BatchNorm folding, ReLU fusion) unless `fused` is false.
public func evaluate(_ model: Module, _ loader: DataLoader, classes: Int, fused: Bool = true) throws -> Evaluation {
    model.eval()
    let engine = fused ? InferenceEngine(model) : nil
    var lossSum = 0.0, c1 = 0, c5 = 0, n = 0
    var perClass = [(correct: Int, total: Int)](repeating: (0, 0), count: classes)
    let stream = loader.batches(epoch: 0)
    while let batch = try stream.next() {
        let logits = withoutGradients { engine?(batch.images) ?? model(batch.images) }
        let loss = withoutGradients { crossEntropy(logits: logits, targets: batch.labels) }
        lossSum += Double(loss.item) * Double(batch.labels.count)
        let k = logits.shape[1], s = logits.scalars
        for (i, label) in batch.labels.enumerated() {
            let row = s[(i * k)..<((i + 1) * k)]
            let target = row[row.startIndex + label]
            let rank = row.filter { $0 > target }.count
            if rank == 0 { c1 += 1; perClass[label].correct += 1 }
            if rank < 5 { c5 += 1 }
            perClass[label].total += 1
        }
        n += batch.labels.count
    }
    let d = Double(max(n, 1))
    return Evaluation(loss: lossSum / d, top1: Double(c1) / d, top5: Double(c5) / d, count: n, perClass: perClass)
}

/// Set by SIGINT; the trainer checkpoints and stops at the next step boundary.
nonisolated(unsafe) private var interruptRequested: sig_atomic_t = 0

/// Raised when a run stops on SIGINT after writing its checkpoint (the CLI exits with 130).
public struct TrainingInterrupted: Error, CustomStringConvertible {
    public let checkpoint: String
    public var description: String { "interrupted; checkpoint written to \(checkpoint) (resume with --resume)" }
}

public final class Trainer {
    public let model: Module
    public let modelName: String
    public let options: TrainingOptions
    public let train: DataLoader
    public let validation: DataLoader?
    public let classes: Int
    public let directory: URL
    /// Extra metadata stored in every checkpoint (preprocessing, labels, …).
    public var metadata: [String: String] = [:]
    /// Progress lines (stderr by default).
    public var log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
    /// Stop after this many optimizer steps in total (tests simulate a crash with it).
    public var stopAfterSteps: Int?
    /// Data-parallel training over several processes (nil: this process alone); `train` must
    /// load this rank's shard (`DataLoader(…shard: parallel.shard)`). Rank 0 alone writes
    /// checkpoints, metrics and progress; every rank resumes from the same `last.safetensors`.
    public var parallel: DataParallel?
    var isRoot: Bool { parallel?.isRoot ?? true }

    let sgd: SGD
    var epoch = 0, step = 0, globalStep = 0
    var best = -1.0
    var sums = RunningSums()

    struct RunningSums: Codable {
        var loss = 0.0, correct = 0, seen = 0, steps = 0
    }

    public init(model: Module, name: String, options: TrainingOptions, train: DataLoader, validation: DataLoader?,
                classes: Int, directory: URL) {
        (self.model, self.modelName, self.options, self.train, self.validation) = (model, name, options, train, validation)
        (self.classes, self.directory) = (classes, directory)
        sgd = SGD(model, learningRate: options.learningRate, momentum: options.momentum, nesterov: options.nesterov,
                  weightDecay: options.weightDecay, decayNormAndBias: options.decayNormAndBias)
    }

    public var lastCheckpoint: URL { directory.appendingPathComponent("last.safetensors") }
    public var bestCheckpoint: URL { directory.appendingPathComponent("best.safetensors") }
    public var metricsFile: URL { directory.appendingPathComponent("metrics.jsonl") }

    // MARK: checkpoints

    func checkpoint(to url: URL, includeTrainingState: Bool) throws {
        var state = model.stateDict()
        var meta = metadata
        meta["model"] = modelName
        meta["format"] = "pt"
        if includeTrainingState {
            for (k, t) in sgd.buffers.sorted(by: { $0.key < $1.key }) { state["optimizer.momentum.\(k)"] = t }
            meta["train.epoch"] = "\(epoch)"
            meta["train.step"] = "\(step)"
            meta["train.global_step"] = "\(globalStep)"
            meta["train.best_top1"] = "\(best)"
            // Keys sorted: the same state gives the same bytes (Swift's key order varies by process).
            let json = JSONEncoder()
            json.outputFormatting = [.sortedKeys]
            meta["train.options"] = String(decoding: try json.encode(options), as: UTF8.self)
            meta["train.sums"] = String(decoding: try json.encode(sums), as: UTF8.self)
            var rng: [String: [String]] = [:]
            for (path, d) in dropoutLayers() { rng[path] = d.generatorState.map(String.init) }
            meta["train.rng"] = String(decoding: try json.encode(rng), as: UTF8.self)
            if let parallel { meta["train.processes"] = "\(parallel.size)\(parallel.syncBatchNorm ? ", sync-bn" : "")" }
        }
        state.metadata = meta
        try SafeTensors.write(state, to: url)
    }

    func dropoutLayers() -> [(String, Dropout)] {
        var out: [(String, Dropout)] = []
        func walk(_ m: Module, _ path: String) {
            if let d = m as? Dropout { out.append((path, d)) }
            for (k, c) in m.children { walk(c, path.isEmpty ? k : path + "." + k) }
        }
        walk(model, "")
        return out
    }

    /// Restores weights, optimizer, counters and generators from `last.safetensors`.
    public func resume() throws {
        let file = lastCheckpoint.path
        let state = try SafeTensors.read(lastCheckpoint)
        let m = state.metadata
        guard let e = m["train.epoch"].flatMap(Int.init), let s = m["train.step"].flatMap(Int.init),
              let g = m["train.global_step"].flatMap(Int.init) else {
            throw CheckpointError(file: file, "has no training state (train.epoch/step metadata); it is a weights file, not a checkpoint")
        }
        if let saved = m["train.options"], let o = try? JSONDecoder().decode(TrainingOptions.self, from: Data(saved.utf8)), o != options {
            log("note: resuming with options that differ from the checkpoint's")
        }
        if let savedModel = m["model"], savedModel != modelName {
            throw CheckpointError(file: file, "was written for model '\(savedModel)', not '\(modelName)'")
        }
        try model.load(state, strict: true, file: file)
        var buffers: [String: Tensor] = [:]
        for (k, t) in state.entries where k.hasPrefix("optimizer.momentum.") { buffers[String(k.dropFirst(19))] = t }
        try sgd.restore(buffers: buffers)
        (epoch, step, globalStep) = (e, s, g)
        best = m["train.best_top1"].flatMap(Double.init) ?? -1
        sums = m["train.sums"].flatMap { try? JSONDecoder().decode(RunningSums.self, from: Data($0.utf8)) } ?? RunningSums()
        if let r = m["train.rng"], let rng = try? JSONDecoder().decode([String: [String]].self, from: Data(r.utf8)) {
            for (path, d) in dropoutLayers() {
                if let words = rng[path]?.compactMap(UInt64.init), words.count == 4 { d.generatorState = words }
            }
        }
        // Metrics of epochs that will be redone are dropped.
        if isRoot, let text = try? String(contentsOf: metricsFile, encoding: .utf8) {
            let kept = text.split(separator: "\n").filter { line in
                guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let ep = obj["epoch"] as? Int else { return false }
                return ep < epoch + 1
            }
            try AtomicFile.write(Array((kept.map { $0 + "\n" }.joined()).utf8), to: metricsFile)
        }
        log("resumed from \(file): epoch \(epoch + 1), step \(step) of \(train.batchesPerEpoch)")
    }

    // MARK: the loop

    /// Trains from the current state to `options.epochs`. Throws `TrainingInterrupted` on SIGINT
    /// (after checkpointing) and `TrainingError` on a non-finite loss (the last checkpoint is kept).
    public func run() throws {
        try withBatchInvariantReductions(options.reproducible) { try loop() }
    }

    private func loop() throws {
        if isRoot { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) }
        setConvolutionSelection(.deterministic)
        if options.reproducible && parallel == nil {
            // The phased batch norm (per-image float64 sums) that data-parallel ranks run, with
            // nothing to combine.
            model.visit { ($0 as? BatchNorm2d)?.statisticsReducer = { _ in } }
        }
        defer { if options.reproducible && parallel == nil { model.visit { ($0 as? BatchNorm2d)?.statisticsReducer = nil } } }
        interruptRequested = 0
        let previous = signal(SIGINT) { _ in interruptRequested = 1 }
        // Open MPI's mpirun forwards SIGUSR1 to every rank (and kills the job on SIGINT): the
        // way to stop a distributed run with a checkpoint.
        let previousUSR1 = parallel != nil ? signal(SIGUSR1) { _ in interruptRequested = 1 } : nil
        defer { if parallel != nil { signal(SIGUSR1, previousUSR1) } }
        // A parent may have started us with SIGINT blocked (the mask survives exec): unblock it.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        defer { signal(SIGINT, previous) }
        if epoch == 0 && step == 0 && globalStep == 0 && isRoot {
            try? FileManager.default.removeItem(at: metricsFile)  // a fresh run starts a fresh log
        }
        let schedule = options.lrSchedule
        let perEpoch = train.batchesPerEpoch
        guard perEpoch > 0 else { throw TrainingError("\(train.dataset.name): fewer samples than one batch of \(options.batchSize)") }
        parallel?.prepare(model)
        let interactive = isatty(2) != 0 && isRoot
        let started = Date()
        var imagesThisRun = 0
        while epoch < options.epochs {
            model.train()
            if options.freezeBNEpochs > 0 && epoch >= options.epochs - options.freezeBNEpochs {
                freezeBatchNorm(model)
            }
            parallel?.broadcastBuffers(model)
            let stream = train.batches(epoch: epoch, startingAt: step)
            defer { stream.cancel() }
            while let batch = try stream.next() {
                let lr = schedule.rate(at: Double(epoch) + Double(step) / Double(perEpoch))
                sgd.learningRate = lr
                var logits = Tensor(0)
                // A rank's loss is its share of the global batch's mean (see DataParallel).
                let divisor = parallel == nil ? batch.labels.count : train.globalBatchCount(index: step)
                func objective() -> Tensor {
                    logits = model(batch.images)
                    return crossEntropy(logits: logits, targets: batch.labels, labelSmoothing: options.labelSmoothing, divisor: divisor)
                }
                let (loss, grads) = parallel?.valueAndGradient(of: model, objective) ?? valueAndGradient(of: model, objective)
                var value = loss.item
                let predicted = logits.detached.argmax()
                // This step's loss sum, correct count and samples (over all ranks), and whether to stop.
                var stepLoss = Double(value) * Double(divisor)
                var stepCorrect = zip(predicted, batch.labels).filter { $0 == $1 }.count, stepSeen = batch.labels.count
                var stopNow = interruptRequested != 0
                if let parallel {
                    let r = parallel.group.allReduced([stepLoss, Double(stepCorrect), Double(stepSeen), stopNow ? 1 : 0])
                    (stepLoss, stepCorrect, stepSeen, stopNow) = (r[0], Int(r[1]), Int(r[2]), r[3] > 0)
                    value = Float(stepLoss / Double(stepSeen))
                }
                guard value.isFinite else {
                    let kept = FileManager.default.fileExists(atPath: lastCheckpoint.path)
                        ? "the last good checkpoint is kept at \(lastCheckpoint.path)" : "no checkpoint had been written yet"
                    throw TrainingError("loss is \(value.isNaN ? "NaN" : "infinite") at epoch \(epoch + 1), step \(step + 1) "
                                        + "(global step \(globalStep + 1)); stopped, \(kept)")
                }
                sgd.step(grads)
                sums.loss += stepLoss
                sums.correct += stepCorrect
                sums.seen += stepSeen
                sums.steps += 1
                step += 1
                globalStep += 1
                imagesThisRun += stepSeen
                let elapsed = Date().timeIntervalSince(started)
                let rate = Double(imagesThisRun) / max(elapsed, 1e-9)
                let remaining = Double((options.epochs - epoch) * perEpoch - step) * Double(options.batchSize) / max(rate, 1e-9)
                let line = String(format: "epoch %d/%d step %d/%d loss %.4f top-1 %.2f%% lr %.4g %.0f img/s ETA %@",
                                  epoch + 1, options.epochs, step, perEpoch, sums.loss / Double(sums.seen),
                                  100 * Double(sums.correct) / Double(sums.seen), lr, rate, formatDuration(remaining))
                if interactive {
                    FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
                } else if isRoot && step % max(perEpoch / 10, 1) == 0 {
                    log(line)
                }
                if stopNow || (parallel == nil && interruptRequested != 0) {
                    if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
                    if isRoot { try checkpoint(to: lastCheckpoint, includeTrainingState: true) }
                    throw TrainingInterrupted(checkpoint: lastCheckpoint.path)
                }
                if isRoot && options.checkpointEvery > 0 && step % options.checkpointEvery == 0 && step < perEpoch {
                    try checkpoint(to: lastCheckpoint, includeTrainingState: true)
                }
                if let stop = stopAfterSteps, globalStep >= stop { return }
            }
            if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
            try endEpoch(lr: schedule.rate(at: Double(epoch + 1) - 1e-9))
        }
    }

    private func endEpoch(lr: Float) throws {
        var record: [String: Any] = [
            "epoch": epoch + 1, "train_loss": sums.loss / Double(max(sums.seen, 1)),
            "train_top1": Double(sums.correct) / Double(max(sums.seen, 1)), "lr": Double(lr), "steps": globalStep,
        ]
        var top1 = Double(sums.correct) / Double(max(sums.seen, 1))
        if let validation {
            let e = try parallel?.evaluate(model, validation, classes: classes) ?? evaluate(model, validation, classes: classes)
            (record["val_loss"], record["val_top1"], record["val_top5"]) = (e.loss, e.top1, e.top5)
            top1 = e.top1
            log(String(format: "epoch %d/%d: train loss %.4f top-1 %.2f%% | val loss %.4f top-1 %.2f%% top-5 %.2f%%",
                       epoch + 1, options.epochs, record["train_loss"] as! Double, 100 * (record["train_top1"] as! Double),
                       e.loss, 100 * e.top1, 100 * e.top5))
        }
        if isRoot {
            let line = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
            if !FileManager.default.fileExists(atPath: metricsFile.path) {
                _ = FileManager.default.createFile(atPath: metricsFile.path, contents: nil)
            }
            let handle = try FileHandle(forWritingTo: metricsFile)
            handle.seekToEndOfFile()
            handle.write(line + Data("\n".utf8))
            try handle.synchronize()
            try handle.close()
        }
        if let parallel, !parallel.synchronizeReplicas(model, sgd) {
            log("warning: the replicas' weights differed at the end of epoch \(epoch + 1); rank 0's were sent to every rank")
        }
        epoch += 1
        step = 0
        sums = RunningSums()
        if top1 > best {
            best = top1
            if isRoot { try checkpoint(to: bestCheckpoint, includeTrainingState: false) }
        }
        if isRoot { try checkpoint(to: lastCheckpoint, includeTrainingState: true) }
    }
}

/// Puts every BatchNorm2d in evaluation mode (running statistics used and no longer updated).
func freezeBatchNorm(_ m: Module) {
    m.visit { ($0 as? BatchNorm2d)?.eval() }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
}
