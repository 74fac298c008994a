// Training parity with PyTorch (Scripts/make_training_fixtures.py): one SGD step (momentum 0.9,
// weight decay 1e-4, BN in training mode) and a 20-step loss sequence of timm's SE-ResNet code path
// with one block per stage, from identical synthesised weights; and the schedules by hand.

import Foundation
import Testing
import _TestSupport
@testable import Training
import Checkpoints
import Models
import NN
import TensorCore

@Suite("SGD parity with PyTorch", .serialized)
struct SGDParityTests {
    static func model() throws -> Module {
        var spec = ResNetSpec(block: .basic, depths: [1, 1, 1, 1], layout: .timm, se: .timm)
        spec.numClasses = 10
        let m = ResNet(spec)
        try m.load(StateDict(m.stateDict().entries.map { ($0.key, Synthetic.tensor($0.key, $0.tensor.shape)) }))
        m.train()
        return m
    }

    static func sample(_ t: Tensor) -> [Float] {
        let s = t.scalars, n = s.count, m = min(n, 64)
        return (0..<m).map { s[($0 * n) / m] }
    }

    @Test func oneStepAndTwentyLosses() throws {
        let fx = try Fixture("training_sgd")
        let net = try Self.model()
        let sgd = SGD(net, learningRate: 0.001, momentum: 0.9, weightDecay: 1e-4)
        let before = net.stateDict()
        var losses: [Float] = []
        for step in 0..<20 {
            let x = Synthetic.tensor("input\(step)", [8, 3, 64, 64])
            let targets = (0..<8).map { ($0 + step) % 10 }
            let (loss, grads) = valueAndGradient(of: net) { crossEntropy(logits: net(x), targets: targets) }
            sgd.step(grads)
            losses.append(loss.item)
            guard step == 0 else { continue }
            var worstValue: Float = 0, worstDelta: Float = 0, worstKey = ""
            for (key, t) in net.stateDict().entries {
                let expected = try #require(fx.tensors["step1.\(key)"], "\(key)")
                let ours = Self.sample(t)
                // Relative to the tensor's largest element (as for logits): a near-zero element of
                // a BN bias would otherwise turn rounding into a large "relative" error.
                let scale = max(expected.scalars.map(abs).max()!, 1e-12)
                let err = zip(ours, expected.scalars).map { abs($0 - $1) }.max()! / scale
                if err > worstValue { (worstValue, worstKey) = (err, key) }
                if let d = fx.tensors["delta1.\(key)"] {
                    let delta = zip(ours, Self.sample(before[key]!)).map { Double($0) - Double($1) }
                    // Float32 parameters resolve an update only to their ulp: allow two of them.
                    let scale = d.scalars.map { abs(Double($0)) }.max()!
                    let ulp = 2 * Double(ours.map { abs($0) }.max()!) * 0x1p-23
                    let err = zip(delta, d.scalars).map { max(abs($0 - Double($1)) - ulp, 0) }.max()!
                    worstDelta = max(worstDelta, Float(err / max(scale, 1e-12)))
                }
            }
            // Parameters and running statistics after one step within 1e-4 relative; the update
            // itself (−lr·(∇ + λp)) within 1e-3 of its largest element, tensor by tensor.
            #expect(worstValue <= 1e-4, "parameters/buffers after one step: worst relative error \(worstValue) in \(worstKey)")
            #expect(worstDelta <= 1e-3, "update after one step: worst error \(worstDelta) of the tensor's largest update")
        }
        let expected = try #require(fx.tensors["loss"]).scalars
        let worst = zip(losses, expected).map { abs($0 - $1) / $1 }.max()!
        #expect(worst <= 1e-3, "losses \(losses) vs PyTorch \(expected): worst relative error \(worst)")
    }
}

@Suite("Learning-rate schedules and SGD by hand")
struct ScheduleTests {
    @Test func paperStepSchedule() {
        let s = LRSchedule(base: 0.6, shape: .step(every: 30, gamma: 0.1))
        #expect(s.rate(at: 0) == 0.6 && s.rate(at: 29.99) == 0.6)
        #expect(abs(s.rate(at: 30) - 0.06) < 1e-7 && abs(s.rate(at: 95) - 0.0006) < 1e-9)
    }

    @Test func multiStepCosineAndWarmup() {
        let m = LRSchedule(base: 0.1, shape: .multiStep(milestones: [50, 75], gamma: 0.1))
        #expect(m.rate(at: 49.9) == 0.1 && abs(m.rate(at: 50) - 0.01) < 1e-8 && abs(m.rate(at: 80) - 0.001) < 1e-9)
        let c = LRSchedule(base: 0.2, shape: .cosine(epochs: 10, minimum: 0), warmupEpochs: 1)
        #expect(abs(c.rate(at: 0.5) - 0.5 * 0.2 * 0.5 * (1 + cos(Double.pi * 0.05)).float) < 1e-7)
        #expect(abs(c.rate(at: 5) - 0.1) < 1e-7 && c.rate(at: 10) == 0)
    }

    /// Hand-computed: p = 1, ∇ = 0.5, lr 0.1, μ 0.9, λ 0.01 → d = 0.51; step 1: b = 0.51, p = 0.949;
    /// step 2 (∇ = 0.5): d = 0.50949, b = 0.9·0.51 + 0.50949 = 0.96849, p = 0.949 − 0.096849 = 0.852151.
    /// Nesterov step 1: p = 1 − 0.1·(0.51 + 0.9·0.51) = 0.9031. No decay on 1-D parameters when asked.
    @Test func updatesByHand() throws {
        final class One: Module {
            let w = Parameter(Tensor(shape: [1, 1], scalars: [1]))
            let b = Parameter(Tensor(shape: [1], scalars: [1]))
        }
        let m = One()
        let sgd = SGD(m, learningRate: 0.1, momentum: 0.9, weightDecay: 0.01, decayNormAndBias: false)
        let g = ["w": Tensor(shape: [1, 1], scalars: [0.5]), "b": Tensor(shape: [1], scalars: [0.5])]
        sgd.step(g)
        #expect(abs(m.w.value.scalars[0] - 0.949) < 1e-6 && abs(m.b.value.scalars[0] - 0.95) < 1e-6)
        sgd.step(g)
        #expect(abs(m.w.value.scalars[0] - 0.852151) < 1e-6)
        let n = One()
        SGD(n, learningRate: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01).step(g)
        #expect(abs(n.w.value.scalars[0] - 0.9031) < 1e-6)
    }
}

extension Double { var float: Float { Float(self) } }
