// The oneDNN runtime: one CPU engine and stream for the process, primitive creation that refuses
// reference ("ref:*") implementations, and the plan object that binds a primitive to user buffers
// with reorders at its edges.
//
// Why plans: creating a oneDNN primitive costs milliseconds (JIT code generation), so every
// primitive is built once per (op, shape) and cached; a plan also owns the scratch buffers for
// operands whose preferred layout (e.g. nChw8c) differs from the caller's plain NCHW.

import CDNNL
import Foundation

/// A oneDNN call failed. The message names the call and the shapes involved.
public struct DNNLError: Error, CustomStringConvertible {
    public let description: String
}

@inline(__always)
func dnnlCheck(_ status: dnnl_status_t, _ what: @autoclosure () -> String) {
    if status != dnnl_success {
        fatalError("oneDNN: \(what()) failed with status \(status.rawValue)")
    }
}

/// The process-wide oneDNN CPU engine and in-order stream.
final class DNNLRuntime: @unchecked Sendable {
    static let shared = DNNLRuntime()
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t
    /// Serialises primitive execution: oneDNN parallelises inside each primitive (OpenMP), and
    /// plans own scratch buffers that two callers must not share.
    let lock = NSLock()
    /// Attributes for every primitive we create: user-managed scratchpad. oneDNN's default
    /// ("library") scratchpad is a thread-local buffer bound at creation, which breaks when a
    /// primitive created on one thread runs on another (Swift concurrency moves tasks between
    /// threads): each plan owns its scratchpad instead.
    let attr: dnnl_primitive_attr_t
    /// The same plus a ReLU post-op: the primitive writes max(result, 0) (inference fusion).
    let reluAttr: dnnl_primitive_attr_t

    /// New attributes with a user scratchpad and the post-ops `postOps` appends, if any (the
    /// caller destroys them with `dnnl_primitive_attr_destroy`).
    static func makeAttr(postOps: ((dnnl_post_ops_t?) -> Void)? = nil) -> dnnl_primitive_attr_t {
        var a: dnnl_primitive_attr_t?
        dnnlCheck(dnnl_primitive_attr_create(&a), "dnnl_primitive_attr_create")
        dnnlCheck(dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user), "set_scratchpad_mode")
        if let postOps {
            var ops: dnnl_post_ops_t?
            dnnlCheck(dnnl_post_ops_create(&ops), "dnnl_post_ops_create")
            postOps(ops)
            dnnlCheck(dnnl_primitive_attr_set_post_ops(a, ops), "dnnl_primitive_attr_set_post_ops")
            dnnl_post_ops_destroy(ops)
        }
        return a!
    }

    private init() {
        attr = DNNLRuntime.makeAttr()
        reluAttr = DNNLRuntime.makeAttr {
            dnnlCheck(dnnl_post_ops_append_eltwise($0, 1, dnnl_eltwise_relu, 0, 0), "dnnl_post_ops_append_eltwise")
        }
        var e: dnnl_engine_t?
        dnnlCheck(dnnl_engine_create(&e, dnnl_cpu, 0), "dnnl_engine_create")
        engine = e!
        var s: dnnl_stream_t?
        dnnlCheck(dnnl_stream_create(&s, engine, dnnl_stream_default_flags.rawValue), "dnnl_stream_create")
        stream = s!
    }
}

/// A plain memory descriptor with the given dims and format tag.
func makeMD(_ dims: [Int], _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t {
    var md = dnnl_memory_desc_t()
    let d = dims.map { Int64($0) }
    dnnlCheck(dnnl_memory_desc_init_by_tag(&md, Int32(d.count), d, dnnl_f32, tag),
              "dnnl_memory_desc_init_by_tag \(dims)")
    return md
}

/// The implementation name of a primitive descriptor (e.g. "jit:avx2", "gemm:jit", "ref:any").
func implName(_ pd: dnnl_primitive_desc_t) -> String {
    var cstr: UnsafePointer<CChar>?
    _ = withUnsafeMutablePointer(to: &cstr) { p in
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, UnsafeMutableRawPointer(p))
    }
    return cstr.map { String(cString: $0) } ?? "?"
}

/// Creates the first non-reference primitive descriptor for an op descriptor, or nil when only
/// reference implementations exist. Debian's 2.6.3 has no AVX2 kernel for some layouts (NHWC f32)
/// and silently falls back to "ref:any", ~10^5x slower: we never run those.
/// `attr` replaces the runtime's attributes (for other post-op chains; it must ask for a user
/// scratchpad too, see `DNNLRuntime.makeAttr`).
func firstFastPD(_ opDesc: UnsafeRawPointer, hint: dnnl_primitive_desc_t?, relu: Bool = false,
                 attr: dnnl_primitive_attr_t? = nil) -> dnnl_primitive_desc_t? {
    let rt = DNNLRuntime.shared
    var it: dnnl_primitive_desc_iterator_t?
    let status = dnnl_primitive_desc_iterator_create(&it, opDesc, attr ?? (relu ? rt.reluAttr : rt.attr), rt.engine, hint)
    guard status == dnnl_success, let iter = it else { return nil }
    defer { dnnl_primitive_desc_iterator_destroy(iter) }
    repeat {
        if let pd = dnnl_primitive_desc_iterator_fetch(iter) {
            if !implName(pd).hasPrefix("ref") { return pd }
            dnnl_primitive_desc_destroy(pd)
        }
    } while dnnl_primitive_desc_iterator_next(iter) == dnnl_success
    return nil
}

/// Temporary memory of the primitive being executed — its scratchpad and the blocked copies of its
/// operands — in one process-wide arena, grown to the largest plan's need. Plans run one at a time
/// (under `DNNLRuntime.lock`), so they can share it: with a buffer per plan, SE-ResNet-50 training
/// at batch 16 held about 2 GiB of blocked copies for its ~70 planned convolutions.
final class ScratchArena: @unchecked Sendable {
    static let shared = ScratchArena()
    private var base: UnsafeMutableRawPointer?
    private var capacity = 0

    /// At least `bytes` bytes, 64-byte aligned; valid until the next call. Call with the runtime's
    /// lock held.
    func memory(_ bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > capacity || base == nil {
            base?.deallocate()
            capacity = max(bytes, 64)
            base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        }
        return base!
    }

    /// Bytes `size` rounded up to the arena's 64-byte alignment.
    static func rounded(_ size: Int) -> Int { (size + 63) / 64 * 64 }
}

/// The scratchpad a primitive descriptor asks for (user mode); its memory is bound to the shared
/// arena at each execution (`bind`).
final class Scratchpad {
    let memory: dnnl_memory_t?
    /// Bytes needed (0: none).
    let size: Int

    init(_ pd: dnnl_primitive_desc_t) {
        var md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)!.pointee
        size = dnnl_memory_desc_get_size(&md)
        guard size > 0 else { memory = nil; return }
        var m: dnnl_memory_t?
        dnnlCheck(dnnl_memory_create(&m, &md, DNNLRuntime.shared.engine, nil), "scratchpad memory")
        memory = m
    }

    deinit {
        if let memory { dnnl_memory_destroy(memory) }
    }

    func bind(_ p: UnsafeMutableRawPointer) {
        if let memory { dnnl_memory_set_data_handle(memory, p) }
    }

    /// Appends the scratchpad argument when there is one.
    func append(to args: inout [dnnl_exec_arg_t]) {
        if let memory { args.append(dnnl_exec_arg_t(arg: senet_arg_scratchpad, memory: memory)) }
    }
}

/// One operand of a planned primitive: the caller's plain-layout buffer and, when the primitive
/// prefers another layout, a scratch buffer plus the reorder between the two.
final class PlanOperand {
    let arg: Int32
    let isOutput: Bool
    let userMem: dnnl_memory_t
    let primMem: dnnl_memory_t
    let reorder: dnnl_primitive_t?
    let reorderScratchpad: Scratchpad?
    /// Bytes of the primitive-layout copy (0 when the caller's layout is the primitive's).
    let scratchSize: Int

    init(arg: Int32, isOutput: Bool, user: dnnl_memory_desc_t, prim: dnnl_memory_desc_t) {
        let rt = DNNLRuntime.shared
        self.arg = arg
        self.isOutput = isOutput
        var u = user, p = prim
        var um: dnnl_memory_t?
        dnnlCheck(dnnl_memory_create(&um, &u, rt.engine, nil), "dnnl_memory_create")
        userMem = um!
        if dnnl_memory_desc_equal(&u, &p) != 0 {
            primMem = userMem
            reorder = nil
            reorderScratchpad = nil
            scratchSize = 0
        } else {
            scratchSize = max(dnnl_memory_desc_get_size(&p), 64)
            var pm: dnnl_memory_t?
            dnnlCheck(dnnl_memory_create(&pm, &p, rt.engine, nil), "dnnl_memory_create")
            primMem = pm!
            var rpd: dnnl_primitive_desc_t?
            if isOutput {
                dnnlCheck(dnnl_reorder_primitive_desc_create(&rpd, &p, rt.engine, &u, rt.engine, rt.attr), "reorder pd")
            } else {
                dnnlCheck(dnnl_reorder_primitive_desc_create(&rpd, &u, rt.engine, &p, rt.engine, rt.attr), "reorder pd")
            }
            var r: dnnl_primitive_t?
            dnnlCheck(dnnl_primitive_create(&r, rpd), "reorder primitive")
            reorderScratchpad = Scratchpad(rpd!)
            dnnl_primitive_desc_destroy(rpd)
            reorder = r
        }
    }

    deinit {
        if let r = reorder { dnnl_primitive_destroy(r) }
        if primMem != userMem { dnnl_memory_destroy(primMem) }
        dnnl_memory_destroy(userMem)
    }
}

typealias PlanArg = (Int32, Bool, dnnl_memory_desc_t, dnnl_query_t, Int)

/// Something that runs one kernel on the caller's buffers (a oneDNN primitive, or our own GEMM
/// formulation); `impl` names it for benchmarks and diagnostics.
protocol KernelPlan: AnyObject {
    var impl: String { get }
    func execute(_ pointers: [UnsafeMutableRawPointer])
    /// The same, told that the weights operand never changes while `constant` lives (a plan that
    /// converts weights to another layout may keep its converted copy there).
    func execute(_ pointers: [UnsafeMutableRawPointer], constant: ConstantWeights?)
}

extension KernelPlan {
    func execute(_ pointers: [UnsafeMutableRawPointer], constant: ConstantWeights?) { execute(pointers) }
}

/// Weights that stay the same for the life of this object, such as an inference engine's folded
/// convolution weights. A oneDNN plan that reads its weights in another layout (blocked, or
/// Winograd-transformed) converts them on its first call and keeps the copy here, instead of
/// converting them at every call; the copies are freed with this object. The caller promises
/// that the weight buffer passed with it never changes.
public final class ConstantWeights: @unchecked Sendable {
    private let lock = NSLock()
    /// Per plan (held, so that its identifier cannot be reused while its copy is here).
    private var copies: [ObjectIdentifier: (plan: AnyObject, pointer: UnsafeMutableRawPointer, bytes: Int)] = [:]

    public init() {}

    deinit { for c in copies.values { c.pointer.deallocate() } }

    /// Bytes held in converted copies.
    public var bytes: Int { lock.withLock { copies.values.reduce(0) { $0 + $1.bytes } } }

    /// Frees `plan`'s copy, if any (the autotuner drops those of the plans it did not choose).
    func discard(_ plan: AnyObject) {
        lock.withLock { copies.removeValue(forKey: ObjectIdentifier(plan))?.pointer.deallocate() }
    }

    /// `plan`'s copy, made by `fill` on first use.
    func copy(for plan: AnyObject, bytes: Int, fill: (UnsafeMutableRawPointer) -> Void) -> UnsafeMutableRawPointer {
        lock.lock()
        defer { lock.unlock() }
        if let c = copies[ObjectIdentifier(plan)] { return c.pointer }
        let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        fill(p)
        copies[ObjectIdentifier(plan)] = (plan, p, bytes)
        return p
    }
}

/// A primitive with its operands, executable on raw pointers in the caller's plain layouts.
final class DNNLPlan: KernelPlan {
    let primitive: dnnl_primitive_t
    let operands: [PlanOperand]
    let scratchpad: Scratchpad
    let impl: String

    /// `args`: (argument index, is output, the caller's memory descriptor, the primitive's query
    /// and its index — e.g. a bias is `weights_md` index 1).
    init(pd: dnnl_primitive_desc_t, args: [PlanArg]) {
        impl = implName(pd)
        operands = args.map { (arg, out, user, q, i) in
            let prim = dnnl_primitive_desc_query_md(pd, q, Int32(i))!.pointee
            return PlanOperand(arg: arg, isOutput: out, user: user, prim: prim)
        }
        var p: dnnl_primitive_t?
        dnnlCheck(dnnl_primitive_create(&p, pd), "dnnl_primitive_create (\(impl))")
        primitive = p!
        scratchpad = Scratchpad(pd)
    }

    deinit { dnnl_primitive_destroy(primitive) }

    /// Whether the primitive reads its weights in another layout than the caller's.
    var convertsWeights: Bool { operands.contains { $0.arg == senet_arg_weights && !$0.isOutput && $0.reorder != nil } }

    /// Arena bytes for the scratchpads and the operands' primitive-layout copies.
    private var arenaBytes: Int {
        var total = ScratchArena.rounded(scratchpad.size)
        for op in operands {
            total += ScratchArena.rounded(op.scratchSize) + ScratchArena.rounded(op.reorderScratchpad?.size ?? 0)
        }
        return total
    }

    /// Runs the primitive; `pointers[i]` is the caller's buffer for `operands[i]`.
    func execute(_ pointers: [UnsafeMutableRawPointer]) { execute(pointers, constant: nil) }

    func execute(_ pointers: [UnsafeMutableRawPointer], constant: ConstantWeights?) {
        let rt = DNNLRuntime.shared
        rt.lock.lock()
        defer { rt.lock.unlock() }
        for (op, ptr) in zip(operands, pointers) {
            dnnl_memory_set_data_handle(op.userMem, ptr)
        }
        // Bind the temporaries to the shared arena (valid while the lock is held).
        var cursor = ScratchArena.shared.memory(arenaBytes)
        scratchpad.bind(cursor)
        cursor += ScratchArena.rounded(scratchpad.size)
        for op in operands {
            if op.scratchSize > 0 {
                dnnl_memory_set_data_handle(op.primMem, cursor)
                cursor += ScratchArena.rounded(op.scratchSize)
            }
            if let pad = op.reorderScratchpad {
                pad.bind(cursor)
                cursor += ScratchArena.rounded(pad.size)
            }
        }
        for op in operands where !op.isOutput {
            guard let r = op.reorder else { continue }
            if let constant, op.arg == senet_arg_weights {
                // Converted once, on the first call with these weights.
                let copy = constant.copy(for: self, bytes: op.scratchSize) { dst in
                    dnnl_memory_set_data_handle(op.primMem, dst)
                    runReorder(r, op.reorderScratchpad, from: op.userMem, to: op.primMem)
                }
                dnnl_memory_set_data_handle(op.primMem, copy)
            } else {
                runReorder(r, op.reorderScratchpad, from: op.userMem, to: op.primMem)
            }
        }
        var args = operands.map { dnnl_exec_arg_t(arg: $0.arg, memory: $0.primMem) }
        scratchpad.append(to: &args)
        dnnlCheck(dnnl_primitive_execute(primitive, rt.stream, Int32(args.count), &args), "execute \(impl)")
        for op in operands where op.isOutput {
            if let r = op.reorder { runReorder(r, op.reorderScratchpad, from: op.primMem, to: op.userMem) }
        }
        dnnlCheck(dnnl_stream_wait(rt.stream), "dnnl_stream_wait")
    }

    private func runReorder(_ r: dnnl_primitive_t, _ pad: Scratchpad?, from: dnnl_memory_t, to: dnnl_memory_t) {
        var args = [dnnl_exec_arg_t(arg: senet_arg_from, memory: from),
                    dnnl_exec_arg_t(arg: senet_arg_to, memory: to)]
        pad?.append(to: &args)
        dnnlCheck(dnnl_primitive_execute(r, DNNLRuntime.shared.stream, Int32(args.count), &args), "reorder")
    }
}

/// A thread-safe cache of plans keyed by a hashable shape description.
final class PlanCache<Key: Hashable>: @unchecked Sendable {
    private var plans: [Key: KernelPlan] = [:]
    private let lock = NSLock()

    func cached(_ key: Key) -> KernelPlan? {
        lock.lock()
        defer { lock.unlock() }
        return plans[key]
    }

    func store(_ key: Key, _ plan: KernelPlan) {
        lock.lock()
        defer { lock.unlock() }
        plans[key] = plan
    }
}

/// Row-major single-precision GEMM through oneDNN: C = alpha·op(A)·op(B) + beta·C, with
/// op(A) M×K and op(B) K×N. `lda`, `ldb`, `ldc` are row strides.
public func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                  beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    let st = dnnl_sgemm(transA ? 84 : 78, transB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha,
                        a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
    dnnlCheck(st, "dnnl_sgemm m=\(m) n=\(n) k=\(k)")
}
