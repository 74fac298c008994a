// Per-layer records of a forward pass (name, kind, output shape, parameters, MACs), for model
// summaries and complexity counts. Recording is scoped (a task-local recorder), so a model runs
// unchanged and pays one nil check per layer when nobody is recording.

import TensorCore

/// One layer's contribution to a forward pass.
public struct LayerRecord: Sendable {
    /// The layer's checkpoint-key path (`layer1.0.conv2`).
    public let path: String
    public let kind: String
    public let outputShape: [Int]
    /// Trainable scalars of this layer (counted once, however often it runs).
    public let parameters: Int
    /// Multiply-accumulates per input image (conv and linear layers; 0 elsewhere).
    public let macs: Int
}

/// Collects `LayerRecord`s while active.
public final class LayerRecorder: @unchecked Sendable {
    public private(set) var records: [LayerRecord] = []
    @TaskLocal static var current: LayerRecorder?

    public init() {}

    /// Runs `body` (typically a forward pass of `model`) and records every leaf layer it calls.
    public func record<R>(_ model: Module, _ body: () throws -> R) rethrows -> R {
        model.assignPaths()
        return try LayerRecorder.$current.withValue(self) { try body() }
    }

    static func note(_ m: Module, _ kind: String, _ y: Tensor, macsPerImage: Int) {
        ActivationCapture.noteOutput(m, kind, y)
        guard let r = current else { return }
        r.records.append(LayerRecord(path: m.path, kind: kind, outputShape: y.shape, parameters: m.parameterCount, macs: macsPerImage))
    }

    /// Total MACs per image.
    public var totalMACs: Int { records.reduce(0) { $0 + $1.macs } }
}

extension Module {
    /// Sets `path` on every module of the tree to its checkpoint-key prefix.
    public func assignPaths(_ prefix: String = "") {
        path = prefix
        for (name, child) in children {
            child.assignPaths(prefix.isEmpty ? name : (name.isEmpty ? prefix : "\(prefix).\(name)"))
        }
    }
}
