// safetensors (huggingface/safetensors format): an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}},
// then the data section. Offsets are relative to the data section.
//
// The reader validates the whole header before reading one tensor byte: header length within the
// file, well-formed JSON (our own strict parser: duplicate names are errors, not last-one-wins),
// known dtypes, shape × dtype size = byte range (overflow-checked), ranges inside the data
// section, no two ranges overlapping. Files are memory-mapped; only the tensors' bytes are read.

import Foundation
import TensorCore
#if canImport(Glibc)
import Glibc
#endif

public enum SafeTensors {
    /// Element types. Floating types convert to float32 on reading (F64 rounds; F16/BF16 exactly);
    /// integer and bool tensors (e.g. timm's `num_batches_tracked`, I64) convert to float32 too.
    public enum DType: String, Sendable, CaseIterable {
        case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL

        public var size: Int {
            switch self {
            case .F64, .I64: 8
            case .F32, .I32: 4
            case .F16, .BF16, .I16: 2
            case .I8, .U8, .BOOL: 1
            }
        }
    }

    /// The storage type `write` uses for every tensor.
    public enum StorageType: Sendable { case float32, float16 }

    /// Headers larger than this are refused (the reference implementation's limit).
    static let maxHeaderBytes = 100_000_000

    /// Reads every tensor of the file at `url` (memory-mapped).
    public static func read(_ url: URL) throws -> StateDict {
        let name = url.path
        let fd = open(name, O_RDONLY)
        guard fd >= 0 else { throw CheckpointError(file: name, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw CheckpointError(file: name, "cannot stat: \(String(cString: strerror(errno)))") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw CheckpointError(file: name, "is a directory, not a safetensors file") }
        let size = Int(st.st_size)
        if size == 0 { return try read(bytes: UnsafeRawBufferPointer(start: nil, count: 0), name: name) }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw CheckpointError(file: name, "cannot map: \(String(cString: strerror(errno)))")
        }
        defer { munmap(base, size) }
        return try read(bytes: UnsafeRawBufferPointer(start: base, count: size), name: name)
    }

    /// A tensor's entry in a header, validated.
    public struct Entry: Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range within the data section.
        public let begin: Int, end: Int
    }

    /// Parses and validates the header of a safetensors image: entries in data order, and metadata.
    public static func header(bytes: UnsafeRawBufferPointer, name: String) throws -> (entries: [Entry], metadata: [String: String], dataStart: Int) {
        func fail(_ problem: String) -> CheckpointError { CheckpointError(file: name, problem) }
        func fail(_ tensor: String, _ problem: String) -> CheckpointError { CheckpointError(file: name, tensor: tensor, problem) }
        guard bytes.count >= 8 else { throw fail("file is \(bytes.count) bytes, too short for a safetensors header (8-byte length prefix)") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n <= UInt64(bytes.count - 8) else {
            throw fail("header length \(n) runs past the end of the file (\(bytes.count - 8) bytes after the length prefix); truncated or not safetensors")
        }
        guard n <= UInt64(maxHeaderBytes) else { throw fail("header length \(n) exceeds the \(maxHeaderBytes)-byte limit") }
        guard n >= 2 else { throw fail("header length \(n) is too short for a JSON object") }
        let headerLength = Int(n), dataStart = 8 + headerLength, dataSize = bytes.count - dataStart
        let json: JSONValue
        do {
            var parser = JSONParser(UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart]))
            json = try parser.parseDocument()
        } catch let e as JSONParser.Failure {
            throw fail("malformed JSON header: \(e.message) at byte \(e.offset + 8)")
        }
        guard case .object(let fields) = json else { throw fail("header is not a JSON object") }
        var entries: [Entry] = []
        var metadata: [String: String] = [:]
        for (key, value) in fields {
            if key == "__metadata__" {
                guard case .object(let m) = value else { throw fail("__metadata__ is not an object of strings") }
                for (k, v) in m {
                    guard case .string(let s) = v else { throw fail("__metadata__ value for '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard case .object(let info) = value else { throw fail(key, "entry is not a JSON object") }
            var dtype: DType?, shape: [Int]?, offsets: [Int]?
            for (field, v) in info {
                switch field {
                case "dtype":
                    guard case .string(let s) = v else { throw fail(key, "dtype is not a string") }
                    guard let d = DType(rawValue: s) else {
                        throw fail(key, "unsupported dtype '\(s)' (known: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
                    }
                    dtype = d
                case "shape":
                    guard let dims = v.integers, dims.count <= 8 else { throw fail(key, "shape is not a list of at most 8 non-negative integers") }
                    shape = dims
                case "data_offsets":
                    guard let o = v.integers, o.count == 2 else { throw fail(key, "data_offsets is not a pair of non-negative integers") }
                    offsets = o
                default:
                    throw fail(key, "unknown field '\(field)'")
                }
            }
            guard let dtype else { throw fail(key, "missing dtype") }
            guard let shape else { throw fail(key, "missing shape") }
            guard let offsets else { throw fail(key, "missing data_offsets") }
            var count = 1
            for d in shape {
                let (c, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw fail(key, "shape \(shape) has too many elements") }
                count = c
            }
            let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.size)
            guard !overflow else { throw fail(key, "shape \(shape) has too many elements") }
            let (begin, end) = (offsets[0], offsets[1])
            guard begin <= end else { throw fail(key, "data_offsets [\(begin), \(end)] run backwards") }
            guard end - begin == byteCount else {
                throw fail(key, "shape \(shape) × \(dtype.rawValue) needs \(byteCount) bytes but data_offsets [\(begin), \(end)] hold \(end - begin)")
            }
            guard end <= dataSize else {
                throw fail(key, "data_offsets [\(begin), \(end)] run past the data section (\(dataSize) bytes); truncated file?")
            }
            entries.append(Entry(name: key, dtype: dtype, shape: shape, begin: begin, end: end))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for (a, b) in zip(entries, entries.dropFirst()) where b.begin < a.end {
            throw fail(b.name, "bytes [\(b.begin), \(b.end)) overlap those of '\(a.name)' [\(a.begin), \(a.end))")
        }
        return (entries, metadata, dataStart)
    }

    /// Reads every tensor of a safetensors image held in memory; `name` labels errors.
    public static func read(bytes: UnsafeRawBufferPointer, name: String) throws -> StateDict {
        let (entries, metadata, dataStart) = try header(bytes: bytes, name: name)
        var result = StateDict(metadata: metadata)
        for e in entries {
            var t = Tensor(uninitializedShape: e.shape)
            let src = UnsafeRawBufferPointer(rebasing: bytes[(dataStart + e.begin)..<(dataStart + e.end)])
            t.withUnsafeMutablePointer { convert(src, e.dtype, into: $0, count: e.end - e.begin == 0 ? 0 : (e.end - e.begin) / e.dtype.size) }
            result[e.name] = t
        }
        return result
    }

    /// Decodes `count` little-endian elements of `dtype` to float32.
    static func convert(_ src: UnsafeRawBufferPointer, _ dtype: DType, into dst: UnsafeMutablePointer<Float>, count: Int) {
        func load<T: FixedWidthInteger>(_: T.Type, _ i: Int) -> T { T(littleEndian: src.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
        switch dtype {
        case .F32: for i in 0..<count { dst[i] = Float(bitPattern: load(UInt32.self, i)) }
        case .F64: for i in 0..<count { dst[i] = Float(Double(bitPattern: load(UInt64.self, i))) }
        case .F16: for i in 0..<count { dst[i] = Float(Float16(bitPattern: load(UInt16.self, i))) }
        case .BF16: for i in 0..<count { dst[i] = Float(bitPattern: UInt32(load(UInt16.self, i)) << 16) }
        case .I64: for i in 0..<count { dst[i] = Float(load(Int64.self, i)) }
        case .I32: for i in 0..<count { dst[i] = Float(load(Int32.self, i)) }
        case .I16: for i in 0..<count { dst[i] = Float(load(Int16.self, i)) }
        case .I8: for i in 0..<count { dst[i] = Float(Int8(bitPattern: src[i])) }
        case .U8: for i in 0..<count { dst[i] = Float(src[i]) }
        case .BOOL: for i in 0..<count { dst[i] = src[i] == 0 ? 0 : 1 }
        }
    }

    /// The bytes of a safetensors file holding `state` (tensors in its order, metadata keys sorted):
    /// the same state gives the same bytes.
    public static func encode(_ state: StateDict, as storage: StorageType = .float32) -> [UInt8] {
        let dtype: DType = storage == .float32 ? .F32 : .F16
        var header = "{"
        if !state.metadata.isEmpty {
            header += "\"__metadata__\":{" + state.metadata.sorted { $0.key < $1.key }
                .map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",") + "}"
        }
        var offset = 0
        for (i, (key, t)) in state.entries.enumerated() {
            let size = t.count * dtype.size
            header += (i > 0 || !state.metadata.isEmpty ? "," : "")
                + "\(jsonString(key)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + size)]}"
            offset += size
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        for (_, t) in state.entries {
            t.withUnsafePointer { p in
                for i in 0..<t.count {
                    if storage == .float32 {
                        withUnsafeBytes(of: p[i].bitPattern.littleEndian) { out.append(contentsOf: $0) }
                    } else {
                        withUnsafeBytes(of: Float16(p[i]).bitPattern.littleEndian) { out.append(contentsOf: $0) }
                    }
                }
            }
        }
        return out
    }

    /// Writes `state` to `url` atomically (see `AtomicFile`).
    public static func write(_ state: StateDict, to url: URL, as storage: StorageType = .float32) throws {
        try AtomicFile.write(encode(state, as: storage), to: url)
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

/// Writes a file so that a crash, a kill or a full disk never leaves it half-written: the bytes go
/// to a temporary file in the same directory, which is fsynced and then renamed over the target
/// (and the directory fsynced), so readers see either the old file or the complete new one.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to url: URL) throws {
        let path = url.path
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        func fail(_ what: String) -> CheckpointError {
            CheckpointError(file: path, "\(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { throw fail("cannot create a temporary file in \(dir)") }
        do {
            try bytes.withUnsafeBytes { buf in
                var done = 0
                while done < buf.count {
                    let n = Glibc.write(fd, buf.baseAddress! + done, buf.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw fail("cannot write (\(done) of \(buf.count) bytes written)")
                    }
                    done += n
                }
            }
            guard fsync(fd) == 0 else { throw fail("cannot flush to disk") }
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        guard close(fd) == 0 else {
            let e = fail("cannot close")
            unlink(tmp)
            throw e
        }
        guard rename(tmp, path) == 0 else {
            let e = fail("cannot rename the temporary file into place")
            unlink(tmp)
            throw e
        }
        let dfd = open(dir, O_RDONLY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }
}
