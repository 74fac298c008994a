// safetensors read/write, state dicts, PyTorch checkpoint conversion: the types every reader and
// writer of this module shares.

import Foundation
import TensorCore

/// An ordered set of named float32 tensors (a model's state dict, or the contents of a weights
/// file) with string metadata (safetensors `__metadata__`). Keys are unique; order is file order.
public struct StateDict: Sendable {
    public private(set) var keys: [String] = []
    private var values: [String: Tensor] = [:]
    public var metadata: [String: String]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    public init(_ entries: [(String, Tensor)], metadata: [String: String] = [:]) {
        self.metadata = metadata
        for (k, t) in entries { self[k] = t }
    }

    public var count: Int { keys.count }
    public var entries: [(key: String, tensor: Tensor)] { keys.map { ($0, values[$0]!) } }

    /// Setting a new key appends it; setting an existing key replaces its tensor in place;
    /// setting nil removes it.
    public subscript(key: String) -> Tensor? {
        get { values[key] }
        set {
            if let t = newValue {
                if values.updateValue(t, forKey: key) == nil { keys.append(key) }
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }
}

/// A checkpoint that cannot be read, written or loaded: names the file, the tensor (when one is
/// at fault) and the problem, in one line.
public struct CheckpointError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let tensor: String?
    public let problem: String

    public init(file: String, tensor: String? = nil, _ problem: String) {
        (self.file, self.tensor, self.problem) = (file, tensor, problem)
    }

    public var description: String {
        "\(file): " + (tensor.map { "tensor '\($0)': " } ?? "") + problem
    }
}
