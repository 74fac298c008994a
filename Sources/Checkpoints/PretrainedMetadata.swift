// A model's preprocessing and labels carried in a weights file's `__metadata__`, so that a
// converted or trained checkpoint says itself how its inputs must look.

import Foundation
import Models

extension PretrainedConfig {
    /// `__metadata__` entries: `input_size`, `interpolation`, `crop_pct`, `channel_order`,
    /// `pixel_scale`, `mean`, `std` (JSON lists) and, when present, `labels` (a JSON list).
    public var metadata: [String: String] {
        func json(_ xs: [Float]) -> String { "[" + xs.map { "\($0)" }.joined(separator: ",") + "]" }
        var m = ["input_size": "\(inputSize)", "interpolation": interpolation.rawValue, "crop_pct": "\(cropFraction)",
                 "channel_order": channelOrder.rawValue, "pixel_scale": "\(pixelScale)", "mean": json(mean), "std": json(std)]
        if let labels, let data = try? JSONSerialization.data(withJSONObject: labels), let s = String(data: data, encoding: .utf8) {
            m["labels"] = s
        }
        return m
    }

    /// The configuration stored in `metadata`, each missing or unreadable entry taken from `fallback`.
    public init(metadata m: [String: String], fallback: PretrainedConfig) {
        self = fallback
        func floats(_ key: String) -> [Float]? {
            guard let s = m[key], let a = try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [Double] else { return nil }
            return a.map(Float.init)
        }
        if let v = m["input_size"].flatMap(Int.init), v > 0 { inputSize = v }
        if let v = m["interpolation"].flatMap(Interpolation.init(rawValue:)) { interpolation = v }
        if let v = m["crop_pct"].flatMap(Double.init), v > 0, v <= 1 { cropFraction = v }
        if let v = m["channel_order"].flatMap(ChannelOrder.init(rawValue:)) { channelOrder = v }
        if let v = m["pixel_scale"].flatMap(Float.init), v == 1 || v == 255 { pixelScale = v }
        if let v = floats("mean"), !v.isEmpty { mean = v }
        if let v = floats("std"), !v.isEmpty { std = v }
        if let s = m["labels"], let l = try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String] { labels = l }
    }
}
