// A model's state dict (parameters and buffers under their checkpoint keys, as timm's
// `state_dict()`) and the strict walk that loads one.

import NN
import TensorCore

/// What a load did.
public struct LoadReport: Sendable, CustomStringConvertible {
    /// Keys copied into the model.
    public var loaded: [String] = []
    /// Model keys the state dict lacks.
    public var missing: [String] = []
    /// State-dict keys the model lacks (`num_batches_tracked` and `optimizer.*` are ignored, not counted).
    public var unexpected: [String] = []
    /// Keys present in both with different shapes: (key, model shape, state-dict shape).
    public var mismatched: [(key: String, model: [Int], file: [Int])] = []
    /// Classifier keys left at their fresh initialisation because the class count differs.
    public var reinitialised: [String] = []

    public var isComplete: Bool { missing.isEmpty && unexpected.isEmpty && mismatched.isEmpty }

    public var description: String {
        var parts: [String] = []
        func list(_ xs: [String]) -> String { xs.prefix(8).joined(separator: ", ") + (xs.count > 8 ? ", … (\(xs.count - 8) more)" : "") }
        if !missing.isEmpty { parts.append("\(missing.count) missing key\(missing.count == 1 ? "" : "s") (\(list(missing)))") }
        if !unexpected.isEmpty { parts.append("\(unexpected.count) unexpected key\(unexpected.count == 1 ? "" : "s") (\(list(unexpected)))") }
        if !mismatched.isEmpty {
            parts.append("\(mismatched.count) shape mismatch\(mismatched.count == 1 ? "" : "es") ("
                         + list(mismatched.map { "\($0.key): model \($0.model), file \($0.file)" }) + ")")
        }
        if !reinitialised.isEmpty { parts.append("classifier re-initialised (\(list(reinitialised)))") }
        return parts.isEmpty ? "\(loaded.count) tensors loaded" : parts.joined(separator: "; ")
    }
}

extension Module {
    /// Parameters and buffers under their checkpoint keys, in the model's order (timm's
    /// `state_dict()` without `num_batches_tracked`). The tensors share storage with the model
    /// until either side writes (copy-on-write).
    public func stateDict(metadata: [String: String] = [:]) -> StateDict {
        StateDict(namedParameters().map { ($0.0, $0.1.value) }, metadata: metadata)
    }

    /// The keys of the final classifier (the module owning the last trainable parameter).
    public var classifierKeys: [String] {
        let keys = trainableParameters.map(\.0)
        guard let last = keys.last else { return [] }
        let prefix = last.split(separator: ".").dropLast().joined(separator: ".")
        return keys.filter { $0.split(separator: ".").dropLast().joined(separator: ".") == prefix }
    }

    /// Copies `state` into the model's parameters and buffers.
    ///
    /// - strict: every missing key, unexpected key and shape mismatch is listed in one error and
    ///   nothing is changed. Non-strict: what fits is loaded and the rest reported.
    /// - replacingClassifier: classifier weights whose shapes differ from the model's (another
    ///   class count, for fine-tuning) keep the model's fresh initialisation instead of failing.
    /// `num_batches_tracked` entries and a training checkpoint's optimizer state (keys under
    /// `optimizer.`) are accepted and ignored. `file` labels errors.
    @discardableResult
    public func load(_ state: StateDict, strict: Bool = true, replacingClassifier: Bool = false,
                     file: String = "state dict") throws -> LoadReport {
        var report = LoadReport()
        let params = namedParameters()
        let head = replacingClassifier ? Set(classifierKeys) : []
        var modelKeys = Set<String>()
        var plan: [(Parameter, Tensor)] = []
        for (key, p) in params {
            modelKeys.insert(key)
            guard let t = state[key] else { report.missing.append(key); continue }
            if t.shape != p.shape {
                if head.contains(key) { report.reinitialised.append(key) } else { report.mismatched.append((key, p.shape, t.shape)) }
                continue
            }
            plan.append((p, t))
            report.loaded.append(key)
        }
        report.unexpected = state.keys.filter {
            !modelKeys.contains($0) && !$0.hasSuffix("num_batches_tracked") && !$0.hasPrefix("optimizer.")
        }
        if strict && !report.isComplete {
            throw CheckpointError(file: file, "does not fit the model: \(report)")
        }
        for (p, t) in plan { p.value = t }
        return report
    }
}
