// Modules: objects (identity for optimizer state) holding parameters and buffers, each with the
// checkpoint key PyTorch would give it — the path of property names from the root, with arrays
// as numbered children (`layer1.0.se.fc1.weight`, `bn1.running_mean`).
//
// Keys are discovered by reflection over stored properties (Mirror), so a layer declares its
// parts once, as properties, and never lists them again. camelCase property names map to
// PyTorch's snake_case (`runningMean` → `running_mean`).

import TensorCore

/// A trainable tensor or a buffer (e.g. BatchNorm's running statistics), shared by reference.
public final class Parameter {
    public var value: Tensor
    /// Buffers are saved and loaded with the parameters but never trained.
    public let isBuffer: Bool

    public init(_ value: Tensor, isBuffer: Bool = false) {
        self.value = value
        self.isBuffer = isBuffer
    }

    public var shape: [Int] { value.shape }
}

/// The base of every layer and model.
open class Module {
    /// Training (batch statistics, dropout on) or evaluation mode. Set with `train()` / `eval()`.
    public private(set) var isTraining = true
    /// The checkpoint-key path from the root, once the root's `assignPaths()` has run.
    public internal(set) var path = ""

    public init() {}

    /// The forward pass. Subclasses override.
    open func callAsFunction(_ x: Tensor) -> Tensor {
        fatalError("\(type(of: self)) does not implement callAsFunction")
    }

    /// Containers whose children are not stored properties (e.g. `Sequential`) override this.
    open var childrenOverride: [(String, Module)]? { nil }

    /// The checkpoint key of the child stored in property `name` (already snake_cased). Layouts
    /// that name the same part differently override this (timm's `se` is the Caffe port's
    /// `se_module`); an empty string inlines the child's keys into this module's.
    open func keyName(forProperty name: String) -> String { name }

    /// Direct children in declaration order, with their key names ("" for an inlined child).
    public var children: [(String, Module)] {
        if let o = childrenOverride { return o }
        var out: [(String, Module)] = []
        for (label, value) in reflectedProperties() {
            let key = keyName(forProperty: label)
            if let m = value as? Module { out.append((key, m)) }
            else if let ms = value as? [Module] { out += ms.enumerated().map { ("\(key).\($0.offset)", $0.element) } }
        }
        return out
    }

    /// This module's own parameters and buffers (not its children's), with their key names.
    public var ownParameters: [(String, Parameter)] {
        reflectedProperties().compactMap { label, value in (value as? Parameter).map { (label, $0) } }
    }

    /// Every parameter and buffer of the tree, keyed as PyTorch's `state_dict()` (declaration order).
    public func namedParameters(includeBuffers: Bool = true) -> [(String, Parameter)] {
        var out = ownParameters.filter { includeBuffers || !$0.1.isBuffer }
        for (name, child) in children {
            let prefix = name.isEmpty ? "" : name + "."
            out += child.namedParameters(includeBuffers: includeBuffers).map { (prefix + $0.0, $0.1) }
        }
        return out
    }

    /// Trainable parameters only.
    public var trainableParameters: [(String, Parameter)] { namedParameters(includeBuffers: false) }

    /// Number of trainable scalars (buffers excluded, as the paper's parameter counts).
    public var parameterCount: Int { trainableParameters.reduce(0) { $0 + $1.1.value.count } }

    public func train() { setMode(true) }
    public func eval() { setMode(false) }

    private func setMode(_ training: Bool) { visit { $0.isTraining = training } }

    /// Calls `body` on this module, then on every descendant, depth first in declaration order.
    public func visit(_ body: (Module) -> Void) {
        body(self)
        for (_, c) in children { c.visit(body) }
    }

    private func reflectedProperties() -> [(String, Any)] {
        var out: [(String, Any)] = []
        var mirror: Mirror? = Mirror(reflecting: self)
        var chain: [Mirror] = []
        while let m = mirror { chain.append(m); mirror = m.superclassMirror }
        for m in chain.reversed() {
            for child in m.children {
                guard let label = child.label, !label.hasPrefix("_"), label != "path", label != "isTraining" else { continue }
                // Unwrap optionals (`let se: SqueezeExcitation?`).
                let value = child.value
                let inner = Mirror(reflecting: value)
                if inner.displayStyle == .optional {
                    guard let wrapped = inner.children.first?.value else { continue }
                    out.append((snakeCase(label), wrapped))
                } else {
                    out.append((snakeCase(label), value))
                }
            }
        }
        return out
    }
}

/// `runningMean` → `running_mean`; digits and lowercase pass through.
func snakeCase(_ s: String) -> String {
    var out = ""
    for ch in s {
        if ch.isUppercase { out += "_" + ch.lowercased() } else { out.append(ch) }
    }
    return out
}

/// Runs `f` on a fresh tape with every trainable parameter of `model` watched (and detached again
/// afterwards); returns the tape, the parameters, their watched values and the loss, which must
/// have one element (`op` names the caller in the error).
public func recordLoss(of model: Module, op: String, _ f: () -> Tensor)
    -> (tape: GradientTape, parameters: [(String, Parameter)], watched: [Tensor], loss: Tensor) {
    let tape = GradientTape()
    let params = model.trainableParameters
    var watched: [Tensor] = []
    for (_, p) in params {
        p.value = tape.watch(p.value)
        watched.append(p.value)
    }
    let loss = tape.record { f() }
    for (_, p) in params { p.value = p.value.detached }
    if loss.count != 1 { shapeFailure(op, "the loss must have one element, got shape \(loss.shape)") }
    return (tape, params, watched, loss)
}

/// Runs `f` recording gradients of every trainable parameter of `model`; returns the loss
/// (a one-element tensor) and the gradients keyed by parameter key.
public func valueAndGradient(of model: Module, _ f: () -> Tensor) -> (value: Tensor, gradients: [String: Tensor]) {
    let (tape, params, watched, loss) = recordLoss(of: model, op: "valueAndGradient", f)
    let grads = tape.gradients(of: loss, wrt: watched)
    var out: [String: Tensor] = [:]
    for ((key, _), g) in zip(params, grads) { out[key] = g }
    return (loss.detached, out)
}

/// Applies its children in order (keys `0`, `1`, … as `nn.Sequential`).
public final class Sequential: Module {
    public let layers: [Module]

    public init(_ layers: [Module]) {
        self.layers = layers
    }

    public override var childrenOverride: [(String, Module)]? { layers.enumerated().map { ("\($0.offset)", $0.element) } }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        layers.reduce(x) { $1($0) }
    }
}
