// Helpers for the ImageIO tests: the real-photo assets and the U8 safetensors fixtures written by
// Scripts/make_image_fixtures.py (the shared `Fixture` reader is F32-only).

import Foundation
import Testing
import _TestSupport

/// The repository's .assets folder (filled by `make assets`).
let assetsDirectory = fixturesDirectory.deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent(".assets")

struct MissingAsset: Error, CustomStringConvertible {
    let description: String
}

/// The path of asset `relative` (e.g. "skimage/chelsea.png"); a missing asset fails the test.
func assetPath(_ relative: String) throws -> String {
    let path = assetsDirectory.appendingPathComponent(relative).path
    guard FileManager.default.fileExists(atPath: path) else {
        throw MissingAsset(description: "test asset \(path) is missing: run `make assets`")
    }
    return path
}

/// The path of Tests/Fixtures/`name`.
func fixturePath(_ name: String) -> String { fixturesDirectory.appendingPathComponent(name).path }

/// A safetensors fixture of U8 tensors with per-case JSON parameters.
struct ByteFixture {
    var tensors: [String: (shape: [Int], bytes: [UInt8])] = [:]
    var metadata: [String: String] = [:]

    init(_ name: String) throws {
        let data = try [UInt8](Data(contentsOf: fixturesDirectory.appendingPathComponent(name + ".safetensors")))
        guard data.count >= 8 else { throw FixtureError("\(name): shorter than 8 bytes") }
        let headerLength = data[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        guard 8 + headerLength <= data.count,
              let header = try JSONSerialization.jsonObject(with: Data(data[8..<(8 + headerLength)])) as? [String: Any] else {
            throw FixtureError("\(name): bad header")
        }
        for (key, value) in header {
            if key == "__metadata__" { metadata = value as? [String: String] ?? [:]; continue }
            guard let info = value as? [String: Any], info["dtype"] as? String == "U8",
                  let shape = info["shape"] as? [Int], let range = info["data_offsets"] as? [Int],
                  range.count == 2, range[1] - range[0] == shape.reduce(1, *), 8 + headerLength + range[1] <= data.count else {
                throw FixtureError("\(name): tensor \(key) is not a well-formed U8 entry")
            }
            let base = 8 + headerLength
            tensors[key] = (shape, Array(data[(base + range[0])..<(base + range[1])]))
        }
    }

    var cases: [String] {
        (try? JSONSerialization.jsonObject(with: Data((metadata["cases"] ?? "[]").utf8))) as? [String] ?? []
    }

    func params(_ c: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data((metadata[c] ?? "{}").utf8))) as? [String: Any] ?? [:]
    }
}

/// A small deterministic generator (SplitMix64) for the fuzz test.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// CRC-32 (the PNG chunk checksum), so mutated PNG headers can still pass libpng's CRC check.
func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        crc ^= UInt32(b)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}
