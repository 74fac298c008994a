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
        let (net, _) = try buildModel(model, weights: weights, numClasses: numClasses, inChannels: inChannels, seed: seed)
        let meta = ["model": model, "format": "pt", "producer": "senet \(SENetVersion.string)"]
        try SafeTensors.write(net.stateDict(metadata: meta), to: URL(fileURLWithPath: output), as: half ? .float16 : .float32)
        FileHandle.standardError.write(Data("wrote \(output): \(net.namedParameters().count) tensors, \(net.parameterCount) parameters\n".utf8))
    }
}
