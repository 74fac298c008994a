// Activation capture: named intermediate tensors recorded during a forward pass, without changing
// the model. A capture is a scope (task-local, like `LayerRecorder`): every leaf layer and every
// SE block reports its output to the active capture, which keeps what its filter asks for. When
// no capture is active a layer pays one nil check.
//
// SE blocks are named as in the paper (§7.2, Fig. 6): `SE_<stage>_<block>`, stages numbered 2–5 as
// the paper numbers ResNet's (conv2_x … conv5_x), blocks from 1. Models that know their stages
// set `SqueezeExcitation.paperName`; for the others the capture derives the stage from the
// feature map's downsampling factor f = input height / feature height as round(log2 f), which is
// the paper's numbering for ImageNet networks (56² at 224² input is stage 2), and counts blocks
// per stage in call order.

import Foundation
import TensorCore

/// One recorded tensor.
public struct CapturedTensor: @unchecked Sendable {
    /// The paper's name for SE excitations (`SE_4_6`); the layer's key path otherwise.
    public let name: String
    /// The module's checkpoint-key path (`layer3.5.se`).
    public let path: String
    /// `"excitation"` for SE excitation vectors (N×C), else the layer's kind (`Conv2d`, `SE`, …).
    public let kind: String
    public let value: Tensor
}

/// Records SE excitations and (optionally) layer outputs while active.
public final class ActivationCapture: @unchecked Sendable {
    @TaskLocal static var current: ActivationCapture?

    /// Whether to keep the output of the layer with this path and kind.
    private let keepOutput: (_ path: String, _ kind: String) -> Bool
    /// Whether to keep the excitation of the SE block with this name.
    private let keepExcitation: (String) -> Bool
    public private(set) var excitations: [CapturedTensor] = []
    public private(set) var outputs: [CapturedTensor] = []
    /// Every SE block met during the last `capture`, in call order (kept or not): name, path,
    /// channels, feature height × width.
    public private(set) var seBlocks: [(name: String, path: String, channels: Int, height: Int, width: Int)] = []

    private var inputHeight = 0
    private var perStage: [Int: Int] = [:]

    /// `excitations`: which SE blocks to keep (all by default). `outputs`: which layer outputs to
    /// keep, by path and kind (none by default).
    public init(excitations: @escaping (String) -> Bool = { _ in true },
                outputs: @escaping (_ path: String, _ kind: String) -> Bool = { _, _ in false }) {
        keepExcitation = excitations
        keepOutput = outputs
    }

    /// Captures while `body` runs a forward pass of `model` on an input of height `inputHeight`.
    /// Earlier captures are cleared.
    public func capture<R>(_ model: Module, inputHeight: Int, _ body: () throws -> R) rethrows -> R {
        model.assignPaths()
        excitations = []
        outputs = []
        seBlocks = []
        perStage = [:]
        self.inputHeight = inputHeight
        return try ActivationCapture.$current.withValue(self) { try body() }
    }

    /// The captured excitations of block `name` (N×C), if any.
    public func excitation(_ name: String) -> Tensor? { excitations.first { $0.name == name }?.value }

    static func noteOutput(_ m: Module, _ kind: String, _ y: Tensor) {
        guard let c = current, c.keepOutput(m.path, kind) else { return }
        c.outputs.append(CapturedTensor(name: m.path, path: m.path, kind: kind, value: y.detached))
    }

    static func noteExcitation(_ se: SqueezeExcitation, input x: Tensor, excitation s: Tensor) {
        guard let c = current else { return }
        let (h, w) = (x.shape[2], x.shape[3])
        let name: String
        if let n = se.paperName {
            name = n
        } else {
            let factor = Double(max(c.inputHeight, 1)) / Double(max(h, 1))
            let stage = max(1, Int(log2(max(factor, 1)).rounded()))
            let block = (c.perStage[stage] ?? 0) + 1
            c.perStage[stage] = block
            name = "SE_\(stage)_\(block)"
        }
        c.seBlocks.append((name, se.path, x.shape[1], h, w))
        guard c.keepExcitation(name) else { return }
        let flat = s.detached.reshaped([s.shape[0], s.shape[1]])
        c.excitations.append(CapturedTensor(name: name, path: se.path, kind: "excitation", value: flat))
    }
}

extension Module {
    /// The SE blocks of this model as one forward pass at `height`×`width` meets them: paper name,
    /// key path, channels, feature size. Empty for a model without SE blocks.
    public func seBlocks(height: Int, width: Int, inChannels: Int) -> [(name: String, path: String, channels: Int, height: Int, width: Int)] {
        let wasTraining = isTraining
        eval()
        defer { if wasTraining { train() } }
        let capture = ActivationCapture(excitations: { _ in false })
        let x = Tensor.zeros([1, inChannels, height, width])
        _ = withoutGradients { capture.capture(self, inputHeight: height) { self(x) } }
        return capture.seBlocks
    }
}
