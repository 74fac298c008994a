// A restricted unpickler (pickle protocols 2–5) for PyTorch state dicts. It executes nothing:
// it builds plain values (None, bools, ints, floats, strings, bytes, lists, tuples, dicts) and
// records tensors and storages as descriptions for TorchCheckpoint to materialise. Only the few
// globals state dicts use are known (OrderedDict, torch._utils._rebuild_tensor_v2 and siblings,
// the storage classes, dtypes, argparse.Namespace as an inert record); any other global, a REDUCE
// or BUILD on anything else, or an unknown opcode, is refused with an error naming it.
//
// Containers live in flat arrays (the heap) and values refer to them by index, so deep nesting
// never recurses, neither here nor when the values are freed; cycles are harmless.

import Foundation

/// An element type of a PyTorch storage.
enum TorchDType: String, Sendable {
    case float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool

    /// Bytes per element.
    var size: Int {
        switch self {
        case .float64, .int64: 8
        case .float32, .int32: 4
        case .float16, .bfloat16, .int16: 2
        case .int8, .uint8, .bool: 1
        }
    }

    /// Storage class names (torch.FloatStorage, ...) by element type.
    static let storageClasses: [String: TorchDType] = [
        "FloatStorage": .float32, "HalfStorage": .float16, "BFloat16Storage": .bfloat16,
        "DoubleStorage": .float64, "LongStorage": .int64, "IntStorage": .int32, "ShortStorage": .int16,
        "CharStorage": .int8, "ByteStorage": .uint8, "BoolStorage": .bool, "UntypedStorage": .uint8,
    ]

    /// The `torch.float32`-style dtype globals.
    static let dtypeNames: [String: TorchDType] = [
        "float32": .float32, "float": .float32, "float16": .float16, "half": .float16, "bfloat16": .bfloat16,
        "float64": .float64, "double": .float64, "int64": .int64, "long": .int64, "int32": .int32, "int": .int32,
        "int16": .int16, "short": .int16, "int8": .int8, "uint8": .uint8, "bool": .bool,
    ]
}

/// The globals the unpickler knows. Nothing is ever called: each is interpreted as data.
enum PickleGlobal: Equatable {
    case orderedDict, rebuildTensor, rebuildTensorV2, rebuildParameter, rebuildParameterWithState, rebuildFromTypeV2
    case storageClass(TorchDType), dtype(TorchDType), tensorClass, torchSize, codecsEncode, namespace

    /// Resolves `module.name`; nil for anything not whitelisted.
    static func resolve(module: String, name: String) -> PickleGlobal? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("torch._utils", "_rebuild_tensor"): return .rebuildTensor
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
        case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
        case ("torch._utils", "_rebuild_parameter_with_state"): return .rebuildParameterWithState
        case ("torch._tensor", "_rebuild_from_type_v2"): return .rebuildFromTypeV2
        case ("torch", "Tensor"), ("torch._tensor", "Tensor"), ("torch.nn.parameter", "Parameter"): return .tensorClass
        case ("torch", "Size"): return .torchSize
        case ("_codecs", "encode"): return .codecsEncode
        case ("argparse", "Namespace"): return .namespace
        case ("torch", _):
            if let t = TorchDType.storageClasses[name] { return .storageClass(t) }
            if let t = TorchDType.dtypeNames[name] { return .dtype(t) }
            return nil
        default: return nil
        }
    }
}

/// A storage reference from a persistent id: ('storage', class, key, location, numel[, view]).
struct StorageRef {
    let dtype: TorchDType
    let key: String
    let numel: Int
    /// Legacy storage views: (view key, offset and length in elements within the root storage).
    let view: (key: String, offset: Int, count: Int)?
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided window (in elements) onto a storage.
struct TensorRef {
    let storage: StorageRef
    let offset: Int
    let size: [Int]
    let stride: [Int]
}

/// A pickled value; containers are indices into a `PickleHeap`.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int64)
    /// An integer wider than 64 bits, as pickle's little-endian two's-complement bytes.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case object(Int)
}

/// A dict with insertion order; string and integer keys are indexed (later keys replace earlier ones).
struct PickleDict {
    var keys: [PickleValue] = []
    var values: [PickleValue] = []
    var index: [String: Int] = [:]
    var intIndex: [Int64: Int] = [:]

    mutating func set(_ k: PickleValue, _ v: PickleValue) {
        switch k {
        case .string(let s):
            if let i = index[s] { values[i] = v; return }
            index[s] = keys.count
        case .int(let n):
            if let i = intIndex[n] { values[i] = v; return }
            intIndex[n] = keys.count
        default: break
        }
        keys.append(k)
        values.append(v)
    }

    subscript(key: String) -> PickleValue? { index[key].map { values[$0] } }
}

/// The containers and records of one or more pickles.
final class PickleHeap {
    enum Object {
        case list(Int), dict(Int), tuple([PickleValue]), global(PickleGlobal, String)
        case storage(StorageRef), tensor(TensorRef), inert(String)
    }
    var objects: [Object] = []
    var lists: [[PickleValue]] = []
    var dicts: [PickleDict] = []
    let maxObjects: Int

    init(maxObjects: Int = 1 << 22) { self.maxObjects = maxObjects }

    func add(_ o: Object, file: String) throws -> PickleValue {
        guard objects.count < maxObjects else { throw CheckpointError(file: file, "pickle: more than \(maxObjects) objects") }
        objects.append(o)
        return .object(objects.count - 1)
    }

    func object(_ v: PickleValue) -> Object? {
        if case .object(let i) = v { return objects[i] }
        return nil
    }

    func tuple(_ v: PickleValue) -> [PickleValue]? {
        if case .tuple(let t)? = object(v) { return t }
        return nil
    }

    func dict(_ v: PickleValue) -> PickleDict? {
        if case .dict(let d)? = object(v) { return dicts[d] }
        return nil
    }

    func list(_ v: PickleValue) -> [PickleValue]? {
        if case .list(let l)? = object(v) { return lists[l] }
        return nil
    }

    func tensor(_ v: PickleValue) -> TensorRef? {
        if case .tensor(let t)? = object(v) { return t }
        return nil
    }

    /// A short description of a value's kind, for error messages.
    func kind(_ v: PickleValue) -> String {
        switch v {
        case .none: return "None"
        case .bool: return "bool"
        case .int, .bigInt: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .object(let i):
            switch objects[i] {
            case .list: return "list"
            case .dict: return "dict"
            case .tuple: return "tuple"
            case .global(_, let n): return "global '\(n)'"
            case .storage: return "storage"
            case .tensor: return "tensor"
            case .inert(let n): return "'\(n)' object"
            }
        }
    }
}

/// Reads one pickle from a byte cursor into a heap; see the file comment for what it accepts.
struct Unpickler {
    /// Resource limits; each operation also consumes at least one input byte.
    struct Limits {
        var maxStack = 1 << 20
        var maxMemo = 1 << 20
    }

    var cursor: ByteCursor
    let heap: PickleHeap
    let limits: Limits
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]

    init(cursor: ByteCursor, heap: PickleHeap, limits: Limits = Limits()) {
        self.cursor = cursor
        self.heap = heap
        self.limits = limits
    }

    private var file: String { cursor.file }
    private func fail(_ p: String) -> CheckpointError { CheckpointError(file: file, "pickle: " + p) }

    private mutating func push(_ v: PickleValue) throws {
        guard stack.count < limits.maxStack else { throw fail("stack deeper than \(limits.maxStack)") }
        stack.append(v)
    }

    private mutating func pop(_ op: String) throws -> PickleValue {
        guard let v = stack.popLast(), stack.count >= (marks.last ?? 0) else { throw fail("\(op) on an empty stack") }
        return v
    }

    private func top(_ op: String) throws -> PickleValue {
        guard let v = stack.last, stack.count > (marks.last ?? 0) else { throw fail("\(op) on an empty stack") }
        return v
    }

    /// Pops everything above the last MARK.
    private mutating func popMark(_ op: String) throws -> [PickleValue] {
        guard let m = marks.popLast() else { throw fail("\(op) without a MARK") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    private mutating func memoize(_ index: Int) throws {
        guard index >= 0 else { throw fail("negative memo index") }
        if memo[index] == nil, memo.count >= limits.maxMemo { throw fail("memo larger than \(limits.maxMemo)") }
        memo[index] = try top("PUT")
    }

    private mutating func string(_ n: Int, _ what: String) throws -> String {
        let start = try cursor.take(n, what)
        return String(decoding: UnsafeRawBufferPointer(rebasing: cursor.bytes[start..<(start + n)]), as: UTF8.self)
    }

    /// Reads a newline-terminated ASCII line of at most 256 bytes (GLOBAL's operands).
    private mutating func line() throws -> String {
        var bytes: [UInt8] = []
        while true {
            let b = try cursor.u8("GLOBAL operand")
            if b == 0x0A { break }
            bytes.append(b)
            guard bytes.count <= 256 else { throw fail("GLOBAL operand longer than 256 bytes") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private mutating func global(module rawModule: String, name: String) throws -> PickleValue {
        // Protocol-2 pickles spell Python 3 modules the Python 2 way; map them as Python does.
        let module = ["__builtin__": "builtins", "copy_reg": "copyreg"][rawModule] ?? rawModule
        let full = "\(module).\(name)"
        guard let g = PickleGlobal.resolve(module: module, name: name) else {
            throw fail("forbidden global '\(full)' (only tensors, storages and plain containers may be unpickled)")
        }
        return try heap.add(.global(g, full), file: file)
    }

    private func int(_ v: PickleValue, _ what: String) throws -> Int {
        guard case .int(let n) = v else { throw fail("\(what) is a \(heap.kind(v)), not an int") }
        return Int(n)
    }

    private func ints(_ v: PickleValue, _ what: String) throws -> [Int] {
        guard let t = heap.tuple(v) ?? heap.list(v) else { throw fail("\(what) is a \(heap.kind(v)), not a tuple") }
        return try t.map { try int($0, what) }
    }

    private func str(_ v: PickleValue, _ what: String) throws -> String {
        switch v {
        case .string(let s): return s
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        default: throw fail("\(what) is a \(heap.kind(v)), not a str")
        }
    }

    /// BINPERSID: ('storage', storage class or dtype, key, location, numel[, view metadata]).
    private mutating func persistentLoad(_ pid: PickleValue) throws -> PickleValue {
        guard let t = heap.tuple(pid), t.count == 5 || t.count == 6, try str(t[0], "persistent id tag") == "storage" else {
            throw fail("persistent id is not a ('storage', ...) tuple")
        }
        let dtype: TorchDType
        switch heap.object(t[1]) {
        case .global(.storageClass(let d), _)?, .global(.dtype(let d), _)?: dtype = d
        default: throw fail("persistent id names storage type \(heap.kind(t[1]))")
        }
        let key = try str(t[2], "storage key")
        _ = try str(t[3], "storage location")
        let numel = try int(t[4], "storage size")
        guard numel >= 0 else { throw fail("storage '\(key)' has negative size \(numel)") }
        var view: (String, Int, Int)?
        if t.count == 6, case .object = t[5] {
            guard let v = heap.tuple(t[5]), v.count == 3 else { throw fail("storage '\(key)' has malformed view metadata") }
            view = (try str(v[0], "view key"), try int(v[1], "view offset"), try int(v[2], "view size"))
        }
        return try heap.add(.storage(StorageRef(dtype: dtype, key: key, numel: numel, view: view)), file: file)
    }

    private func tensorArgs(_ a: [PickleValue], _ fn: String) throws -> TensorRef {
        guard case .storage(let s)? = heap.object(a[0]) else { throw fail("\(fn): first argument is a \(heap.kind(a[0])), not a storage") }
        return TensorRef(storage: s, offset: try int(a[1], "\(fn) storage offset"),
                         size: try ints(a[2], "\(fn) size"), stride: try ints(a[3], "\(fn) stride"))
    }

    /// REDUCE / NEWOBJ of a whitelisted global on an argument tuple — interpreted, never called.
    private mutating func call(_ callable: PickleValue, _ argsValue: PickleValue, nested: Bool = false) throws -> PickleValue {
        guard case .global(let g, let name)? = heap.object(callable) else {
            throw fail("REDUCE on a \(heap.kind(callable)), not a whitelisted global")
        }
        guard let a = heap.tuple(argsValue) else { throw fail("REDUCE '\(name)': arguments are a \(heap.kind(argsValue)), not a tuple") }
        func arity(_ ok: Bool) throws { if !ok { throw fail("REDUCE '\(name)' with \(a.count) arguments") } }
        switch g {
        case .orderedDict:
            try arity(a.count <= 1)
            heap.dicts.append(PickleDict())
            let d = heap.dicts.count - 1
            if a.count == 1 {
                guard let pairs = heap.list(a[0]) ?? heap.tuple(a[0]) else { throw fail("OrderedDict argument is a \(heap.kind(a[0]))") }
                for p in pairs {
                    guard let kv = heap.tuple(p) ?? heap.list(p), kv.count == 2 else { throw fail("OrderedDict item is not a pair") }
                    heap.dicts[d].set(kv[0], kv[1])
                }
            }
            return try heap.add(.dict(d), file: file)
        case .rebuildTensor:
            try arity(a.count == 4)
            return try heap.add(.tensor(try tensorArgs(a, name)), file: file)
        case .rebuildTensorV2:
            try arity(a.count == 6 || a.count == 7)
            return try heap.add(.tensor(try tensorArgs(a, name)), file: file)
        case .rebuildParameter, .rebuildParameterWithState:
            try arity(a.count == (g == .rebuildParameter ? 3 : 4))
            guard heap.tensor(a[0]) != nil else { throw fail("\(name): data is a \(heap.kind(a[0])), not a tensor") }
            return a[0]
        case .rebuildFromTypeV2:
            try arity(a.count == 4 && !nested)
            guard case .global(.tensorClass, _)? = heap.object(a[1]) else { throw fail("\(name): type is a \(heap.kind(a[1]))") }
            return try call(a[0], a[2], nested: true)
        case .torchSize:
            try arity(a.count == 1)
            guard let items = heap.tuple(a[0]) ?? heap.list(a[0]) else { throw fail("torch.Size of a \(heap.kind(a[0]))") }
            return try heap.add(.tuple(items), file: file)
        case .codecsEncode:
            try arity(a.count == 2)
            let s = try str(a[0], "_codecs.encode text"), encoding = try str(a[1], "_codecs.encode encoding")
            if encoding == "latin1" || encoding == "latin-1" {
                var out: [UInt8] = []
                for u in s.unicodeScalars {
                    guard u.value < 256 else { throw fail("_codecs.encode: text is not latin-1") }
                    out.append(UInt8(u.value))
                }
                return .bytes(out)
            }
            guard encoding == "utf-8" || encoding == "utf8" else { throw fail("_codecs.encode with encoding '\(encoding)'") }
            return .bytes(Array(s.utf8))
        case .namespace:
            return try heap.add(.inert(name), file: file)
        case .storageClass, .dtype, .tensorClass:
            throw fail("REDUCE on '\(name)' is not allowed")
        }
    }

    /// Runs opcodes until STOP and returns the pickled value.
    mutating func load() throws -> PickleValue {
        while true {
            let at = cursor.position
            let op = try cursor.u8("opcode")
            switch op {
            case 0x80:  // PROTO
                let v = try cursor.u8("protocol")
                guard (2...5).contains(v) else { throw fail("unsupported pickle protocol \(v)") }
            case 0x95:  // FRAME: a length hint; the bytes follow inline
                let n = try cursor.u64("FRAME length")
                guard n <= UInt64(cursor.remaining) else { throw fail("FRAME of \(n) bytes exceeds the \(cursor.remaining) left") }
            case 0x2E:  // STOP
                guard marks.isEmpty, stack.count == 1 else { throw fail("STOP with \(stack.count) values on the stack") }
                return stack[0]
            case 0x28:  // MARK
                guard marks.count < limits.maxStack else { throw fail("too many MARKs") }
                marks.append(stack.count)
            case 0x31:  // POP_MARK
                _ = try popMark("POP_MARK")
            case 0x30:  // POP
                _ = try pop("POP")
            case 0x32:  // DUP
                try push(try top("DUP"))
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4B: try push(.int(Int64(try cursor.u8("BININT1"))))  // BININT1
            case 0x4D: try push(.int(Int64(try cursor.u16("BININT2"))))  // BININT2
            case 0x4A: try push(.int(Int64(Int32(bitPattern: try cursor.u32("BININT")))))  // BININT
            case 0x8A, 0x8B:  // LONG1, LONG4: little-endian two's complement
                let n = op == 0x8A ? Int(try cursor.u8("LONG1 length")) : Int(Int32(bitPattern: try cursor.u32("LONG4 length")))
                guard n >= 0 else { throw fail("negative LONG4 length") }
                let b = try cursor.array(n, "LONG bytes")
                if b.count > 8 {
                    try push(.bigInt(b))
                } else {
                    var v: UInt64 = 0
                    for (i, x) in b.enumerated() { v |= UInt64(x) << (8 * UInt64(i)) }
                    if let last = b.last, last & 0x80 != 0, b.count < 8 { v |= ~0 << (8 * UInt64(b.count)) }
                    try push(.int(Int64(bitPattern: v)))
                }
            case 0x47:  // BINFLOAT: big-endian double
                let start = try cursor.take(8, "BINFLOAT")
                let bits = UInt64(bigEndian: cursor.bytes.loadUnaligned(fromByteOffset: start, as: UInt64.self))
                try push(.float(Double(bitPattern: bits)))
            case 0x58: try push(.string(try string(Int(try cursor.u32()), "BINUNICODE")))
            case 0x8C: try push(.string(try string(Int(try cursor.u8()), "SHORT_BINUNICODE")))
            case 0x8D: try push(.string(try string(try checkedInt(try cursor.u64(), file: file, "BINUNICODE8 length"), "BINUNICODE8")))
            case 0x54:  // BINSTRING (Python 2 str)
                let n = Int(Int32(bitPattern: try cursor.u32()))
                guard n >= 0 else { throw fail("negative BINSTRING length") }
                try push(.string(try string(n, "BINSTRING")))
            case 0x55: try push(.string(try string(Int(try cursor.u8()), "SHORT_BINSTRING")))
            case 0x42: try push(.bytes(try cursor.array(Int(try cursor.u32()), "BINBYTES")))
            case 0x43: try push(.bytes(try cursor.array(Int(try cursor.u8()), "SHORT_BINBYTES")))
            case 0x8E, 0x96:  // BINBYTES8, BYTEARRAY8
                try push(.bytes(try cursor.array(try checkedInt(try cursor.u64(), file: file, "BINBYTES8 length"), "BINBYTES8")))
            case 0x7D:  // EMPTY_DICT
                heap.dicts.append(PickleDict())
                try push(try heap.add(.dict(heap.dicts.count - 1), file: file))
            case 0x5D:  // EMPTY_LIST
                heap.lists.append([])
                try push(try heap.add(.list(heap.lists.count - 1), file: file))
            case 0x29: try push(try heap.add(.tuple([]), file: file))  // EMPTY_TUPLE
            case 0x74: try push(try heap.add(.tuple(try popMark("TUPLE")), file: file))  // TUPLE
            case 0x85, 0x86, 0x87:  // TUPLE1-3
                let n = Int(op - 0x84)
                var items: [PickleValue] = []
                for _ in 0..<n { items.append(try pop("TUPLE\(n)")) }
                try push(try heap.add(.tuple(items.reversed()), file: file))
            case 0x71: try memoize(Int(try cursor.u8("BINPUT")))
            case 0x72: try memoize(Int(try cursor.u32("LONG_BINPUT")))
            case 0x94: try memoize(memo.count)  // MEMOIZE
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let i = op == 0x68 ? Int(try cursor.u8("BINGET")) : Int(try cursor.u32("LONG_BINGET"))
                guard let v = memo[i] else { throw fail("memo entry \(i) is not defined") }
                try push(v)
            case 0x63:  // GLOBAL
                let module = try line(), name = try line()
                try push(try global(module: module, name: name))
            case 0x93:  // STACK_GLOBAL
                let name = try str(try pop("STACK_GLOBAL"), "STACK_GLOBAL name")
                let module = try str(try pop("STACK_GLOBAL"), "STACK_GLOBAL module")
                try push(try global(module: module, name: name))
            case 0x51:  // BINPERSID
                try push(try persistentLoad(try pop("BINPERSID")))
            case 0x52:  // REDUCE
                let args = try pop("REDUCE"), callable = try pop("REDUCE")
                try push(try call(callable, args))
            case 0x81:  // NEWOBJ: cls.__new__(cls, *args)
                let args = try pop("NEWOBJ"), cls = try pop("NEWOBJ")
                try push(try newObject(cls, args, "NEWOBJ"))
            case 0x92:  // NEWOBJ_EX
                _ = try pop("NEWOBJ_EX")
                let args = try pop("NEWOBJ_EX"), cls = try pop("NEWOBJ_EX")
                try push(try newObject(cls, args, "NEWOBJ_EX"))
            case 0x62:  // BUILD: state is recorded nowhere (OrderedDict _metadata, Namespace fields)
                let state = try pop("BUILD")
                let target = try top("BUILD")
                switch heap.object(target) {
                case .dict?, .inert?, .tensor?: _ = state
                default: throw fail("BUILD on a \(heap.kind(target)) is not allowed")
                }
            case 0x61:  // APPEND
                let v = try pop("APPEND")
                try append([v], to: try top("APPEND"))
            case 0x65:  // APPENDS
                let items = try popMark("APPENDS")
                try append(items, to: try top("APPENDS"))
            case 0x73:  // SETITEM
                let v = try pop("SETITEM"), k = try pop("SETITEM")
                try setItems([k, v], in: try top("SETITEM"))
            case 0x75:  // SETITEMS
                let items = try popMark("SETITEMS")
                guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of values") }
                try setItems(items, in: try top("SETITEMS"))
            default:
                throw fail("opcode 0x\(String(op, radix: 16)) at offset \(at) is not supported")
            }
        }
    }

    private mutating func newObject(_ cls: PickleValue, _ args: PickleValue, _ op: String) throws -> PickleValue {
        switch heap.object(cls) {
        case .global(.namespace, _)?, .global(.orderedDict, _)?: return try call(cls, args)
        default: throw fail("\(op) on a \(heap.kind(cls)) is not allowed")
        }
    }

    private func append(_ items: [PickleValue], to target: PickleValue) throws {
        guard case .list(let l)? = heap.object(target) else { throw fail("APPEND to a \(heap.kind(target))") }
        heap.lists[l].append(contentsOf: items)
    }

    private func setItems(_ items: [PickleValue], in target: PickleValue) throws {
        guard case .dict(let d)? = heap.object(target) else { throw fail("SETITEM on a \(heap.kind(target))") }
        var i = 0
        while i + 1 < items.count {
            heap.dicts[d].set(items[i], items[i + 1])
            i += 2
        }
    }
}
