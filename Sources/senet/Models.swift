// `senet models` and `senet summary`: the registry, and a per-layer table of one model.

import ArgumentParser
import Foundation
import SENet

/// Runs one forward pass of `model` at batch 1 and returns its per-layer records.
/// With `capture`, the same pass also names the SE blocks.
func profile(_ model: Module, height: Int, width: Int, inChannels: Int, capture: ActivationCapture? = nil) -> LayerRecorder {
    model.eval()
    let recorder = LayerRecorder()
    let x = Tensor.zeros([1, inChannels, height, width])
    _ = withoutGradients {
        recorder.record(model) {
            if let capture { return capture.capture(model, inputHeight: height) { model(x) } }
            return model(x)
        }
    }
    return recorder
}

/// `--input-size` (none: the model's default; one value: square; two: H W), checked against the
/// model's minimum.
func resolveInputSize(_ values: [Int], model: String, entry: ModelEntry) throws -> (Int, Int) {
    let (h, w): (Int, Int)
    switch values.count {
    case 0: (h, w) = entry.defaultInputSize
    case 1: (h, w) = (values[0], values[0])
    case 2: (h, w) = (values[0], values[1])
    default: throw ValidationError("--input-size takes H and W")
    }
    try ModelRegistry.checkInputSize(model, height: h, width: w)
    return (h, w)
}

func formatCount(_ n: Int) -> String {
    let s = String(n)
    var out = ""
    for (i, ch) in s.reversed().enumerated() {
        if i > 0 && i % 3 == 0 { out.append(",") }
        out.append(ch)
    }
    return String(out.reversed())
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models", abstract: "List the model registry: name, family, parameters, MACs at the default input size.")

    @Flag(help: "Skip the MAC count (faster: no forward pass).") var noMacs = false

    func run() throws {
        print("name".padding(toLength: 28, withPad: " ", startingAt: 0) + "family".padding(toLength: 12, withPad: " ", startingAt: 0)
              + "params".leftPad(14) + "GMACs".leftPad(9) + "  input")
        for e in ModelRegistry.entries {
            let model = e()
            let (h, w) = e.defaultInputSize
            let macs = noMacs ? "-" : String(format: "%.3f", Double(profile(model, height: h, width: w, inChannels: 3).totalMACs) / 1e9)
            print(e.name.padding(toLength: 28, withPad: " ", startingAt: 0) + e.family.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + formatCount(model.parameterCount).leftPad(14) + macs.leftPad(9) + "  \(h)×\(w)")
        }
    }
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Per-layer table of a model (name, output shape, parameters, MACs) and totals.")

    @Argument(help: "Model name (see `senet models`).") var model: String
    @Option(help: "SE reduction ratio r in every SE block (paper Table 10).") var reduction: Int?
    @Option(help: "Comma-separated paper stages 2-5 that keep SE (Table 13), or 'none'.") var seStages: String?
    @Option(help: "SE placement: standard, pre, post, identity, after3x3 (Table 14/15).") var sePlacement: String?
    @Option(parsing: .upToNextOption, help: "Input height and width.") var inputSize: [Int] = []
    @Option(help: "Number of classes (default: the model's, 1000 for ImageNet models, 10 for CIFAR ones).") var numClasses: Int?
    @Option(help: "Input channels.") var inChannels = 3
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let entry = try ModelRegistry.entry(model)
        var options = ModelOptions(numClasses: numClasses, inChannels: inChannels, reduction: reduction)
        if let s = seStages {
            let stages = s == "none" ? [] : s.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard stages.allSatisfy({ $0 != nil && (2...5).contains($0!) }) else {
                throw ValidationError("--se-stages takes stage numbers 2-5 separated by commas (or 'none'), got '\(s)'")
            }
            options.seStages = Set(stages.map { $0! })
        }
        if let p = sePlacement {
            guard let placement = SEPlacement(rawValue: p) else {
                throw ValidationError("--se-placement must be one of \(SEPlacement.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            options.sePlacement = placement
        }
        if let r = reduction, r < 1 { throw ValidationError("--reduction must be at least 1") }
        let (h, w) = try resolveInputSize(inputSize, model: model, entry: entry)
        let net = entry(options)
        let capture = ActivationCapture(excitations: { _ in false })
        let rec = profile(net, height: h, width: w, inChannels: inChannels, capture: capture)
        let seNames = Dictionary(capture.seBlocks.map { ($0.path, $0.name) }, uniquingKeysWith: { a, _ in a })
        if json {
            let se: [[String: Any]] = capture.seBlocks.map { ["name": $0.name, "path": $0.path, "channels": $0.channels, "feature_size": [$0.height, $0.width]] }
            let obj: [String: Any] = ["model": model, "parameters": net.parameterCount, "macs": rec.totalMACs,
                                      "input_size": [h, w], "num_classes": numClasses ?? entry.defaultNumClasses, "layers": rec.records.count,
                                      "se_blocks": se]
            let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("layer".padding(toLength: 34, withPad: " ", startingAt: 0) + "kind".padding(toLength: 12, withPad: " ", startingAt: 0)
              + "output".padding(toLength: 20, withPad: " ", startingAt: 0) + "params".leftPad(12) + "MACs".leftPad(16))
        var lastSE = ""
        for r in rec.records {
            // An SE block's name, once, before its first layer (`layer1.0.se` before `layer1.0.se.fc1`).
            if let se = seNames.first(where: { r.path.hasPrefix($0.key + ".") }), se.key != lastSE {
                print("  \(se.value)  (\(se.key))")
                lastSE = se.key
            }
            let shape = r.outputShape.dropFirst().map(String.init).joined(separator: "×")
            print(r.path.padding(toLength: 34, withPad: " ", startingAt: 0) + r.kind.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + shape.padding(toLength: 20, withPad: " ", startingAt: 0) + formatCount(r.parameters).leftPad(12)
                  + formatCount(r.macs).leftPad(16))
        }
        print("total: \(formatCount(net.parameterCount)) parameters, \(formatCount(rec.totalMACs)) MACs "
              + String(format: "(%.3f GMACs)", Double(rec.totalMACs) / 1e9) + " at \(h)×\(w)")
        if capture.seBlocks.isEmpty {
            print("SE blocks: none")
        } else {
            print("SE blocks (\(capture.seBlocks.count), paper names): "
                  + capture.seBlocks.map { "\($0.name) \($0.channels)ch \($0.height)×\($0.width)" }.joined(separator: ", "))
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
