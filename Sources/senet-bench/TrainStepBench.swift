// `senet-bench step`: images/s of one training step (forward, backward) of a registry model.

import ArgumentParser
import Foundation
import SENet

struct StepBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "step",
        abstract: "Time forward+backward training steps of a model at a batch size and input size.")

    @Option(help: "Model name.") var model = "seresnet20"
    @Option(help: "Batch size.") var batchSize = 128
    @Option(help: "Input height and width.") var size = 28
    @Option(help: "Input channels.") var inChannels = 1
    @Option(help: "Timed steps (after one warm-up).") var steps = 5

    func run() throws {
        let net = try ModelRegistry.create(model, ModelOptions(inChannels: inChannels))
        net.train()
        var g = SeededGenerator(seed: 1)
        let x = Tensor.randomNormal([batchSize, inChannels, size, size], generator: &g)
        let targets = (0..<batchSize).map { $0 % 10 }
        var times: [Double] = []
        for i in 0...steps {
            let t0 = Date()
            _ = valueAndGradient(of: net) { crossEntropy(logits: net(x), targets: targets) }
            if i > 0 { times.append(Date().timeIntervalSince(t0)) }
        }
        times.sort()
        let median = times[times.count / 2]
        print(String(format: "%@ batch %d %dx%dx%d: median step %.1f ms, %.0f images/s", model, batchSize, inChannels, size, size,
                     median * 1000, Double(batchSize) / median))
    }
}
