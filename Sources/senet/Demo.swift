// `senet demo`: one training step (forward, backward) of a small SE-ResNet on seeded random
// input, printing the loss, gradient norms and timings. A smoke test of the whole stack.

import ArgumentParser
import Foundation
import SENet

/// A CIFAR-style basic residual block with an SE block on the residual branch, before the
/// identity is added (paper Fig. 3).
final class DemoBlock: Module {
    let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
    let se: SqueezeExcitation
    let downsample: Sequential?

    init(_ cin: Int, _ cout: Int, stride: Int, generator g: inout SeededGenerator) {
        conv1 = Conv2d(cin, cout, kernel: 3, stride: stride, padding: 1, bias: false, generator: &g)
        bn1 = BatchNorm2d(cout)
        conv2 = Conv2d(cout, cout, kernel: 3, padding: 1, bias: false, generator: &g)
        bn2 = BatchNorm2d(cout)
        se = SqueezeExcitation(channels: cout, reduction: 4, generator: &g)
        downsample = (stride != 1 || cin != cout)
            ? Sequential([Conv2d(cin, cout, kernel: 1, stride: stride, bias: false, generator: &g), BatchNorm2d(cout)]) : nil
    }

    override func callAsFunction(_ x: Tensor) -> Tensor {
        let branch = se(bn2(conv2(relu(bn1(conv1(x))))))
        return relu(branch + (downsample?(x) ?? x))
    }
}

final class DemoNet: Module {
    let conv1: Conv2d, bn1: BatchNorm2d
    let layers: [Module]
    let fc: Linear

    init(classes: Int, generator g: inout SeededGenerator) {
        conv1 = Conv2d(3, 16, kernel: 3, padding: 1, bias: false, generator: &g)
        bn1 = BatchNorm2d(16)
        layers = [DemoBlock(16, 16, stride: 1, generator: &g), DemoBlock(16, 32, stride: 2, generator: &g),
                  DemoBlock(32, 64, stride: 2, generator: &g)]
        fc = Linear(64, classes, generator: &g)
    }

    override func callAsFunction(_ x: Tensor) -> Tensor {
        var h = relu(bn1(conv1(x)))
        for l in layers { h = l(h) }
        return fc(globalAvgPool2d(h).flattened())
    }
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one forward/backward pass of a small SE-ResNet on random input.")

    @Option(name: .long, help: "Batch size.") var batchSize = 8
    @Option(name: .long, help: "Random seed.") var seed: UInt64 = 0

    func run() throws {
        var g = SeededGenerator(seed: seed)
        let model = DemoNet(classes: 10, generator: &g)
        let x = Tensor.randomNormal([batchSize, 3, 32, 32], generator: &g)
        let targets = (0..<batchSize).map { $0 % 10 }
        print("model: SE-ResNet (3 blocks, widths 16/32/64, SE r=4), \(model.parameterCount) parameters, "
              + "\(model.namedParameters().count) state-dict keys")
        let t0 = Date()
        let (loss, grads) = valueAndGradient(of: model) { crossEntropy(logits: model(x), targets: targets) }
        let dt = Date().timeIntervalSince(t0)
        print(String(format: "loss %.4f (ln 10 = %.4f for an untrained 10-class model)", loss.item, log(10.0)))
        let norm = grads.values.reduce(0.0) { $0 + $1.scalars.reduce(0.0) { $0 + Double($1 * $1) } }.squareRoot()
        print(String(format: "gradient norm %.4f over %d parameters; forward+backward %.1f ms", norm, grads.count, dt * 1000))
        model.eval()
        let logits = withoutGradients { model(x) }
        print("eval-mode predictions: \(logits.argmax())")
    }
}
