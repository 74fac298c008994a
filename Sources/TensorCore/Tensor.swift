// Tensor: a float32, row-major (NCHW for images) value with copy-on-write storage.
//
// Copies share one 64-byte-aligned buffer until one of them is mutated
// (`isKnownUniquelyReferenced`, as swift-collections' Deque). A tensor produced while a gradient
// tape is recording carries its position on that tape (see Autograd.swift).

import Foundation
import Kernels

/// Where tensor memory comes from.
///
/// Every forward pass or training step of one input shape asks for the same buffer sizes in the
/// same order. Blocks of 64 KiB and more are therefore kept when freed, by size (rounded up to
/// whole pages), and handed out again for the same size: after the first pass nothing is asked of
/// the system and nothing page-faults (fresh pages do: the kernel zeroes each one; measured as a
/// large share of a training step), and freed blocks of one size never fragment the memory of
/// another, as they did when glibc's heap kept them (SE-ResNet-50 training at batch 16 held
/// 2.7–3.6 GiB of heap for 1.9 GiB of live tensors). The blocks are mapped from the system
/// directly.
///
/// Bound: live tensors plus idle blocks stay within twice the largest live total seen (plus
/// 32 MiB). Exactly the peak would be too little: a pass needs each size at its own moment (an
/// inference pass holds the first stage's maps, then the second's, …), so the pool must hold
/// blocks of every size at once — measured, a cap at the peak made SE-ResNet-50 inference map and
/// fault 250 MB again on every pass. When a freed block does not fit, the sizes used least
/// recently go back to the system first (sizes that only a first pass needed, such as the
/// inference engine's trace). SENET_KEEP_FREED_MEMORY=0 turns the pool off (malloc and free).
enum TensorMemory {
    static let pooled = ProcessInfo.processInfo.environment["SENET_KEEP_FREED_MEMORY"] != "0"
    /// Smallest pooled block; smaller tensors come from malloc, which reuses them well.
    static let minimum = 65_536
    private static let page = 4_096
    private static let slack = 32 << 20

    private static let lock = NSLock()
    nonisolated(unsafe) private static var idle: [Int: [UnsafeMutableRawPointer]] = [:]
    nonisolated(unsafe) private static var lastUse: [Int: UInt64] = [:]
    nonisolated(unsafe) private static var clock: UInt64 = 0
    nonisolated(unsafe) private static var idleBytes = 0

    @inline(__always)
    static func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        guard pooled, bytes >= minimum else { return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64) }
        let size = (bytes + page - 1) / page * page
        lock.lock()
        clock &+= 1
        lastUse[size] = clock
        if let p = idle[size]?.popLast() {
            idleBytes -= size
            lock.unlock()
            return p
        }
        lock.unlock()
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("out of memory: a tensor of \(bytes) bytes could not be allocated (\(String(cString: strerror(errno))))")
        }
        return p
    }

    /// Takes back a block; `live` is the live tensor total without it, `ceiling` the largest seen.
    static func release(_ p: UnsafeMutableRawPointer, _ bytes: Int, live: Int, ceiling: Int) {
        guard pooled, bytes >= minimum else { p.deallocate(); return }
        let size = (bytes + page - 1) / page * page
        let budget = 2 * ceiling + slack - live
        lock.lock()
        if idleBytes + size > budget {
            // Least recently used sizes first.
            for (other, _) in lastUse.sorted(by: { $0.value < $1.value }) where other != size {
                while idleBytes + size > budget, let q = idle[other]?.popLast() {
                    munmap(q, other)
                    idleBytes -= other
                }
                if idleBytes + size <= budget { break }
            }
        }
        if idleBytes + size <= budget {
            idle[size, default: []].append(p)
            idleBytes += size
            lock.unlock()
            return
        }
        lock.unlock()
        munmap(p, size)
    }
}

/// The buffer behind one or more tensors. Counts live and peak bytes process-wide so tests and
/// benchmarks can check memory behaviour (no-grad inference keeps ~one layer's activations).
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    private static let lock = NSLock()
    nonisolated(unsafe) private static var _live = 0
    nonisolated(unsafe) private static var _peak = 0

    /// Bytes held by all live storages.
    public static var liveBytes: Int { lock.lock(); defer { lock.unlock() }; return _live }
    /// The largest `liveBytes` seen since the last `resetPeak()`.
    public static var peakBytes: Int { lock.lock(); defer { lock.unlock() }; return _peak }
    public static func resetPeak() { lock.lock(); _peak = _live; lock.unlock() }

    /// The largest `liveBytes` ever (never reset): caps the memory pool's idle blocks.
    nonisolated(unsafe) private static var _ceiling = 0

    /// Uninitialised storage for `count` floats (64-byte aligned; see `TensorMemory`).
    public init(count: Int) {
        self.count = count
        let raw = TensorMemory.allocate(max(count, 1) * 4)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        TensorStorage.lock.lock()
        TensorStorage._live += count * 4
        if TensorStorage._live > TensorStorage._peak { TensorStorage._peak = TensorStorage._live }
        if TensorStorage._live > TensorStorage._ceiling { TensorStorage._ceiling = TensorStorage._live }
        TensorStorage.lock.unlock()
    }

    deinit {
        TensorStorage.lock.lock()
        TensorStorage._live -= count * 4
        let (live, ceiling) = (TensorStorage._live, TensorStorage._ceiling)
        TensorStorage.lock.unlock()
        TensorMemory.release(UnsafeMutableRawPointer(pointer), max(count, 1) * 4, live: live, ceiling: ceiling)
    }
}

/// A float32 tensor (row-major; images are N×C×H×W as PyTorch). Value semantics.
///
/// An image tensor may be stored channel-blocked (`channelBlock` 8 or 16: oneDNN's nChw8c /
/// nChw16c, see Kernels/Blocked.swift) between layers whose kernels read that layout
/// (convolution, batch norm, ReLU, the residual add, the SE squeeze and scale, max pooling). Its
/// shape, values and every accessor below stay those of the NCHW tensor: `withUnsafePointer`,
/// `scalars` and the rest hand out an NCHW copy, so code unaware of the layout is never wrong,
/// only slower. Layout-aware kernels use `withUnsafeStorage`.
public struct Tensor: @unchecked Sendable {
    /// The dimensions, outermost first.
    public private(set) var shape: [Int]
    @usableFromInline var storage: TensorStorage
    /// Position on the recording tape (`tape.id`, index), or nil when not tracked.
    var trace: (tape: ObjectIdentifier, index: Int)?
    /// Set by a convolution with a fused ReLU (inference): every element is already max(·, 0), so
    /// `relu` returns the tensor itself. Any mutation clears it.
    public internal(set) var isRectified = false
    /// The storage order: 1 = row-major (NCHW); 8 or 16 = channels in blocks of that many, the
    /// block innermost (4-D tensors whose channel count the block divides).
    public internal(set) var channelBlock = 1
    /// Set only on a gradient on its way from a pullback to the tape: this N×C×1×1 tensor stands
    /// for its values times `scale` at every position of `shape` (N×C×H×W, in layout `block`).
    /// The tape adds it into the gradient already there in one pass, instead of a pass that
    /// writes the broadcast out and one that adds it (the SE squeeze's backward); otherwise it
    /// expands it (`expandedGradient`). No tensor a user sees carries it.
    var pendingPlaneBroadcast: (shape: [Int], scale: Float, block: Int)?
    /// Set only on a gradient on the tape (never on a tensor a user sees): this N×C×H×W tensor
    /// (channel-blocked) stands for its stored values times `scale[n·C + c]`, plus
    /// `offset[n·C + c]` when there is one, per plane. The SE scale's backward gives x's gradient
    /// this way (dr times the excitation, over dr's own storage) instead of writing it; the tape
    /// adds the squeeze's per-plane gradient into `offset`; a batch norm's backward reads it as
    /// it is; any other pullback gets it written out first (`expandedGradient`).
    var pendingPlaneAffine: (scale: [Float], offset: [Float]?)?
    /// The sums of this N×C×H×W tensor's planes (index n·C + c), in the order a plane sum of
    /// layout `block` forms them, written by the op that produced it (a batch norm in training:
    /// the SE squeeze then reads no more memory). Valid while shape and layout match; any
    /// mutation clears it.
    var cachedPlaneSums: (shape: [Int], block: Int, sums: [Float])?

    /// Number of elements.
    public var count: Int { storage.count }
    public var rank: Int { shape.count }

    /// A tensor of the given shape with uninitialised contents (for kernels that write every element).
    public init(uninitializedShape shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in \(shape)")
        self.shape = shape
        storage = TensorStorage(count: shape.reduce(1, *))
    }

    /// An uninitialised 4-D tensor stored with channel block `block` (1: NCHW).
    init(uninitializedShape shape: [Int], channelBlock block: Int) {
        precondition(block == 1 || (shape.count == 4 && shape[1] % block == 0),
                     "Tensor: channel block \(block) for shape \(shape)")
        self.init(uninitializedShape: shape)
        channelBlock = block
    }

    /// A tensor filled with `value`.
    public init(shape: [Int], repeating value: Float) {
        self.init(uninitializedShape: shape)
        storage.pointer.update(repeating: value, count: count)
    }

    /// A tensor from row-major scalars; `scalars.count` must equal the product of `shape`.
    public init(shape: [Int], scalars: [Float]) {
        let n = shape.reduce(1, *)
        if scalars.count != n {
            shapeFailure("Tensor(shape:scalars:)", "shape \(shape) holds \(n) elements but \(scalars.count) scalars were given")
        }
        self.init(uninitializedShape: shape)
        scalars.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: n) }
    }

    /// A 1-element tensor of shape [] holding `value`.
    public init(_ value: Float) { self.init(shape: [], scalars: [value]) }

    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 0) }
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 1) }

    /// The elements in row-major order.
    public var scalars: [Float] { withUnsafePointer { Array(UnsafeBufferPointer(start: $0, count: count)) } }

    /// The single element of a one-element tensor.
    public var item: Float {
        if count != 1 { shapeFailure("item", "tensor of shape \(shape) has \(count) elements, not 1") }
        return storage.pointer[0]
    }

    /// The same values stored with channel block `block` (1: NCHW); the tensor itself when it
    /// already is. Not recorded on the gradient tape (layouts are invisible to it).
    public func inLayout(_ block: Int) -> Tensor {
        if block == channelBlock { return self }
        var out = Tensor(uninitializedShape: shape, channelBlock: block)
        out.isRectified = isRectified
        out.withUnsafeMutableStorage { o in
            withUnsafeStorage { convertChannelBlocks(out: o, inp: $0, n: shape[0], c: shape[1], s: shape[2] * shape[3],
                                                     from: channelBlock, to: block) }
        }
        return out
    }

    /// Read-only access to the contiguous elements in row-major (NCHW) order; a channel-blocked
    /// tensor is converted first (into a temporary).
    public func withUnsafePointer<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        if channelBlock != 1 { return try inLayout(1).withUnsafePointer(body) }
        return try withExtendedLifetime(storage) { try body(UnsafePointer(storage.pointer)) }
    }

    /// Mutable access in row-major order; copies the buffer first if it is shared (copy-on-write)
    /// and converts a channel-blocked tensor to NCHW. Mutating a tensor detaches it from the
    /// gradient tape.
    public mutating func withUnsafeMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        if channelBlock != 1 { self = inLayout(1) }
        return try withUnsafeMutableStorage(body)
    }

    /// Read-only access to the elements in storage order (`channelBlock`), with no conversion.
    public func withUnsafeStorage<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try body(UnsafePointer(storage.pointer)) }
    }

    /// Mutable access in storage order (copy-on-write as `withUnsafeMutablePointer`).
    public mutating func withUnsafeMutableStorage<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) {
            let copy = TensorStorage(count: storage.count)
            copy.pointer.update(from: storage.pointer, count: storage.count)
            storage = copy
        }
        precondition(pendingPlaneAffine == nil, "a gradient kept as a per-plane scale and offset was written to")
        trace = nil
        isRectified = false
        cachedPlaneSums = nil
        return try withExtendedLifetime(storage) { try body(storage.pointer) }
    }

    /// Element access by full index (slow; for tests and small tensors).
    public subscript(_ index: Int...) -> Float {
        get { let i = flatIndex(index); return withUnsafePointer { $0[i] } }
        set {
            let i = flatIndex(index)
            withUnsafeMutablePointer { $0[i] = newValue }
        }
    }

    func flatIndex(_ index: [Int]) -> Int {
        if index.count != rank { shapeFailure("subscript", "index \(index) for shape \(shape)") }
        var flat = 0
        for (i, (ix, d)) in zip(index, shape).enumerated() {
            if ix < 0 || ix >= d { shapeFailure("subscript", "index \(index) out of range in dimension \(i) of shape \(shape)") }
            flat = flat * d + ix
        }
        return flat
    }

    /// Same elements, new shape (internal: no tape bookkeeping); a channel-blocked tensor becomes
    /// NCHW first.
    func viewing(as newShape: [Int]) -> Tensor {
        var t = channelBlock == 1 ? self : inLayout(1)
        t.shape = newShape
        t.trace = nil
        return t
    }
}

/// Stops with a message naming the operation and the shapes involved. Shape errors are
/// programming errors (as PyTorch's RuntimeError in model code), so they trap; `fatalError` keeps
/// the message in optimised builds, where `precondition` would drop it.
public func shapeFailure(_ op: String, _ detail: String) -> Never {
    fatalError("\(op): \(detail)")
}

extension Tensor: CustomStringConvertible {
    /// PyTorch-like printing: nested brackets, up to 6 values per row (ends shown when longer).
    public var description: String {
        if rank == 0 { return "tensor(\(fmt(storage.pointer[0])))" }
        let values = scalars
        var out = ""
        func emit(_ dim: Int, _ offset: Int, _ indent: Int) {
            let n = shape[dim]
            let stride = shape[(dim + 1)...].reduce(1, *)
            let idx: [Int] = n > 6 ? Array(0..<3) + [-1] + Array((n - 3)..<n) : Array(0..<n)
            out += "["
            for (j, i) in idx.enumerated() {
                if j > 0 { out += dim == rank - 1 ? ", " : ",\n" + String(repeating: " ", count: indent + 1) }
                if i < 0 { out += "..."; continue }
                if dim == rank - 1 { out += fmt(values[offset + i]) } else { emit(dim + 1, offset + i * stride, indent + 1) }
            }
            out += "]"
        }
        emit(0, 0, 7)
        return "tensor(" + out + ", shape: \(shape))"
    }

    private func fmt(_ v: Float) -> String { String(format: "%.4f", v) }
}
