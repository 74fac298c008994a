// A small, strictly bounds-checked ZIP reader for PyTorch's zip checkpoints (torch >= 1.6).
//
// torch.save writes an uncompressed ("stored") archive with a zip64 end record, so this reader
// handles exactly that family: end-of-central-directory search, zip64 locator and record, the
// central directory, local headers and stored entries. Compressed, encrypted or multi-disk
// archives are refused with an error. Every offset and length read from the file is checked
// against the buffer with overflow-checked arithmetic before it is used, so a corrupt or hostile
// file yields a `CheckpointError`, never a trap.

import Foundation

/// Bounds-checked little-endian reads over a byte buffer; every failure throws `CheckpointError`.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    let file: String
    var position: Int
    let end: Int

    init(_ bytes: UnsafeRawBufferPointer, file: String, range: Range<Int>? = nil) {
        self.bytes = bytes
        self.file = file
        position = range?.lowerBound ?? 0
        end = range?.upperBound ?? bytes.count
    }

    var remaining: Int { end - position }

    func error(_ problem: String) -> CheckpointError { CheckpointError(file: file, problem) }

    /// Reserves `n` bytes and returns their start offset.
    mutating func take(_ n: Int, _ what: @autoclosure () -> String) throws -> Int {
        guard n >= 0, n <= remaining else {
            throw error("truncated: \(what()) needs \(n) bytes at offset \(position), \(max(remaining, 0)) left")
        }
        defer { position += n }
        return position
    }

    mutating func u8(_ what: @autoclosure () -> String = "a byte") throws -> UInt8 {
        bytes[try take(1, what())]
    }

    mutating func u16(_ what: @autoclosure () -> String = "a 16-bit field") throws -> UInt16 {
        UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(2, what()), as: UInt16.self))
    }

    mutating func u32(_ what: @autoclosure () -> String = "a 32-bit field") throws -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(4, what()), as: UInt32.self))
    }

    mutating func u64(_ what: @autoclosure () -> String = "a 64-bit field") throws -> UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(8, what()), as: UInt64.self))
    }

    /// The next `n` bytes as an array.
    mutating func array(_ n: Int, _ what: @autoclosure () -> String) throws -> [UInt8] {
        let start = try take(n, what())
        return Array(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + n)]))
    }
}

/// Converts a file-supplied unsigned size to `Int`, refusing values beyond `Int.max`.
func checkedInt(_ v: UInt64, file: String, _ what: String) throws -> Int {
    guard v <= UInt64(Int.max) else { throw CheckpointError(file: file, "\(what) \(v) is too large") }
    return Int(v)
}

/// The table-driven CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) that ZIP records.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }
}

/// One file of a ZIP archive: its name and where its (stored) bytes lie in the buffer.
struct ZipEntry {
    let name: String
    /// Byte range of the entry's contents in the archive buffer.
    let range: Range<Int>
    let crc32: UInt32
}

/// The entries of a stored-only ZIP archive held in memory.
struct ZipArchive {
    private(set) var entries: [ZipEntry] = []
    private var index: [String: Int] = [:]
    let file: String

    /// At most this many entries are accepted (a checkpoint has one per storage, plus a few).
    static let maxEntries = 1 << 20

    func entry(_ name: String) -> ZipEntry? { index[name].map { entries[$0] } }

    /// Whether the buffer starts like a ZIP archive (a local header, or the end record of an empty one).
    static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 4 else { return false }
        return bytes[0] == 0x50 && bytes[1] == 0x4B && ((bytes[2], bytes[3]) == (3, 4) || (bytes[2], bytes[3]) == (5, 6))
    }

    init(_ bytes: UnsafeRawBufferPointer, file: String) throws {
        self.file = file
        func fail(_ p: String) -> CheckpointError { CheckpointError(file: file, "zip: " + p) }
        let count = bytes.count

        // End of central directory: 22 bytes + a comment of up to 65535 bytes at the very end.
        guard count >= 22 else { throw fail("too short for an end-of-central-directory record") }
        var eocd = -1
        var p = count - 22
        let lowest = max(0, count - 22 - 0xFFFF)
        while p >= lowest {
            if bytes[p] == 0x50, bytes[p + 1] == 0x4B, bytes[p + 2] == 5, bytes[p + 3] == 6 {
                let commentLength = Int(bytes[p + 20]) | Int(bytes[p + 21]) << 8
                if p + 22 + commentLength <= count { eocd = p; break }
            }
            p -= 1
        }
        guard eocd >= 0 else { throw fail("no end-of-central-directory record (not a zip archive, or truncated)") }

        var c = ByteCursor(bytes, file: file, range: (eocd + 4)..<count)
        let disk = try c.u16(), cdDisk = try c.u16()
        let entriesOnDisk = try c.u16(), totalEntries16 = try c.u16()
        let cdSize32 = try c.u32(), cdOffset32 = try c.u32()
        var totalEntries = UInt64(totalEntries16), cdSize = UInt64(cdSize32), cdOffset = UInt64(cdOffset32)
        guard disk == 0, cdDisk == 0, entriesOnDisk == totalEntries16 else { throw fail("multi-disk archives are not supported") }

        // Zip64: a 20-byte locator right before the end record points at the zip64 end record.
        if eocd >= 20, bytes[eocd - 20] == 0x50, bytes[eocd - 19] == 0x4B, bytes[eocd - 18] == 6, bytes[eocd - 17] == 7 {
            var l = ByteCursor(bytes, file: file, range: (eocd - 16)..<eocd)
            let locatorDisk = try l.u32()
            let recordOffset = try checkedInt(try l.u64(), file: file, "zip64 end record offset")
            let disks = try l.u32()
            guard locatorDisk == 0, disks <= 1 else { throw fail("multi-disk zip64 archives are not supported") }
            guard recordOffset <= eocd - 20, eocd - 20 - recordOffset >= 56 else {
                throw fail("zip64 end record offset \(recordOffset) is out of range")
            }
            var r = ByteCursor(bytes, file: file, range: recordOffset..<(eocd - 20))
            guard try r.u32() == 0x0606_4B50 else { throw fail("bad zip64 end record signature") }
            _ = try r.u64()  // size of the rest of the record
            _ = try r.u16(); _ = try r.u16()  // versions
            let d = try r.u32(), cd = try r.u32()
            let onDisk = try r.u64()
            totalEntries = try r.u64()
            cdSize = try r.u64()
            cdOffset = try r.u64()
            guard d == 0, cd == 0, onDisk == totalEntries else { throw fail("multi-disk zip64 archives are not supported") }
        } else if totalEntries16 == 0xFFFF || cdSize32 == 0xFFFF_FFFF || cdOffset32 == 0xFFFF_FFFF {
            throw fail("the end record asks for zip64 but no zip64 locator precedes it")
        }

        let n = try checkedInt(totalEntries, file: file, "entry count")
        let cdStart = try checkedInt(cdOffset, file: file, "central directory offset")
        let cdLength = try checkedInt(cdSize, file: file, "central directory size")
        guard n <= ZipArchive.maxEntries else { throw fail("\(n) entries exceed the limit of \(ZipArchive.maxEntries)") }
        guard cdStart <= count, cdLength <= count - cdStart else {
            throw fail("central directory (offset \(cdStart), \(cdLength) bytes) lies outside the \(count)-byte file")
        }
        guard n <= cdLength / 46 else { throw fail("\(n) entries cannot fit in a \(cdLength)-byte central directory") }

        var d = ByteCursor(bytes, file: file, range: cdStart..<(cdStart + cdLength))
        entries.reserveCapacity(n)
        for i in 0..<n {
            guard try d.u32("central directory entry \(i)") == 0x0201_4B50 else {
                throw fail("central directory entry \(i) has a bad signature")
            }
            _ = try d.u16(); _ = try d.u16()  // versions
            let flags = try d.u16(), method = try d.u16()
            _ = try d.u16(); _ = try d.u16()  // time, date
            let crc = try d.u32()
            var compressed = UInt64(try d.u32()), uncompressed = UInt64(try d.u32())
            let nameLength = Int(try d.u16()), extraLength = Int(try d.u16()), commentLength = Int(try d.u16())
            let startDisk = try d.u16()
            _ = try d.u16(); _ = try d.u32()  // attributes
            var localOffset = UInt64(try d.u32())
            let nameBytes = try d.array(nameLength, "entry \(i) name")
            let name = String(decoding: nameBytes, as: UTF8.self)
            var e = ByteCursor(bytes, file: file, range: try d.take(extraLength, "entry \(i) extra field")..<d.position)
            _ = try d.take(commentLength, "entry \(i) comment")
            // Zip64 extended information: only the fields whose 32-bit value is saturated, in order.
            while e.remaining >= 4 {
                let id = try e.u16(), size = Int(try e.u16())
                var x = ByteCursor(bytes, file: file, range: try e.take(size, "extra block of '\(name)'")..<e.position)
                if id == 0x0001 {
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try x.u64("zip64 size of '\(name)'") }
                    if compressed == 0xFFFF_FFFF { compressed = try x.u64("zip64 compressed size of '\(name)'") }
                    if localOffset == 0xFFFF_FFFF { localOffset = try x.u64("zip64 offset of '\(name)'") }
                }
            }
            guard startDisk == 0 || startDisk == 0xFFFF else { throw fail("entry '\(name)' starts on another disk") }
            guard flags & 1 == 0 else { throw fail("entry '\(name)' is encrypted") }
            guard method == 0 else {
                throw fail("entry '\(name)' is compressed (method \(method)); only stored entries are supported, as torch.save writes them")
            }
            guard compressed == uncompressed else { throw fail("stored entry '\(name)' has different compressed and plain sizes") }
            let size = try checkedInt(uncompressed, file: file, "size of '\(name)'")
            let local = try checkedInt(localOffset, file: file, "offset of '\(name)'")

            // The local header repeats the name and may carry its own (alignment) extra field.
            guard local <= count else { throw fail("entry '\(name)' has local header offset \(local) beyond the file") }
            var h = ByteCursor(bytes, file: file, range: local..<count)
            guard try h.u32("local header of '\(name)'") == 0x0403_4B50 else { throw fail("entry '\(name)' has a bad local header signature") }
            _ = try h.take(22, "local header of '\(name)'")
            let localName = Int(try h.u16()), localExtra = Int(try h.u16())
            _ = try h.take(localName, "local name of '\(name)'")
            _ = try h.take(localExtra, "local extra field of '\(name)'")
            let start = h.position
            guard size <= count - start else {
                throw fail("entry '\(name)' (\(size) bytes at offset \(start)) runs past the end of the file")
            }
            guard index[name] == nil else { throw fail("duplicate entry '\(name)'") }
            index[name] = entries.count
            entries.append(ZipEntry(name: name, range: start..<(start + size), crc32: crc))
        }
    }
}
