// safetensors: values of every dtype against hand-computed ones, the validation rules one by
// one, the state-dict round trip, strict loading, and a mutation fuzz test.

import Foundation
import Testing
import _TestSupport
@testable import Checkpoints
import Models
import NN
import TensorCore

/// A safetensors image from a header object (as JSON text) and raw data bytes.
func safetensorsImage(_ header: String, _ data: [UInt8], headerLength: UInt64? = nil) -> [UInt8] {
    var h = Array(header.utf8)
    while h.count % 8 != 0 { h.append(0x20) }
    var out: [UInt8] = []
    withUnsafeBytes(of: (headerLength ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    return out + h + data
}

func readImage(_ bytes: [UInt8], name: String = "t.safetensors") throws -> StateDict {
    try bytes.withUnsafeBytes { try SafeTensors.read(bytes: $0, name: name) }
}

/// The message a read fails with, or nil when it succeeds.
func failure(_ bytes: [UInt8]) -> String? {
    do { _ = try readImage(bytes); return nil } catch { return "\(error)" }
}

@Suite("safetensors")
struct SafeTensorsTests {
    @Test func everyDTypeDecodesToHandComputedValues() throws {
        // F16 0x3C00 = 1, 0xC000 = -2; BF16 0x3F80 = 1, 0x4049 = 3.140625; F64 0.1 rounds to
        // Float(0.1); I64 -3; U8 255; BOOL 0/1.
        var data: [UInt8] = [0x00, 0x3C, 0x00, 0xC0, 0x80, 0x3F, 0x49, 0x40]
        withUnsafeBytes(of: (0.1 as Double).bitPattern.littleEndian) { data += $0 }
        withUnsafeBytes(of: Int64(-3).littleEndian) { data += $0 }
        data += [255, 0, 1]
        let header = #"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},"# +
            #""d":{"dtype":"F64","shape":[],"data_offsets":[8,16]},"i":{"dtype":"I64","shape":[1,1],"data_offsets":[16,24]},"# +
            #""u":{"dtype":"U8","shape":[1],"data_offsets":[24,25]},"z":{"dtype":"BOOL","shape":[2],"data_offsets":[25,27]},"# +
            #""__metadata__":{"format":"pt"}}"#
        let s = try readImage(safetensorsImage(header, data))
        #expect(s.keys == ["h", "b", "d", "i", "u", "z"])
        #expect(s["h"]!.scalars == [1, -2])
        #expect(s["b"]!.scalars == [1, 3.140625])
        #expect(s["d"]!.scalars == [Float(0.1)] && s["d"]!.shape == [])
        #expect(s["i"]!.scalars == [-3] && s["i"]!.shape == [1, 1])
        #expect(s["u"]!.scalars == [255])
        #expect(s["z"]!.scalars == [0, 1])
        #expect(s.metadata == ["format": "pt"])
    }

    /// Each rule, each with the message a user sees.
    @Test(arguments: [
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4, "run past the data section"),
        (#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, "needs 12 bytes"),
        (#"{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#, 8, "unsupported dtype 'F8_E4M3'"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "duplicate name 'a'"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "overlap"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, 8, "run backwards"),
        (#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, 8, "too many elements"),
        (#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 8, "shape is not a list"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]"#, 8, "malformed JSON"),
        (#"[1,2]"#, 8, "not a JSON object"),
        (#"{"a":{"dtype":"F32","shape":[1]}}"#, 8, "missing data_offsets"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#, 8, "unknown field 'x'"),
        (#"{"__metadata__":{"k":1}}"#, 0, "not a string"),
    ])
    func validationRules(_ c: (String, Int, String)) {
        let message = failure(safetensorsImage(c.0, [UInt8](repeating: 0, count: c.1)))
        #expect(message?.contains(c.2) == true, "\(message ?? "no error")")
        #expect(message?.hasPrefix("t.safetensors: ") == true)
    }

    @Test func headerLengthBeyondTheFileAndShortFiles() {
        #expect(failure([1, 2, 3])?.contains("too short") == true)
        #expect(failure(safetensorsImage("{}", [], headerLength: 1 << 40))?.contains("runs past the end of the file") == true)
        #expect(failure(safetensorsImage("{}", [], headerLength: UInt64.max))?.contains("runs past the end") == true)
    }

    @Test func missingFileAndDirectoryAreClearErrors() {
        #expect(throws: CheckpointError.self) { try SafeTensors.read(URL(fileURLWithPath: "/nonexistent/w.safetensors")) }
        do { _ = try SafeTensors.read(URL(fileURLWithPath: "/tmp")); Issue.record("no error") } catch {
            #expect("\(error)".contains("directory"))
        }
    }

    /// export → load → export gives the same bytes; float16 storage round-trips to within half precision.
    @Test func stateDictRoundTripIsByteIdentical() throws {
        let a = try ModelRegistry.create("seresnet20", ModelOptions(seed: 1))
        let b = try ModelRegistry.create("seresnet20", ModelOptions(seed: 2))
        let url = processScratchDirectory("senet-checkpoints").appendingPathComponent("roundtrip.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensors.write(a.stateDict(metadata: ["model": "seresnet20"]), to: url)
        let first = try Data(contentsOf: url)
        let loaded = try SafeTensors.read(url)
        #expect(loaded.metadata["model"] == "seresnet20")
        let report = try b.load(loaded)
        #expect(report.isComplete && report.loaded.count == a.namedParameters().count)
        try SafeTensors.write(b.stateDict(metadata: ["model": "seresnet20"]), to: url)
        #expect(try Data(contentsOf: url) == first)
        let half = try readImage(SafeTensors.encode(a.stateDict(), as: .float16))
        for (k, t) in a.stateDict().entries {
            expectClose(half[k]!, t, rtol: 1e-3, atol: 1e-4)
        }
    }

    @Test func strictLoadListsEveryProblemInOneError() throws {
        let model = try ModelRegistry.create("seresnet20")
        var state = model.stateDict()
        state["layer1.0.se.fc1.weight"] = nil
        state["layer1.0.extra.weight"] = Tensor.zeros([3])
        state["fc.weight"] = Tensor.zeros([5, 64])
        state["bn1.num_batches_tracked"] = Tensor(7)
        do {
            try model.load(state, strict: true, file: "w.safetensors")
            Issue.record("strict load accepted a broken state dict")
        } catch {
            let m = "\(error)"
            #expect(m.hasPrefix("w.safetensors: "))
            #expect(m.contains("1 missing key (layer1.0.se.fc1.weight)"), "\(m)")
            #expect(m.contains("1 unexpected key (layer1.0.extra.weight)"), "\(m)")
            #expect(m.contains("fc.weight: model [10, 64], file [5, 64]"), "\(m)")
            #expect(!m.contains("num_batches_tracked"))
        }
        // Non-strict loads the rest; replacing the classifier re-initialises it.
        let fresh = try ModelRegistry.create("seresnet20", ModelOptions(seed: 9))
        let report = try fresh.load(state, strict: false, replacingClassifier: true)
        #expect(report.reinitialised == ["fc.weight"] && report.missing == ["layer1.0.se.fc1.weight"])
        #expect(fresh.stateDict()["conv1.weight"]!.scalars == state["conv1.weight"]!.scalars)
    }

    /// ≥ 4,000 mutated files, seeded: each is refused with a CheckpointError or read; none crashes.
    /// Truncated files must be refused.
    @Test func fuzzMutatedFiles() throws {
        let model = try ModelRegistry.create("resnet20")
        let valid = SafeTensors.encode(model.stateDict(metadata: ["model": "resnet20", "note": "fuzz \"seed\""]))
        var g = SeededGenerator(seed: 2024)
        var refused = 0, read = 0
        let headerEnd = 8 + Int(valid[0]) + Int(valid[1]) << 8 + Int(valid[2]) << 16
        for round in 0..<4200 {
            var bytes = valid
            switch round % 7 {
            case 0:  // truncation anywhere
                bytes.removeLast(1 + Int(g.next() % UInt64(bytes.count - 1)))
                #expect(failure(bytes) != nil, "truncated to \(bytes.count) bytes was accepted")
                refused += 1
                continue
            case 1:  // byte flips in the header
                for _ in 0..<(1 + Int(g.next() % 4)) { bytes[Int(g.next() % UInt64(headerEnd))] ^= UInt8(1 << (g.next() % 8)) }
            case 2:  // random bytes in the header
                for _ in 0..<(1 + Int(g.next() % 8)) { bytes[8 + Int(g.next() % UInt64(headerEnd - 8))] = UInt8(g.next() & 0xFF) }
            case 3:  // huge or small header lengths
                let v = [UInt64.max, UInt64(1) << 63, UInt64(bytes.count), UInt64(g.next() % 4096), 0][Int(g.next() % 5)]
                withUnsafeBytes(of: v.littleEndian) { for i in 0..<8 { bytes[i] = $0[i] } }
            case 4:  // digits in the header replaced (offsets, shapes): overlaps, huge values
                let digitPositions = (8..<headerEnd).filter { (48...57).contains(bytes[$0]) }
                for _ in 0..<(1 + Int(g.next() % 3)) {
                    let p = digitPositions[Int(g.next() % UInt64(digitPositions.count))]
                    bytes.replaceSubrange(p...p, with: Array(["9999999999999999999999", "0", "18446744073709551615", "-1", "1e9", "7"][Int(g.next() % 6)].utf8))
                }
            case 5:  // a slice of the header deleted or duplicated
                let a = 8 + Int(g.next() % UInt64(headerEnd - 8)), n = Int(g.next() % 40)
                let b = min(a + n, headerEnd)
                if g.next() % 2 == 0 { bytes.removeSubrange(a..<b) } else { bytes.insert(contentsOf: bytes[a..<b], at: a) }
            default:  // garbage
                bytes = (0..<Int(g.next() % 300)).map { _ in UInt8(g.next() & 0xFF) }
            }
            if failure(bytes) == nil { read += 1 } else { refused += 1 }
        }
        #expect(refused + read == 4200 && refused > 3000, "refused \(refused), read \(read)")
    }
}
