// PyTorch checkpoints (.pth, .pth.tar, .pt) read natively, without Python and without executing
// any pickled code.
//
// Two container formats exist:
//  * zip (torch >= 1.6, the default): a stored ZIP archive `<archive>/data.pkl` (the pickled
//    object), `<archive>/data/<key>` (one record per storage, raw bytes), `<archive>/byteorder`
//    ("little" or "big"; absent in older files, meaning little) and `<archive>/version`;
//  * legacy (`_use_new_zipfile_serialization=False`, and every file before torch 1.6): a stream of
//    pickles — the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, a sys_info
//    dict, the main object, the sorted list of storage keys — followed, for each key in that
//    order, by the storage's element count (int64, little-endian) and its raw little-endian bytes.
// In both, tensors are pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
// requires_grad, hooks)` with the storage a persistent id ('storage', torch.FloatStorage, key,
// location, numel). See Pickle.swift for the restricted unpickler.

import Foundation
import TensorCore

/// Reads PyTorch `.pth` checkpoints (zip and legacy formats) into a `StateDict`.
///
/// Every floating and integer tensor becomes float32: F32 exactly, F16 / BF16 exactly (they
/// widen), F64 rounded to nearest, integers exactly up to 2^24 in magnitude (so
/// `num_batches_tracked` is exact) and rounded to nearest beyond. Non-contiguous tensors (a
/// transposed weight, a view with a storage offset) are gathered into row-major order.
///
/// Checkpoints saved by training scripts wrap the weights; the reader looks, in order, under
/// `state_dict`, `model`, then the EMA copies `state_dict_ema`, `model_ema`, `ema` (EMA first
/// when ``Options/preferEMA`` is set), one wrapper level inside another at most three deep, and
/// otherwise takes the top-level dict itself. Non-tensor entries (epoch, optimizer, args) are
/// ignored; a checkpoint without tensors is an error. A `module.` prefix shared by every key
/// (from `nn.DataParallel`) is stripped.
///
/// Nothing in the file is executed: any pickled global other than the few that state dicts use
/// (e.g. `os.system`, `builtins.eval`) is refused with a `CheckpointError` naming it.
public enum TorchCheckpoint {
    /// Choices for ``TorchCheckpoint/read(_:options:)``.
    public struct Options: Sendable {
        /// Take the EMA weights (`state_dict_ema`, `model_ema`, `ema`) over the plain ones when both exist.
        public var preferEMA: Bool
        /// Take the weights under this top-level key instead of searching the wrapper keys.
        public var entry: String?
        /// Strip a `module.` prefix that every key carries.
        public var stripModulePrefix: Bool
        /// Check the CRC-32 of each ZIP record used (zip format only).
        public var verifyChecksums: Bool
        /// The largest element count accepted for one tensor.
        public var maxTensorElements: Int
        /// The largest element count accepted for all tensors together; nil means 16 × the file's
        /// size in bytes + 2^24 (tensors sharing a storage, or stride-0 expansions, can exceed the
        /// file's size, but not without bound).
        public var maxTotalElements: Int?

        public init(preferEMA: Bool = false, entry: String? = nil, stripModulePrefix: Bool = true,
                    verifyChecksums: Bool = true, maxTensorElements: Int = 1 << 32, maxTotalElements: Int? = nil) {
            self.preferEMA = preferEMA
            self.entry = entry
            self.stripModulePrefix = stripModulePrefix
            self.verifyChecksums = verifyChecksums
            self.maxTensorElements = maxTensorElements
            self.maxTotalElements = maxTotalElements
        }
    }

    /// The wrapper keys holding plain weights, in order of preference.
    public static let plainKeys = ["state_dict", "model"]
    /// The wrapper keys holding EMA weights, in order of preference.
    public static let emaKeys = ["state_dict_ema", "model_ema", "ema"]

    /// Reads the state dict in the PyTorch checkpoint at `url`.
    ///
    /// The returned dict's metadata records `format` (`pytorch-zip` or `pytorch-legacy`) and
    /// `entry` (the wrapper key path the weights came from, empty for a plain state dict).
    /// - Throws: `CheckpointError` naming the file (and the tensor, when one is at fault).
    public static func read(_ url: URL, options: Options = Options()) throws -> StateDict {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw CheckpointError(file: url.path, "cannot read the file: \(error.localizedDescription)")
        }
        return try read(bytes: data, name: url.path, options: options)
    }

    /// Reads a checkpoint held in memory; `name` is used in error messages.
    public static func read(bytes: Data, name: String, options: Options = Options()) throws -> StateDict {
        try bytes.withUnsafeBytes { try Reader(buffer: $0, file: name, options: options).read() }
    }
}

/// The zip records whose checksum has been checked.
private final class VerifiedRecords {
    var names: Set<String> = []
}

/// One read of one checkpoint buffer.
private struct Reader {
    let buffer: UnsafeRawBufferPointer
    let file: String
    let options: TorchCheckpoint.Options
    let heap = PickleHeap()

    func fail(_ p: String, tensor: String? = nil) -> CheckpointError { CheckpointError(file: file, tensor: tensor, p) }

    /// Where a root storage's bytes are, and whether they need byte-swapping.
    struct StorageBytes {
        let range: Range<Int>
        let swap: Bool
    }

    func read() throws -> StateDict {
        let root: PickleValue
        let format: String
        var resolve: (StorageRef) throws -> StorageBytes
        if ZipArchive.looksLikeZip(buffer) {
            format = "pytorch-zip"
            (root, resolve) = try readZip()
        } else if buffer.count >= 262, buffer[257] == 0x75, buffer[258] == 0x73, buffer[259] == 0x74, buffer[260] == 0x61, buffer[261] == 0x72 {
            throw fail("tar-format checkpoints (torch < 0.4) are not supported; re-save the file with a recent torch")
        } else {
            format = "pytorch-legacy"
            (root, resolve) = try readLegacy()
        }

        let (entries, path) = try select(root)
        var names = entries.map(\.0)
        if options.stripModulePrefix, !names.isEmpty, names.allSatisfy({ $0.hasPrefix("module.") }) {
            names = names.map { String($0.dropFirst("module.".count)) }
        }
        var result = StateDict(metadata: ["format": format, "entry": path])
        let (scaled, o1) = buffer.count.multipliedReportingOverflow(by: 16)
        let (bound, o2) = scaled.addingReportingOverflow(1 << 24)
        let totalLimit = options.maxTotalElements ?? (o1 || o2 ? Int.max : bound)
        var total = 0
        for (name, (_, ref)) in zip(names, entries) {
            let t = try materialise(ref, name: name, resolve: resolve)
            total += t.count
            guard total <= totalLimit else {
                throw fail("the tensors hold more than \(totalLimit) elements in all", tensor: name)
            }
            result[name] = t
        }
        return result
    }

    // MARK: Containers

    func readZip() throws -> (PickleValue, (StorageRef) throws -> StorageBytes) {
        let archive = try ZipArchive(buffer, file: file)
        // `<archive>/data.pkl` at the top level (the archive folder's name is the file's stem).
        guard let pkl = archive.entries.first(where: { e in
            e.name.hasSuffix("/data.pkl") && e.name.dropLast("/data.pkl".count).allSatisfy { $0 != "/" }
        }) else {
            throw fail("zip archive has no <archive>/data.pkl record (not a torch.save checkpoint)")
        }
        let prefix = String(pkl.name.dropLast("data.pkl".count))
        var swap = false
        if let order = archive.entry(prefix + "byteorder") {
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: buffer[order.range]), as: UTF8.self)
            switch text.trimmingCharacters(in: .whitespacesAndNewlines) {
            case "little": swap = false
            case "big": swap = true
            default: throw fail("unknown byteorder record '\(text.prefix(20))'")
            }
            #if _endian(big)
            swap.toggle()
            #endif
        }
        try verify(pkl)
        var unpickler = Unpickler(cursor: ByteCursor(buffer, file: file, range: pkl.range), heap: heap)
        let root = try unpickler.load()
        let verify = self.verify
        let verified = VerifiedRecords()  // each record's CRC is checked once, however many tensors share it
        let resolve: (StorageRef) throws -> StorageBytes = { [file] s in
            guard let e = archive.entry(prefix + "data/" + s.key) else {
                throw CheckpointError(file: file, "zip archive has no record for storage '\(s.key)'")
            }
            if verified.names.insert(e.name).inserted { try verify(e) }
            return StorageBytes(range: e.range, swap: swap)
        }
        return (root, resolve)
    }

    func verify(_ e: ZipEntry) throws {
        guard options.verifyChecksums else { return }
        let crc = CRC32.checksum(UnsafeRawBufferPointer(rebasing: buffer[e.range]))
        guard crc == e.crc32 else {
            throw fail("zip record '\(e.name)' fails its CRC-32 check (corrupt file)")
        }
    }

    /// The legacy magic number 0x1950A86A20F9469CFC6C as pickle's little-endian LONG1 bytes.
    static let magic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    func readLegacy() throws -> (PickleValue, (StorageRef) throws -> StorageBytes) {
        var cursor = ByteCursor(buffer, file: file)
        func next() throws -> PickleValue {
            var u = Unpickler(cursor: cursor, heap: heap)
            let v = try u.load()
            cursor = u.cursor
            return v
        }
        guard case .bigInt(let m) = try next(), m == Reader.magic else {
            throw fail("not a PyTorch checkpoint: neither a zip archive nor a legacy file (no magic number)")
        }
        guard case .int(1001) = try next() else { throw fail("legacy checkpoint with an unknown protocol version") }
        guard let sysInfo = heap.dict(try next()) else { throw fail("legacy checkpoint: sys_info is not a dict") }
        if case .bool(false)? = sysInfo["little_endian"] {
            throw fail("legacy checkpoint written on a big-endian machine is not supported")
        }
        let root = try next()
        guard let keyList = heap.list(try next()) else { throw fail("legacy checkpoint: the storage key list is not a list") }

        // The element type of each root storage, from the persistent ids seen.
        var dtypes: [String: TorchDType] = [:]
        for case .storage(let s) in heap.objects where dtypes[s.key] == nil { dtypes[s.key] = s.dtype }

        var ranges: [String: Range<Int>] = [:]
        for k in keyList {
            guard case .string(let key) = k else { throw fail("legacy checkpoint: a storage key is a \(heap.kind(k))") }
            guard let dtype = dtypes[key] else { throw fail("legacy checkpoint: storage '\(key)' is listed but never used") }
            let numel = try checkedInt(try cursor.u64("size of storage '\(key)'"), file: file, "size of storage '\(key)'")
            let (bytes, overflow) = numel.multipliedReportingOverflow(by: dtype.size)
            guard !overflow else { throw fail("storage '\(key)' of \(numel) elements is too large") }
            let start = try cursor.take(bytes, "storage '\(key)'")
            guard ranges[key] == nil else { throw fail("legacy checkpoint: storage '\(key)' is listed twice") }
            ranges[key] = start..<(start + bytes)
        }
        let resolve: (StorageRef) throws -> StorageBytes = { [file] s in
            guard let r = ranges[s.key] else { throw CheckpointError(file: file, "legacy checkpoint has no data for storage '\(s.key)'") }
            return StorageBytes(range: r, swap: false)
        }
        return (root, resolve)
    }

    // MARK: Unwrapping

    /// The (key, tensor) entries of the chosen dict and the wrapper path it was found under.
    func select(_ root: PickleValue) throws -> ([(String, TensorRef)], String) {
        guard let top = heap.dict(root) else {
            throw fail("the checkpoint holds a \(heap.kind(root)), not a dict of tensors")
        }
        func tensors(_ d: PickleDict) -> [(String, TensorRef)] {
            var out: [(String, TensorRef)] = []
            for (k, v) in zip(d.keys, d.values) {
                if case .string(let s) = k, let t = heap.tensor(v) { out.append((s, t)) }
            }
            return out
        }
        let order = options.preferEMA ? TorchCheckpoint.emaKeys + TorchCheckpoint.plainKeys
                                      : TorchCheckpoint.plainKeys + TorchCheckpoint.emaKeys
        func choose(_ d: PickleDict, depth: Int, path: String) -> ([(String, TensorRef)], String) {
            if depth < 3 {
                for key in order {
                    if let v = d[key], let sub = heap.dict(v) {
                        let r = choose(sub, depth: depth + 1, path: path.isEmpty ? key : path + "." + key)
                        if !r.0.isEmpty { return r }
                    }
                }
            }
            return (tensors(d), path)
        }
        let result: ([(String, TensorRef)], String)
        if let entry = options.entry {
            guard let v = top[entry] else { throw fail("the checkpoint has no top-level entry '\(entry)'") }
            guard let d = heap.dict(v) else { throw fail("entry '\(entry)' is a \(heap.kind(v)), not a dict") }
            result = (tensors(d), entry)
        } else {
            result = choose(top, depth: 0, path: "")
        }
        guard !result.0.isEmpty else {
            let keys = top.keys.prefix(12).map { k -> String in if case .string(let s) = k { return s }; return heap.kind(k) }
            throw fail("no tensors found" + (result.1.isEmpty ? "" : " under '\(result.1)'")
                       + " (top-level keys: \(keys.joined(separator: ", ")))")
        }
        return result
    }

    // MARK: Tensors

    func materialise(_ t: TensorRef, name: String, resolve: (StorageRef) throws -> StorageBytes) throws -> Tensor {
        func bad(_ p: String) -> CheckpointError { fail(p, tensor: name) }
        let s = t.storage
        let where_ = try resolve(s)
        let elementSize = s.dtype.size
        // The root storage must hold `numel` elements; a view is a window inside it.
        let (needed, o1) = s.numel.multipliedReportingOverflow(by: elementSize)
        guard !o1, needed <= where_.range.count else {
            throw bad("storage '\(s.key)' declares \(s.numel) \(s.dtype) elements but holds \(where_.range.count) bytes")
        }
        var base = 0, available = s.numel
        if let v = s.view {
            let (end, o2) = v.offset.addingReportingOverflow(v.count)
            guard v.offset >= 0, v.count >= 0, !o2, end <= s.numel else {
                throw bad("storage view '\(v.key)' (offset \(v.offset), \(v.count) elements) lies outside its \(s.numel)-element storage")
            }
            (base, available) = (v.offset, v.count)
        }
        let rank = t.size.count
        guard rank <= 32 else { throw bad("rank \(rank) exceeds 32") }
        guard t.stride.count == rank else { throw bad("size \(t.size) and stride \(t.stride) differ in rank") }
        guard t.size.allSatisfy({ $0 >= 0 }), t.stride.allSatisfy({ $0 >= 0 }), t.offset >= 0 else {
            throw bad("negative size, stride or offset (size \(t.size), stride \(t.stride), offset \(t.offset))")
        }
        var numel = 1, last = t.offset
        for n in t.size {
            let (p, o3) = numel.multipliedReportingOverflow(by: n)
            guard !o3, p <= options.maxTensorElements else {
                throw bad("shape \(t.size) exceeds the limit of \(options.maxTensorElements) elements")
            }
            numel = p
        }
        if numel > 0 {
            for (n, st) in zip(t.size, t.stride) {
                let (step, o4) = (n - 1).multipliedReportingOverflow(by: st)
                let (sum, o5) = last.addingReportingOverflow(step)
                guard !o4, !o5 else { throw bad("size \(t.size) with stride \(t.stride) overflows") }
                last = sum
            }
            guard last < available else {
                throw bad("size \(t.size), stride \(t.stride) and offset \(t.offset) reach element \(last) of a \(available)-element storage")
            }
        }

        var out = Tensor(uninitializedShape: t.size)
        guard numel > 0 else { return out }
        let raw = UnsafeRawBufferPointer(rebasing: buffer[where_.range])
        let dtype = s.dtype, swap = where_.swap
        out.withUnsafeMutablePointer { dst in
            // Walk the outer dimensions with an odometer; copy the innermost dimension as one run.
            let innerCount = rank == 0 ? 1 : t.size[rank - 1]
            let innerStride = rank == 0 ? 1 : t.stride[rank - 1]
            var contiguous = true, expect = 1
            for d in stride(from: rank - 1, through: 0, by: -1) where t.size[d] != 1 {
                if t.stride[d] != expect { contiguous = false }
                expect *= t.size[d]
            }
            if contiguous {
                convert(raw, dtype: dtype, swap: swap, from: base + t.offset, stride: 1, count: numel, to: dst)
                return
            }
            var index = [Int](repeating: 0, count: max(rank - 1, 0))
            var written = 0
            while written < numel {
                var e = base + t.offset
                for d in 0..<index.count { e += index[d] * t.stride[d] }
                convert(raw, dtype: dtype, swap: swap, from: e, stride: innerStride, count: innerCount, to: dst + written)
                written += innerCount
                var d = index.count - 1
                while d >= 0 {
                    index[d] += 1
                    if index[d] < t.size[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
        }
        return out
    }
}

/// Converts `count` elements starting at element `from`, `stride` elements apart, to float32.
/// The caller has checked that every element read lies inside `raw`.
private func convert(_ raw: UnsafeRawBufferPointer, dtype: TorchDType, swap: Bool, from: Int, stride: Int,
                     count: Int, to dst: UnsafeMutablePointer<Float>) {
    @inline(__always) func load<T: FixedWidthInteger>(_ i: Int, _: T.Type) -> T {
        let v = raw.loadUnaligned(fromByteOffset: (from + i * stride) * MemoryLayout<T>.size, as: T.self)
        return swap ? v.byteSwapped : v
    }
    switch dtype {
    case .float32:
        if stride == 1, !swap {
            UnsafeMutableRawPointer(dst).copyMemory(from: raw.baseAddress! + from * 4, byteCount: count * 4)
        } else {
            for i in 0..<count { dst[i] = Float(bitPattern: load(i, UInt32.self)) }
        }
    case .float16: for i in 0..<count { dst[i] = halfToFloat(load(i, UInt16.self)) }
    case .bfloat16: for i in 0..<count { dst[i] = Float(bitPattern: UInt32(load(i, UInt16.self)) << 16) }
    case .float64: for i in 0..<count { dst[i] = Float(Double(bitPattern: load(i, UInt64.self))) }
    case .int64: for i in 0..<count { dst[i] = Float(Int64(bitPattern: load(i, UInt64.self))) }
    case .int32: for i in 0..<count { dst[i] = Float(Int32(bitPattern: load(i, UInt32.self))) }
    case .int16: for i in 0..<count { dst[i] = Float(Int16(bitPattern: load(i, UInt16.self))) }
    case .int8: for i in 0..<count { dst[i] = Float(Int8(bitPattern: load(i, UInt8.self))) }
    case .uint8, .bool: for i in 0..<count { dst[i] = Float(load(i, UInt8.self)) }
    }
}

/// IEEE half → float, exactly (every half is a float).
func halfToFloat(_ h: UInt16) -> Float {
    let sign: Float = h & 0x8000 != 0 ? -1 : 1
    let exponent = Int((h >> 10) & 0x1F), mantissa = UInt32(h & 0x3FF)
    if exponent == 0 { return sign * Float(mantissa) * 0x1p-24 }  // zero and subnormals
    let signBit = UInt32(h & 0x8000) << 16
    if exponent == 31 { return Float(bitPattern: signBit | 0x7F80_0000 | mantissa << 13) }  // inf, NaN
    return Float(bitPattern: signBit | UInt32(exponent + 112) << 23 | mantissa << 13)
}
