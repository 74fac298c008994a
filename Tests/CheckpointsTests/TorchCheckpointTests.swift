// TorchCheckpoint: PyTorch .pth files (zip and legacy) read natively and safely. Fixtures come
// from Scripts/make_pth_fixtures.py (Tests/Fixtures/pth_*); the real MobileNetV2 checkpoint from
// `make assets` (.assets/mobilenet_v2-b0353104.pth).

import Foundation
import Testing
import TensorCore
import _TestSupport
@testable import Checkpoints

private func pth(_ name: String) -> URL { fixturesDirectory.appendingPathComponent(name) }

private let expectedTensors: [String: Tensor] = (try? Fixture("pth_expected").tensors) ?? [:]

private let expectedInfo: [String: Any] = {
    guard let data = try? Data(contentsOf: pth("pth_expected.json")),
          let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
    return obj
}()

/// Expects `dict` to hold exactly the fixture tensors recorded under `group/`, bit for bit.
private func expectEqual(_ dict: StateDict, group: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let expected = expectedTensors.filter { $0.key.hasPrefix(group + "/") }
    #expect(!expected.isEmpty, "no expected tensors for \(group)", sourceLocation: sourceLocation)
    #expect(Set(dict.keys) == Set(expected.keys.map { String($0.dropFirst(group.count + 1)) }), sourceLocation: sourceLocation)
    for (key, want) in expected {
        let name = String(key.dropFirst(group.count + 1))
        guard let got = dict[name] else { continue }
        #expect(got.shape == want.shape, "\(name) shape", sourceLocation: sourceLocation)
        let (a, b) = (got.scalars, want.scalars)
        #expect(a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern },
                "\(name): \(a.prefix(6)) != \(b.prefix(6))", sourceLocation: sourceLocation)
    }
}

@Suite struct TorchCheckpointTests {
    @Test(arguments: ["pth_dtypes_zip.pth", "pth_dtypes_legacy.pth"])
    func dtypesStridesAndOffsets(file: String) throws {
        let sd = try TorchCheckpoint.read(pth(file))
        expectEqual(sd, group: "dtypes")
        #expect(sd.keys.first == "conv.weight" && sd.keys.last == "strided3d", "file order kept")
        #expect(sd.metadata["format"] == (file.contains("zip") ? "pytorch-zip" : "pytorch-legacy"))
        #expect(sd["bn.num_batches_tracked"]?.shape == [] && sd["bn.num_batches_tracked"]?.item == 123456)
        #expect(sd["transposed"]?.shape == [4, 5])
    }

    @Test func stateDictWrapperWithModulePrefix() throws {
        let url = pth("pth_wrapped_state_dict.pth")
        let plain = try TorchCheckpoint.read(url)
        expectEqual(plain, group: "plain")
        #expect(plain.metadata["entry"] == "state_dict")
        let ema = try TorchCheckpoint.read(url, options: .init(preferEMA: true))
        expectEqual(ema, group: "ema")
        #expect(ema.metadata["entry"] == "state_dict_ema")
        let chosen = try TorchCheckpoint.read(url, options: .init(entry: "state_dict_ema"))
        expectEqual(chosen, group: "ema")
        let raw = try TorchCheckpoint.read(url, options: .init(stripModulePrefix: false))
        #expect(raw.keys.allSatisfy { $0.hasPrefix("module.") } && raw.count == 4)
        #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(url, options: .init(entry: "optimizer")) }
    }

    @Test func modelAndEmaWrapperLegacy() throws {
        let url = pth("pth_wrapped_model_ema.pth")
        let plain = try TorchCheckpoint.read(url)
        expectEqual(plain, group: "plain")
        #expect(plain.metadata["entry"] == "model" && plain.metadata["format"] == "pytorch-legacy")
        let ema = try TorchCheckpoint.read(url, options: .init(preferEMA: true))
        expectEqual(ema, group: "ema")
        #expect(ema.metadata["entry"] == "ema")
    }

    @Test func modelWrapperFallsBackWhenNoEMA() throws {
        let url = pth("pth_wrapped_model.pth")
        expectEqual(try TorchCheckpoint.read(url), group: "plain")
        expectEqual(try TorchCheckpoint.read(url, options: .init(preferEMA: true)), group: "plain")
    }

    @Test func noTensorsIsAnError() {
        let error = #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(pth("pth_empty.pth")) }
        #expect(error?.description.contains("no tensors") == true, "\(String(describing: error))")
        #expect(error?.file.hasSuffix("pth_empty.pth") == true)
    }

    @Test func missingAndForeignFiles() {
        #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(pth("pth_does_not_exist.pth")) }
        #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(pth("pth_expected.json")) }
        #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(bytes: Data(), name: "empty") }
        let deflated = #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(pth("pth_deflated.pth")) }
        #expect(deflated?.description.contains("compressed (method 8)") == true, "\(String(describing: deflated))")
    }

    @Test func maliciousPicklesAreRefusedAndNeverRun() throws {
        let evil = try #require(expectedInfo["evil"] as? [String: String])
        let marker = try #require(expectedInfo["marker"] as? String)
        #expect(evil.count == 4)
        for (file, global) in evil {
            let error = #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(pth(file)) }
            #expect(error?.description.contains("forbidden global '\(global)'") == true, "\(file): \(String(describing: error))")
            #expect(error?.file.hasSuffix(file) == true)
        }
        #expect(!FileManager.default.fileExists(atPath: marker), "marker \(marker) exists: a pickle was executed")
    }

    @Test(arguments: [("expand", "exceeds the limit"), ("outside", "reach element 4 of a 4-element storage"),
                      ("overflow", "overflows"), ("offset", "reach element 4 of a 4-element storage")])
    func hostileTensorGeometryIsRefused(file: String, message: String) {
        let error = #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(pth("pth_hostile_\(file).pth")) }
        #expect(error?.tensor == "x" && error?.problem.contains(message) == true, "\(String(describing: error))")
    }

    @Test func realMobileNetV2Checkpoint() throws {
        let url = fixturesDirectory.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".assets/mobilenet_v2-b0353104.pth")
        guard FileManager.default.fileExists(atPath: url.path) else {
            Issue.record("\(url.path) is missing: run `make assets` to fetch the test assets")
            return
        }
        let info = try #require(expectedInfo["mobilenet_v2"] as? [String: Any], "pth_expected.json lacks mobilenet_v2: rerun Scripts/make_pth_fixtures.py after `make assets`")
        let clock = ContinuousClock()
        var sd = StateDict()
        let elapsed = try clock.measure { sd = try TorchCheckpoint.read(url) }
        print("MobileNetV2 checkpoint read in \(elapsed)")
        #expect(sd.count == 314 && sd.count == info["count"] as? Int)
        #expect(sd.keys.first == info["first_key"] as? String && sd.keys.last == info["last_key"] as? String)
        #expect(sd.metadata["format"] == "pytorch-legacy")
        let floating = sd.entries.filter { !$0.key.hasSuffix("num_batches_tracked") }
        #expect(floating.reduce(0) { $0 + $1.tensor.count } == info["floating_numel"] as? Int)
        let parameters = floating.filter { !$0.key.contains("running_") }.reduce(0) { $0 + $1.tensor.count }
        #expect(parameters == 3_504_872 && parameters == info["parameter_numel"] as? Int)
        let spots = try #require(info["spots"] as? [String: [String: Any]])
        #expect(spots.count >= 4)
        for (key, spot) in spots {
            let t = try #require(sd[key], "missing \(key)")
            #expect(t.shape == spot["shape"] as? [Int], "\(key) shape")
            let first = (spot["first"] as? [Double] ?? []).map(Float.init)
            #expect(Array(t.scalars.prefix(first.count)) == first, "\(key) first values")
            let sum = t.scalars.reduce(0.0) { $0 + Double($1) }
            let want = spot["sum"] as? Double ?? .nan
            #expect(abs(sum - want) <= 1e-9 * max(1, abs(want)), "\(key) sum \(sum) != \(want)")
        }
    }

    /// Nesting 300k lists deep must neither recurse while parsing nor while freeing.
    @Test func deepNestingDoesNotOverflowTheStack() {
        var bytes: [UInt8] = [0x80, 0x02]
        bytes += [UInt8](repeating: 0x5D, count: 300_000)  // EMPTY_LIST × n
        bytes += [UInt8](repeating: 0x61, count: 299_999)  // APPEND × n-1
        bytes += [0x2E]
        let error = #expect(throws: CheckpointError.self) { try TorchCheckpoint.read(bytes: Data(bytes), name: "deep") }
        #expect(error?.description.contains("magic") == true, "\(String(describing: error))")
    }

    /// ≥ 4,000 mutated checkpoints (seeded): each must throw CheckpointError or read — never trap or hang.
    @Test func fuzzMutatedCheckpoints() throws {
        let seeds = try ["pth_dtypes_zip.pth", "pth_dtypes_legacy.pth", "pth_wrapped_state_dict.pth",
                         "pth_wrapped_model_ema.pth", "pth_evil_exec_zip.pth"].map { [UInt8](try Data(contentsOf: pth($0))) }
        var rng = SplitMix64(seed: 0x5E_4E7)
        let cases = 6_000
        var (read, refused) = (0, 0)
        let start = ContinuousClock.now
        for i in 0..<cases {
            var bytes = seeds[i % seeds.count]
            mutate(&bytes, &rng)
            // Half the cases skip the CRC check so that corrupted records reach the unpickler.
            let options = TorchCheckpoint.Options(verifyChecksums: i % 2 == 0, maxTensorElements: 1 << 20)
            do {
                _ = try TorchCheckpoint.read(bytes: Data(bytes), name: "fuzz-\(i)", options: options)
                read += 1
            } catch is CheckpointError {
                refused += 1
            } catch {
                Issue.record("case \(i): unexpected error type \(type(of: error)): \(error)")
            }
        }
        let elapsed = ContinuousClock.now - start
        print("fuzz: \(cases) cases, \(read) read, \(refused) refused, \(elapsed)")
        #expect(read + refused == cases)
        #expect(refused > cases / 4 && read > 0, "mutations should both break and spare files")
    }
}

// MARK: Fuzzing helpers

/// A small deterministic generator (SplitMix64).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Offsets of ZIP record signatures ("PK" + 1,2 / 3,4 / 5,6 / 6,6 / 6,7).
private func zipRecords(_ b: [UInt8]) -> [Int] {
    guard b.count >= 4 else { return [] }
    return (0..<(b.count - 3)).filter { b[$0] == 0x50 && b[$0 + 1] == 0x4B && b[$0 + 2] < 8 && b[$0 + 3] < 8 }
}

private func write<T: FixedWidthInteger>(_ v: T, into b: inout [UInt8], at offset: Int) {
    for k in 0..<MemoryLayout<T>.size where offset + k < b.count { b[offset + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
}

/// One of several mutations: truncation, byte flips, huge values in ZIP fields or after pickle
/// opcodes, inserted hostile opcodes, moved / duplicated / deleted spans.
private func mutate(_ b: inout [UInt8], _ rng: inout SplitMix64) {
    let huge: [UInt64] = [0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF,
                          0x8000_0000_0000_0000, 0xFFFF, 0, 1, UInt64(b.count), rng.next()]
    func pos() -> Int { Int.random(in: 0..<max(b.count, 1), using: &rng) }
    switch Int.random(in: 0..<9, using: &rng) {
    case 0:  // truncate
        b.removeLast(Int.random(in: 1...max(b.count, 1), using: &rng))
    case 1:  // flip a few bytes
        for _ in 0..<Int.random(in: 1...8, using: &rng) where !b.isEmpty { b[pos()] ^= UInt8.random(in: 1...255, using: &rng) }
    case 2:  // a huge value in a ZIP record field
        let records = zipRecords(b)
        guard let r = records.randomElement(using: &rng) else { fallthrough }
        let v = huge.randomElement(using: &rng)!
        let at = r + Int.random(in: 4..<48, using: &rng)
        if Bool.random(using: &rng) { write(UInt32(truncatingIfNeeded: v), into: &b, at: at) } else { write(v, into: &b, at: at) }
    case 3:  // a huge operand right after a length-carrying pickle opcode
        let ops: Set<UInt8> = [0x58, 0x8C, 0x8D, 0x42, 0x43, 0x8E, 0x8A, 0x8B, 0x4A, 0x4B, 0x71, 0x72, 0x68, 0x6A, 0x95, 0x54]
        let candidates = b.indices.filter { ops.contains(b[$0]) }
        guard let at = candidates.randomElement(using: &rng) else { break }
        write(huge.randomElement(using: &rng)!, into: &b, at: at + 1)
    case 4:  // insert a hostile opcode sequence
        let snippets: [[UInt8]] = [
            [0x58, 0xFF, 0xFF, 0xFF, 0x7F], [0x8D] + [UInt8](repeating: 0xFF, count: 8), [0x8B, 0xFF, 0xFF, 0xFF, 0x7F],
            [0x95] + [UInt8](repeating: 0xFF, count: 8), [0x72, 0xFF, 0xFF, 0xFF, 0xFF], [0x6A, 0xFF, 0xFF, 0xFF, 0x7F],
            [0x63] + Array("os\nsystem\n".utf8), [0x63] + Array("builtins\neval\n".utf8), [0x52], [0x62], [0x51], [0x93],
            [0x31], [0x30], [0x2E], [0x28, 0x74, 0x52], [0x7D, 0x75], [0x29, 0x61],
            [UInt8](repeating: 0x28, count: 1000), [UInt8](repeating: 0x32, count: 2000), [0x94, 0x94, 0x94],
            [UInt8](repeating: 0x5D, count: 3000) + [UInt8](repeating: 0x61, count: 2999),
        ]
        b.insert(contentsOf: snippets.randomElement(using: &rng)!, at: pos())
    case 5:  // swap two spans (shuffled opcodes)
        guard b.count > 8 else { break }
        let n = Int.random(in: 1...min(16, b.count / 2), using: &rng)
        let i = Int.random(in: 0...(b.count - n), using: &rng), j = Int.random(in: 0...(b.count - n), using: &rng)
        let a = Array(b[i..<(i + n)]), c = Array(b[j..<(j + n)])
        b.replaceSubrange(j..<(j + n), with: a)
        b.replaceSubrange(i..<(i + n), with: c)
    case 6:  // duplicate a span
        guard !b.isEmpty else { break }
        let i = pos(), n = Int.random(in: 1...min(64, b.count - i), using: &rng)
        b.insert(contentsOf: Array(b[i..<(i + n)]), at: pos())
    case 7:  // delete a span
        guard !b.isEmpty else { break }
        let i = pos(), n = Int.random(in: 1...min(32, b.count - i), using: &rng)
        b.removeSubrange(i..<(i + n))
    default:  // several mutations at once
        for _ in 0..<3 { mutate(&b, &rng) }
    }
}
