// Activation capture (NN) and the paper's SE block names: an SE block's captured excitation
// against the hand-computed s = σ(W2·relu(W1·z + b1) + b2); SE-ResNet-50's 16 blocks named as the
// paper's Fig. 6 (SE_2_1 … SE_5_3) and its default figure blocks; names derived from the
// downsampling factor for models that do not name their stages; layer outputs by path.

import Foundation
import Testing
import _TestSupport
@testable import Training
import Checkpoints
import Models
import NN
import TensorCore

@Suite("Activation capture and SE names")
struct CaptureTests {
    @Test func excitationOfAnSEBlockByHand() throws {
        var g = SeededGenerator(seed: 1)
        let se = SqueezeExcitation(channels: 4, config: SEConfig(reduction: 2), generator: &g)
        let w1: [Float] = [0.5, -1, 0.25, 2, -0.5, 1, 1.5, -0.25], b1: [Float] = [0.1, -0.2]
        let w2: [Float] = [1, -1, 0.5, 2, -1.5, 0.25, 0, 1], b2: [Float] = [0, 0.1, -0.1, 0.2]
        se.fc1.weight.value = Tensor(shape: [2, 4, 1, 1], scalars: w1)
        se.fc1.bias!.value = Tensor(shape: [2], scalars: b1)
        se.fc2.weight.value = Tensor(shape: [4, 2, 1, 1], scalars: w2)
        se.fc2.bias!.value = Tensor(shape: [4], scalars: b2)
        // Image n, channel c: values whose mean is known (c + n/2 ± 1 alternating over the 3×3 map).
        var x = [Float]()
        for n in 0..<2 { for c in 0..<4 { for i in 0..<9 { x.append(Float(c) * 0.3 + Float(n) * 0.5 - 1 + (i == 8 ? 0 : (i % 2 == 0 ? 0.5 : -0.5))) } } }
        let input = Tensor(shape: [2, 4, 3, 3], scalars: x)
        let capture = ActivationCapture()
        let y = withoutGradients { capture.capture(se, inputHeight: 3) { se(input) } }
        let s = try #require(capture.excitation("SE_1_1"), "captured: \(capture.excitations.map(\.name))")
        #expect(s.shape == [2, 4])
        var expected: [Float] = []
        for n in 0..<2 {
            let z = (0..<4).map { c in (0..<9).map { Double(x[(n * 4 + c) * 9 + $0]) }.reduce(0, +) / 9 }
            let h = (0..<2).map { j in max(0, (0..<4).map { Double(w1[j * 4 + $0]) * z[$0] }.reduce(0, +) + Double(b1[j])) }
            for c in 0..<4 { expected.append(Float(1 / (1 + exp(-((0..<2).map { Double(w2[c * 2 + $0]) * h[$0] }.reduce(0, +) + Double(b2[c])))))) }
        }
        #expect(expectClose(s.scalars, expected, rtol: 1e-6, atol: 1e-7, "excitation"))
        // The block's output is the input scaled by s, and capturing changed nothing.
        let direct = withoutGradients { se(input) }
        #expect(y.scalars == direct.scalars)
        #expect(expectClose(y.scalars, (0..<72).map { x[$0] * expected[$0 / 9] }, rtol: 1e-6, atol: 1e-7, "scaled"))
    }

    @Test func seResNet50BlocksAreNamedAsThePaper() throws {
        let model = try ModelRegistry.create("seresnet50", ModelOptions(numClasses: 10))
        let blocks = model.seBlocks(height: 64, width: 64, inChannels: 3)
        let expected = (1...3).map { "SE_2_\($0)" } + (1...4).map { "SE_3_\($0)" } + (1...6).map { "SE_4_\($0)" } + (1...3).map { "SE_5_\($0)" }
        #expect(blocks.map(\.name) == expected)
        #expect(blocks.first?.path == "layer1.0.se" && blocks.last?.path == "layer4.2.se")
        #expect(blocks.map(\.channels) == [Int](repeating: 256, count: 3) + [Int](repeating: 512, count: 4)
                + [Int](repeating: 1024, count: 6) + [Int](repeating: 2048, count: 3))
        // The blocks of the paper's Fig. 6.
        #expect(defaultExcitationBlocks(blocks.map(\.name)) == ["SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1", "SE_5_2", "SE_5_3"])
        // The Caffe layout names them the same way.
        let legacy = try ModelRegistry.create("legacy_seresnet50", ModelOptions(numClasses: 10))
        #expect(legacy.seBlocks(height: 64, width: 64, inChannels: 3).map(\.name) == expected)
    }

    @Test func namesFromTheDownsamplingFactor() throws {
        // SE-BN-Inception does not name its stages: the capture numbers them by feature size.
        let model = try ModelRegistry.create("se_bninception", ModelOptions(numClasses: 10))
        let blocks = model.seBlocks(height: 224, width: 224, inChannels: 3)
        #expect(blocks.count == 10)
        var perStage: [Int: Int] = [:]
        for b in blocks {
            let stage = Int(log2(224 / Double(b.height)).rounded())
            perStage[stage, default: 0] += 1
            #expect(b.name == "SE_\(stage)_\(perStage[stage]!)", "\(b.path) at \(b.height)×\(b.width) named \(b.name)")
        }
        #expect(Set(perStage.keys) == [3, 4, 5])
        #expect(try ModelRegistry.create("resnet50", ModelOptions(numClasses: 10)).seBlocks(height: 64, width: 64, inChannels: 3).isEmpty)
    }

    @Test func layerOutputsByPath() throws {
        let model = try ModelRegistry.create("seresnet20", ModelOptions(numClasses: 10))
        model.eval()
        var g = SeededGenerator(seed: 3)
        let x = Tensor.randomNormal([2, 3, 32, 32], generator: &g)
        let capture = ActivationCapture(excitations: { $0 == "SE_3_2" }, outputs: { path, _ in path == "conv1" || path == "layer2.1.se" })
        _ = withoutGradients { capture.capture(model, inputHeight: 32) { model(x) } }
        #expect(capture.excitations.map(\.name) == ["SE_3_2"])
        #expect(capture.outputs.map(\.path) == ["conv1", "layer2.1.se"])
        let conv1 = try #require(model.stateDict()["conv1.weight"])
        let direct = withoutGradients { conv2d(x, weight: conv1, bias: nil, stride: (1, 1), padding: (1, 1), dilation: (1, 1), groups: 1) }
        #expect(capture.outputs[0].value.scalars == direct.scalars)
        #expect(capture.outputs[1].kind == "SE" && capture.outputs[1].value.shape == [2, 32, 16, 16])
    }
}
