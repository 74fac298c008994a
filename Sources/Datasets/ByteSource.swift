// Reading a file front to back, raw or gzip-compressed, in bounded memory: the IDX reader pulls
// its header first, then exactly the bytes the header announces, so a hostile or corrupt `.gz`
// can never inflate to more than the dataset it claims to hold.

import CZlib
import Foundation

/// A forward-only stream of file bytes. `read` fills as much of `buffer` as it can and returns the
/// count; fewer than `buffer.count` means end of data.
protocol ByteSource: AnyObject {
    var path: String { get }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

extension ByteSource {
    /// Reads exactly `count` bytes or throws, naming the file and what was being read.
    func readExactly(_ count: Int, what: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { try read(into: $0) }
        guard n == count else {
            throw DatasetError("\(path): truncated: \(what) needs \(count) bytes, found only \(n)")
        }
        return bytes
    }

    /// True when no byte is left.
    func atEnd() throws -> Bool {
        var one: UInt8 = 0
        return try withUnsafeMutableBytes(of: &one) { try read(into: $0) } == 0
    }
}

/// Opens `path`; gzip data (magic `1F 8B`) is inflated on the fly, anything else is read as is.
func openByteSource(_ path: String) throws -> ByteSource {
    let file = try RawFileSource(path)
    var magic: [UInt8] = [0, 0]
    let n = try magic.withUnsafeMutableBytes { try file.read(into: $0) }
    if n == 2 && magic == [0x1F, 0x8B] {
        return try GzipFileSource(file, prefix: magic)
    }
    file.pushBack(Array(magic[0..<n]))
    return file
}

/// Plain buffered reads through stdio.
final class RawFileSource: ByteSource {
    let path: String
    private let file: UnsafeMutablePointer<FILE>
    private var pending: [UInt8] = []

    init(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw DatasetError("\(path): is a directory, expected a file")
        }
        guard let f = fopen(path, "rb") else {
            throw DatasetError("\(path): cannot open: " + String(cString: strerror(errno)))
        }
        self.path = path
        file = f
    }

    deinit { fclose(file) }

    /// Bytes handed out again before the file's next bytes.
    func pushBack(_ bytes: [UInt8]) { pending = bytes + pending }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        var done = 0
        if !pending.isEmpty {
            done = min(pending.count, buffer.count)
            pending.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: done) }
            pending.removeFirst(done)
        }
        while done < buffer.count {
            let n = fread(base + done, 1, buffer.count - done, file)
            done += n
            if n == 0 {
                if ferror(file) != 0 { throw DatasetError("\(path): read error: " + String(cString: strerror(errno))) }
                break
            }
        }
        return done
    }
}

/// zlib `inflate` over a `RawFileSource`, 256 KiB of compressed input at a time. Concatenated
/// gzip members are read as one stream (as `gzip -d` and Python's `gzip` do).
final class GzipFileSource: ByteSource {
    let path: String
    private let file: RawFileSource
    private var stream = z_stream()
    private var input: UnsafeMutablePointer<UInt8>
    private let inputCapacity = 1 << 18
    private var inputEnd = false
    private var streamEnded = false

    init(_ file: RawFileSource, prefix: [UInt8]) throws {
        self.file = file
        path = file.path
        file.pushBack(prefix)
        input = .allocate(capacity: inputCapacity)
        // 15 + 16: gzip wrapper only, 32 KiB window. (`inflateInit2` is a C macro over this.)
        let status = inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            input.deallocate()
            throw DatasetError("\(path): zlib initialisation failed (\(status))")
        }
    }

    deinit {
        inflateEnd(&stream)
        input.deallocate()
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        var done = 0
        while done < buffer.count {
            if stream.avail_in == 0 && !inputEnd {
                let n = try file.read(into: UnsafeMutableRawBufferPointer(start: input, count: inputCapacity))
                if n < inputCapacity { inputEnd = true }
                stream.next_in = input
                stream.avail_in = UInt32(n)
            }
            if streamEnded {
                // A finished member: another one may follow; otherwise this is the end.
                if stream.avail_in == 0 { return done }
                guard inflateReset(&stream) == Z_OK else { throw DatasetError("\(path): zlib reset failed") }
                streamEnded = false
            }
            let want = min(buffer.count - done, Int(UInt32.max))
            stream.next_out = (base + done).assumingMemoryBound(to: UInt8.self)
            stream.avail_out = UInt32(want)
            let status = inflate(&stream, Z_NO_FLUSH)
            let produced = want - Int(stream.avail_out)
            done += produced
            switch status {
            case Z_STREAM_END:
                streamEnded = true
            case Z_OK:
                break
            case Z_BUF_ERROR where stream.avail_in == 0 && inputEnd:
                throw DatasetError("\(path): truncated gzip data (the compressed stream ends early)")
            case Z_BUF_ERROR:
                break
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                throw DatasetError("\(path): corrupt gzip data: \(message)")
            }
            if produced == 0 && stream.avail_in == 0 && inputEnd && !streamEnded {
                throw DatasetError("\(path): truncated gzip data (the compressed stream ends early)")
            }
        }
        return done
    }
}
