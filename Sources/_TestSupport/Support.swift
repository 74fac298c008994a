// Test helpers: closeness checks that report the worst element, a finite-difference gradient
// checker, and the reader for the PyTorch fixtures in Tests/Fixtures (written by
// Scripts/make_fixtures.py).

import Foundation
import Testing
import TensorCore

/// The worst element of |actual − expected| measured against atol + rtol·|expected|.
public struct CloseReport: CustomStringConvertible {
    public let passed: Bool
    public let worstIndex: Int
    public let actual: Float
    public let expected: Float
    public let maxAbsError: Float
    public let maxRelError: Float

    public var description: String {
        "worst element #\(worstIndex): actual \(actual), expected \(expected); max abs error \(maxAbsError), max rel error \(maxRelError)"
    }
}

/// Compares element by element; NaN anywhere fails.
public func closeness(_ actual: [Float], _ expected: [Float], rtol: Float, atol: Float) -> CloseReport {
    precondition(actual.count == expected.count)
    var worst = 0, worstRatio: Float = -1, maxAbs: Float = 0, maxRel: Float = 0, passed = true
    for i in 0..<actual.count {
        let (a, e) = (actual[i], expected[i])
        let err = abs(a - e)
        let ratio = err.isNaN ? .infinity : err / (atol + rtol * abs(e))
        if ratio > 1 { passed = false }
        if ratio > worstRatio { worstRatio = ratio; worst = i }
        maxAbs = max(maxAbs, err.isNaN ? .infinity : err)
        if abs(e) > atol { maxRel = max(maxRel, err / abs(e)) }
    }
    return CloseReport(passed: passed, worstIndex: worst, actual: actual.isEmpty ? 0 : actual[worst],
                       expected: expected.isEmpty ? 0 : expected[worst], maxAbsError: maxAbs, maxRelError: maxRel)
}

/// Expects `actual` to equal `expected` in shape and, element-wise, within atol + rtol·|expected|.
/// A failure names the worst element.
@discardableResult
public func expectClose(_ actual: Tensor, _ expected: Tensor, rtol: Float = 1e-5, atol: Float = 1e-6,
                        _ label: String = "", sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    guard actual.shape == expected.shape else {
        Issue.record("\(label): shape \(actual.shape) != expected \(expected.shape)", sourceLocation: sourceLocation)
        return false
    }
    let r = closeness(actual.scalars, expected.scalars, rtol: rtol, atol: atol)
    if !r.passed { Issue.record("\(label): not close (rtol \(rtol), atol \(atol)): \(r)", sourceLocation: sourceLocation) }
    return r.passed
}

/// Array overload for kernel-level tests.
@discardableResult
public func expectClose(_ actual: [Float], _ expected: [Float], rtol: Float = 1e-5, atol: Float = 1e-6,
                        _ label: String = "", sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    guard actual.count == expected.count else {
        Issue.record("\(label): \(actual.count) elements != expected \(expected.count)", sourceLocation: sourceLocation)
        return false
    }
    let r = closeness(actual, expected, rtol: rtol, atol: atol)
    if !r.passed { Issue.record("\(label): not close (rtol \(rtol), atol \(atol)): \(r)", sourceLocation: sourceLocation) }
    return r.passed
}

/// Checks the tape's gradients of `f` against central finite differences. The scalar checked is
/// Σ w ⊙ f(x) with fixed random weights w, so every output element contributes. Differences are
/// taken in float32 with step `eps`, hence the loose default tolerances.
public func checkGradients(at inputs: [Tensor], eps: Float = 1e-2, rtol: Float = 2e-2, atol: Float = 2e-3,
                           _ label: String = "", sourceLocation: SourceLocation = #_sourceLocation,
                           _ f: @escaping ([Tensor]) -> Tensor) {
    let y0 = withoutGradients { f(inputs) }
    let w = Tensor.randomNormal(y0.shape, seed: 99)
    func objective(_ xs: [Tensor]) -> Double {
        let y = withoutGradients { f(xs) }
        return zip(y.scalars, w.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }
    let (_, grads) = valueAndGradient(at: inputs) { xs in (f(xs) * w).sum() }
    for (k, x) in inputs.enumerated() {
        var numeric = [Float](repeating: 0, count: x.count)
        for i in 0..<x.count {
            var xp = inputs, xm = inputs
            xp[k].withUnsafeMutablePointer { $0[i] += eps }
            xm[k].withUnsafeMutablePointer { $0[i] -= eps }
            numeric[i] = Float((objective(xp) - objective(xm)) / Double(2 * eps))
        }
        expectClose(grads[k].scalars, numeric, rtol: rtol, atol: atol, "\(label) input \(k) finite differences",
                    sourceLocation: sourceLocation)
    }
}

// MARK: Fixtures

/// The repository's Tests/Fixtures folder.
public let fixturesDirectory: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Tests/Fixtures")

/// A fixture file: tensors named `case.name` and per-case JSON parameters.
public struct Fixture {
    public let tensors: [String: Tensor]
    public let metadata: [String: String]

    /// Loads Tests/Fixtures/NAME.safetensors (a minimal F32-only safetensors reader).
    public init(_ name: String) throws {
        let url = fixturesDirectory.appendingPathComponent(name + ".safetensors")
        let data = try Data(contentsOf: url)
        guard data.count >= 8 else { throw FixtureError("\(url.path): shorter than 8 bytes") }
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        guard headerLength > 0, 8 + headerLength <= data.count else { throw FixtureError("\(url.path): bad header length") }
        guard let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as? [String: Any] else {
            throw FixtureError("\(url.path): header is not a JSON object")
        }
        var tensors: [String: Tensor] = [:]
        var metadata: [String: String] = [:]
        let base = 8 + headerLength
        for (key, value) in header {
            if key == "__metadata__" { metadata = value as? [String: String] ?? [:]; continue }
            guard let info = value as? [String: Any], info["dtype"] as? String == "F32",
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw FixtureError("\(url.path): tensor \(key) is not an F32 entry")
            }
            let count = shape.reduce(1, *)
            guard offsets[1] - offsets[0] == count * 4, base + offsets[1] <= data.count else {
                throw FixtureError("\(url.path): tensor \(key) has a bad byte range")
            }
            var scalars = [Float](repeating: 0, count: count)
            _ = scalars.withUnsafeMutableBytes { dst in
                data.copyBytes(to: dst, from: (base + offsets[0])..<(base + offsets[1]))
            }
            tensors[key] = Tensor(shape: shape, scalars: scalars)
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Case names in the order the generator wrote them.
    public var cases: [String] {
        guard let s = metadata["cases"], let list = try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String] else { return [] }
        return list
    }

    /// The case's parameters.
    public func params(_ name: String) -> [String: Any] {
        guard let s = metadata[name], let p = try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] else { return [:] }
        return p
    }

    /// Tensor `name` of case `c`; nil when absent.
    public func tensor(_ c: String, _ name: String) -> Tensor? { tensors["\(c).\(name)"] }

    /// Tensor `name` of case `c`; records an issue and returns a scalar zero when absent.
    public func require(_ c: String, _ name: String) -> Tensor {
        if let t = tensor(c, name) { return t }
        Issue.record("fixture case \(c) has no tensor \(name)")
        return Tensor(0)
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// A pair of integers from a JSON parameter ([a, b] or a single number).
public func pair(_ v: Any?) -> (Int, Int) {
    if let a = v as? [Int], a.count == 2 { return (a[0], a[1]) }
    if let i = v as? Int { return (i, i) }
    return (1, 1)
}

/// Runs `f` on a fresh tape and returns its output and the gradients of each input, seeded with
/// `seed` (the upstream gradient dy; ones when nil).
public func forwardBackward(_ inputs: [Tensor], seed: Tensor?, _ f: ([Tensor]) -> Tensor) -> (Tensor, [Tensor]) {
    let tape = GradientTape()
    let watched = inputs.map { tape.watch($0) }
    let y = tape.record { f(watched) }
    let g = tape.gradients(of: y, seed: seed, wrt: watched)
    return (y.detached, g)
}

/// Forward tolerance against PyTorch fixtures (max relative error 1e-5, atol 1e-6).
public let forwardTolerance: (rtol: Float, atol: Float) = (1e-5, 1e-6)
/// Gradient tolerance against PyTorch fixtures (1e-4 relative).
public let gradientTolerance: (rtol: Float, atol: Float) = (1e-4, 1e-5)

/// Compares the output and named gradients of one fixture case.
/// The absolute tolerance for a convolution result computed by the plan named `implementation`.
/// oneDNN's Winograd F(4×4, 3×3) (`jit_wino_4x3`, AVX-512 machines only) errs by up to about 1e-6
/// of the result's largest magnitude (ConvCandidateAccuracyTests; on the conv2d fixtures 3e-7 to
/// 1.0e-6, direct kernels 1.7e-7 to 5.7e-7): within the criterion as the tensor's relative error,
/// but more than 1e-5 absolute on elements that nearly cancel in a result of magnitude ~30. Its
/// elements are held to 5e-6 of that magnitude; every other plan to `atol`.
public func convolutionAtol(_ implementation: String, expected: [Float], atol: Float) -> Float {
    implementation.contains("jit_wino") ? max(atol, 5e-6 * (expected.map(abs).max() ?? 0)) : atol
}

public func checkCase(_ fx: Fixture, _ c: String, output: Tensor, outputName: String = "y",
                      gradients: [(String, Tensor)], sourceLocation: SourceLocation = #_sourceLocation) {
    expectClose(output, fx.require(c, outputName), rtol: forwardTolerance.rtol, atol: forwardTolerance.atol,
                "\(c) forward", sourceLocation: sourceLocation)
    for (name, g) in gradients {
        expectClose(g, fx.require(c, name), rtol: gradientTolerance.rtol, atol: gradientTolerance.atol,
                    "\(c) \(name)", sourceLocation: sourceLocation)
    }
}

/// `<temporary folder>/<prefix>-<pid>`: this test process's scratch folder, created on first use
/// and removed, with everything in it, when the process exits (the suite writes about 300 MB of
/// checkpoints and images there per run). SENET_KEEP_TEST_FILES=1 keeps them for inspection.
public func processScratchDirectory(_ prefix: String) -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(getpid())")
    ScratchDirectories.register(dir.path)
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

private enum ScratchDirectories {
    nonisolated(unsafe) static var paths: Set<String> = []
    static let lock = NSLock()

    static func register(_ path: String) {
        guard ProcessInfo.processInfo.environment["SENET_KEEP_TEST_FILES"] != "1" else { return }
        lock.lock()
        defer { lock.unlock() }
        if paths.isEmpty { atexit { ScratchDirectories.removeAll() } }
        paths.insert(path)
    }

    static func removeAll() {
        lock.lock()
        let all = paths
        lock.unlock()
        for p in all { try? FileManager.default.removeItem(atPath: p) }
    }
}
