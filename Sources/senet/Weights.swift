// `senet forward`, `senet export`, `senet convert`: weights in and out.

import ArgumentParser
import Foundation
import SENet

/// Builds `name` and, when `weights` is given, loads it strictly. Without `numClasses` the class
/// count is read off the weights' classifier; with one that differs from the weights', the
/// classifier is re-initialised for fine-tuning and the rest loaded.
func buildModel(_ name: String, weights: String?, numClasses: Int?, inChannels: Int = 3, seed: UInt64 = 0) throws -> (Module, StateDict?) {
    var options = ModelOptions(numClasses: numClasses, inChannels: inChannels, seed: seed)
    var model = try ModelRegistry.create(name, options)
    guard let weights else { return (model, nil) }
    let state = try SafeTensors.read(URL(fileURLWithPath: weights))
    if numClasses == nil, let key = model.classifierKeys.first(where: { $0.hasSuffix("weight") }),
       let t = state[key], let ours = model.stateDict()[key], t.rank >= 1, t.shape[0] != ours.shape[0] {
        options.numClasses = t.shape[0]
        model = try ModelRegistry.create(name, options)
    }
    let report = try model.load(state, strict: true, replacingClassifier: numClasses != nil, file: weights)
    if !report.reinitialised.isEmpty {
        FileHandle.standardError.write(Data("\(weights): \(report)\n".utf8))
    }
    return (model, state)
}

struct Forward: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a model in evaluation mode on the tensor `input` of a safetensors file; write the logits as `output`.",
        discussion: "The parity hook: compare with PyTorch on the same weights and input.")

    @Option(help: "Model name (see `senet models`).") var model: String
    @Option(help: "Weights (safetensors, timm key names).") var weights: String
    @Option(help: "Safetensors file with an N×C×H×W float tensor under the key `input`.") var input: String
    @Option(help: "Where to write the logits (key `output`).") var output: String
    @Option(help: "Number of classes (default: read off the weights).") var numClasses: Int?

    func run() throws {
        let inputs = try SafeTensors.read(URL(fileURLWithPath: input))
        guard let x = inputs["input"] else {
            throw CheckpointError(file: input, "has no tensor named 'input' (found: \(inputs.keys.prefix(5).joined(separator: ", ")))")
        }
        guard x.rank == 4 else { throw CheckpointError(file: input, tensor: "input", "shape \(x.shape) is not N×C×H×W") }
        try ModelRegistry.checkInputSize(model, height: x.shape[2], width: x.shape[3])
        let (net, _) = try buildModel(model, weights: weights, numClasses: numClasses, inChannels: x.shape[1])
        net.eval()
        let y = withoutGradients { net(x) }
        try SafeTensors.write(StateDict([("output", y)], metadata: ["model": model]), to: URL(fileURLWithPath: output))
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model's state dict (random-initialised, or the given weights) as safetensors.")

    @Option(help: "Model name (see `senet models`).") var model: String
    @Option(help: "Weights to load first (safetensors).") var weights: String?
    @Option(help: "Number of classes (a different count from the weights' re-initialises the classifier).") var numClasses: Int?
    @Option(help: "Input channels.") var inChannels = 3
    @Option(help: "Seed of the random initialisation.") var seed: UInt64 = 0
    @Flag(help: "Store float16 instead of float32.") var half = false
    @Option(help: "Output file.") var output: String

    func run() throws {
        let (net, state) = try buildModel(model, weights: weights, numClasses: numClasses, inChannels: inChannels, seed: seed)
        var meta = try state?.metadata ?? ModelRegistry.entry(model).pretrained.metadata
        meta.merge(["model": model, "format": "pt", "producer": "senet \(SENetVersion.string)"]) { $1 }
        try SafeTensors.write(net.stateDict(metadata: meta), to: URL(fileURLWithPath: output), as: half ? .float16 : .float32)
        FileHandle.standardError.write(Data("wrote \(output): \(net.namedParameters().count) tensors, \(net.parameterCount) parameters\n".utf8))
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a PyTorch checkpoint (.pth/.pth.tar, zip or legacy format) to safetensors, without Python.",
        discussion: """
            Reads the file with a restricted unpickler that executes nothing. Plain state dicts and ones \
            wrapped under state_dict/model/ema are accepted; `module.` prefixes are stripped. With --model, \
            the weights are checked against the model (every missing, unexpected or mis-shaped key listed) \
            and the model name and its preprocessing go into the file's metadata.
            """)

    @Argument(help: "PyTorch checkpoint.") var input: String
    @Argument(help: "Output safetensors file.") var output: String
    @Option(help: "Model the weights are for (checked strictly; recorded in the metadata).") var model: String?
    @Option(help: "Take the weights under this top-level key of the checkpoint.") var entry: String?
    @Flag(help: "Prefer EMA weights (state_dict_ema, model_ema, ema) when present.") var ema = false
    @Flag(help: "Store float16 instead of float32.") var half = false

    func run() throws {
        var state = try TorchCheckpoint.read(URL(fileURLWithPath: input), options: .init(preferEMA: ema, entry: entry))
        var meta = ["source": URL(fileURLWithPath: input).lastPathComponent, "source_format": state.metadata["format"] ?? "pytorch",
                    "format": "pt", "producer": "senet \(SENetVersion.string)"]
        if let model {
            let entry = try ModelRegistry.entry(model)
            let inChannels = state.entries.first { $0.tensor.rank == 4 }?.tensor.shape[1] ?? 3
            let head = state.entries.last { $0.tensor.rank == 2 }?.tensor.shape[0]
            let net = entry(ModelOptions(numClasses: head, inChannels: inChannels))
            try net.load(state, strict: true, file: input)
            meta.merge(entry.pretrained.metadata) { $1 }
            if let head, head != entry.defaultNumClasses || entry.pretrained.labels?.count != head { meta["labels"] = nil }
            meta["model"] = model
        }
        state.metadata = meta
        try SafeTensors.write(state, to: URL(fileURLWithPath: output), as: half ? .float16 : .float32)
        FileHandle.standardError.write(Data("wrote \(output): \(state.count) tensors from \(input)\n".utf8))
    }
}
