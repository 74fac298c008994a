// Logit parity with timm: timm's own models (seresnet18, legacy_seresnet18, and the
// seresnext50_32x4d code path at reduced width) with every parameter and buffer randomised,
// on random inputs at 224×224 and 160×208 (Scripts/make_parity_fixtures.py documents the
// exact timm classes each follows). Weights and inputs are synthesised from their checkpoint
// keys on both sides (Synthetic), so only the logits are committed; loading them by key also
// proves our keys and shapes are timm's.

import Foundation
import Testing
import _TestSupport
@testable import Checkpoints
import Models
import NN
import TensorCore

@Suite("timm logit parity", .serialized)
struct ParityTests {
    static let fixture = try? Fixture("parity_timm")

    static func build(_ name: String) throws -> Module {
        if name == "seresnext_tiny" {
            return ResNet(ResNetSpec(block: .bottleneck, depths: [1, 1, 1, 1], layout: .timm, cardinality: 8, baseWidth: 4, se: .timm))
        }
        return try ModelRegistry.create(name)
    }

    /// Every key of the model, synthesised.
    static func synthesise(_ model: Module) -> StateDict {
        StateDict(model.stateDict().entries.map { ($0.key, Synthetic.tensor($0.key, $0.tensor.shape)) })
    }

    @Test(arguments: ["seresnet18", "legacy_seresnet18", "seresnext_tiny"])
    func logitsMatchTimm(_ name: String) throws {
        let fx = try #require(Self.fixture, "Tests/Fixtures/parity_timm.safetensors missing")
        let model = try Self.build(name)
        try model.load(Self.synthesise(model), strict: true)
        model.eval()
        for (h, w) in [(224, 224), (160, 208)] {
            let expected = try #require(fx.tensors["\(name).\(h)x\(w)"])
            let y = withoutGradients { model(Synthetic.tensor("input", [2, 3, h, w])) }
            #expect(y.shape == expected.shape)
            let scale = expected.scalars.map(abs).max()!
            let err = zip(y.scalars, expected.scalars).map { abs($0 - $1) }.max()!
            #expect(err <= 1e-4 * scale, "\(name) \(h)×\(w): max abs error \(err) vs largest logit \(scale)")
            for n in 0..<2 {
                let row = { (t: Tensor) in Array(t.scalars[(n * 1000)..<((n + 1) * 1000)]) }
                let top = { (r: [Float]) in r.indices.sorted { r[$0] > r[$1] }.prefix(5).map { $0 } }
                #expect(top(row(y)) == top(row(expected)), "\(name) \(h)×\(w) image \(n): top-5 order")
            }
        }
    }
}
