// `senet excitations` (paper §7.2, Figs. 6–7) on real Fashion-MNIST test images, with an
// SE-ResNet-20 whose weights make the excitations known in closed form:
// - the stem and the first block pass the input's ReLU straight through to channel 0 of SE_2_1
//   (centre taps 1, every other weight 0, BatchNorm at its defaults), so SE_2_1 sees
//   u = relu(x) / (1 + ε)^{3/2} on channel 0 and 0 elsewhere, and its excitation
//   s_c = σ(w2_c · relu(a · mean(u) + b1) + b2_c) varies from image to image;
// - every other SE block has fc1 = 0, so s_c = σ(Σ_j w2_cj · relu(b1_j) + b2_c) for any input.
// The expected means and standard deviations are computed here in Double from the raw pixels.

import Foundation
import Testing
import _TestSupport
import Checkpoints
import Datasets
import ImageIO
import Models
import NN
import TensorCore

private func sigmoid(_ v: Double) -> Double { 1 / (1 + exp(-v)) }

/// fc2 weights and biases of the closed-form blocks.
private func w2(_ c: Int, _ j: Int) -> Double { sin(Double(3 * c + j + 1)) * 1.5 }
private func b2(_ c: Int) -> Double { 0.05 * Double(c) - 0.4 }
private func b1(_ j: Int) -> Double { 0.3 * Double(j + 1) - 0.45 }
private let (a1, bias1) = (4.0, 0.1)

/// Writes the closed-form SE-ResNet-20 (1 input channel, 10 classes) to `path`.
private func writeClosedFormModel(_ path: String) throws {
    let model = try ModelRegistry.create("seresnet20", ModelOptions(numClasses: 10, inChannels: 1))
    var entries: [(String, Tensor)] = []
    func centreTap(_ shape: [Int], pairs: [(Int, Int)]) -> Tensor {
        var v = [Float](repeating: 0, count: shape.reduce(1, *))
        for (o, i) in pairs { v[((o * shape[1] + i) * 3 + 1) * 3 + 1] = 1 }
        return Tensor(shape: shape, scalars: v)
    }
    for (key, t) in model.stateDict().entries {
        var value = t
        let s = t.shape
        switch key {
        case "conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight":
            value = centreTap(s, pairs: [(0, 0)])
        case "layer1.0.se.fc1.weight":
            var v = [Float](repeating: 0, count: t.count); v[0] = Float(a1)
            value = Tensor(shape: s, scalars: v)
        case "layer1.0.se.fc1.bias":
            value = Tensor(shape: s, scalars: [Float(bias1)])
        case "layer1.0.se.fc2.weight":
            value = Tensor(shape: s, scalars: (0..<s[0]).map { Float(w2($0, 0)) })
        default:
            if key.hasSuffix("se.fc1.weight") {
                value = Tensor.zeros(s)
            } else if key.hasSuffix("se.fc1.bias") {
                value = Tensor(shape: s, scalars: (0..<s[0]).map { Float(b1($0)) })
            } else if key.hasSuffix("se.fc2.weight") {
                value = Tensor(shape: s, scalars: (0..<(s[0] * s[1])).map { Float(w2($0 / s[1], $0 % s[1])) })
            } else if key.hasSuffix("se.fc2.bias") {
                value = Tensor(shape: s, scalars: (0..<s[0]).map { Float(b2($0)) })
            }
        }
        entries.append((key, value))
    }
    try SafeTensors.write(StateDict(entries), to: URL(fileURLWithPath: path))
}

/// CSV rows keyed by "block|class|channel" → (mean, std).
private func readCSV(_ path: String) throws -> [String: (Double, Double)] {
    let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
    #expect(lines.first == "block,class,channel,mean,std")
    var out: [String: (Double, Double)] = [:]
    for line in lines.dropFirst() {
        let f = line.split(separator: ",").map(String.init)
        out["\(f[0])|\(f[1])|\(f[2])"] = (Double(f[3]) ?? .nan, Double(f[4]) ?? .nan)
    }
    return out
}

@Suite("senet excitations", .serialized)
struct ExcitationsCLITests {
    static let perClass = 6
    static let classes = [0, 3, 7, 9]

    @Test func csvHoldsTheClosedFormExcitations() throws {
        try requireFashionMNIST()
        let dir = try freshDirectory("excitations-closed-form")
        try writeClosedFormModel(dir + "/w.safetensors")
        let (status, out, err) = try runSenet(["excitations", "--model", "seresnet20", "--weights", dir + "/w.safetensors",
                                               "--data", "fashion-mnist", "--classes", Self.classes.map(String.init).joined(separator: ","),
                                               "--blocks", "SE_2_1,SE_2_3,SE_3_3,SE_4_3", "--images-per-class", "\(Self.perClass)",
                                               "--channels", "0", "--per-instance", "3", "--out", dir + "/out"])
        try #require(status == 0, "\(err)")
        #expect(out.contains("SE_2_1, SE_2_3, SE_3_3, SE_4_3"))
        let rows = try readCSV(dir + "/out/excitations.csv")

        // Expected SE_2_1: from the first `perClass` test images of each class.
        let test = try openDataset("fashion-mnist", train: false)
        let stats = ChannelStatistics.fashionMNIST
        let k3 = pow(1 + 1e-5, 1.5)
        var perImage: [Int: [[Double]]] = [:]  // class → images → 16 channel excitations
        var taken = [Int](repeating: 0, count: 10)
        for (i, label) in test.labels.enumerated() where taken[label] < Self.perClass {
            taken[label] += 1
            let px = try test.image(at: i).pixels
            // x in float32 as the transform computes it, then the closed form in Double.
            let u = px.map { p -> Double in
                let x = (Float(p) / 255 - stats.mean[0]) / stats.std[0]
                return max(Double(x), 0) / k3
            }
            let h = max(a1 * u.reduce(0, +) / Double(u.count) + bias1, 0)
            perImage[label, default: []].append((0..<16).map { sigmoid(w2($0, 0) * h + b2($0)) })
        }
        func meanStd(_ xs: [Double]) -> (Double, Double) {
            let m = xs.reduce(0, +) / Double(xs.count)
            return (m, (xs.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(xs.count)).squareRoot())
        }
        var worst = 0.0
        let names = test.classNames
        for c in 0..<16 {
            for k in Self.classes {
                let (m, s) = meanStd(perImage[k]!.map { $0[c] })
                let got = try #require(rows["SE_2_1|\(names[k])|\(c)"], "missing SE_2_1 \(names[k]) \(c)")
                worst = max(worst, abs(got.0 - m), abs(got.1 - s))
            }
            let (m, s) = meanStd(perImage.values.flatMap { $0 }.map { $0[c] })
            let got = try #require(rows["SE_2_1|all|\(c)"])
            worst = max(worst, abs(got.0 - m), abs(got.1 - s))
        }
        // The closed-form blocks: constant excitations, zero spread.
        for (block, channels) in [("SE_2_3", 16), ("SE_3_3", 32), ("SE_4_3", 64)] {
            let hidden = channels / 16
            for c in 0..<channels {
                let expected = sigmoid((0..<hidden).map { w2(c, $0) * max(b1($0), 0) }.reduce(0, +) + b2(c))
                for cls in Self.classes.map({ names[$0] }) + ["all"] {
                    let got = try #require(rows["\(block)|\(cls)|\(c)"], "missing \(block) \(cls) \(c)")
                    worst = max(worst, abs(got.0 - expected), abs(got.1))
                }
            }
        }
        #expect(worst < 2e-6, "worst absolute difference from the closed form: \(worst)")
        // The input-dependent block really varies: spread within a class and between classes.
        #expect(meanStd(perImage[0]!.map { $0[0] }).1 > 1e-3)
        #expect(rows.count == 4 * (16 + 16 + 32 + 64) + (16 + 16 + 32 + 64))
    }

    @Test func figuresRenderWithOnePolylinePerClass() throws {
        try requireFashionMNIST()
        guard let rsvg = ["/usr/bin/rsvg-convert", "/usr/local/bin/rsvg-convert"].first(where: FileManager.default.fileExists) else {
            throw FixtureError("rsvg-convert is missing: run `make deps` (Debian package librsvg2-bin)")
        }
        let dir = try freshDirectory("excitations-render")
        try writeClosedFormModel(dir + "/w.safetensors")
        let (status, _, err) = try runSenet(["excitations", "--model", "seresnet20", "--weights", dir + "/w.safetensors",
                                             "--data", "fashion-mnist", "--classes", "0,3,7,9", "--images-per-class", "4",
                                             "--blocks", "SE_2_1,SE_2_3,SE_3_3,SE_4_1,SE_4_3", "--per-instance", "7", "--out", dir])
        try #require(status == 0, "\(err)")
        for svg in ["excitations", "excitations-instance"] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: rsvg)
            p.arguments = [dir + "/\(svg).svg", "-o", dir + "/\(svg).png"]
            try p.run()
            p.waitUntilExit()
            try #require(p.terminationStatus == 0, "rsvg-convert failed on \(svg).svg")
        }
        // 5 panels on a 3-column grid.
        let img = try ImageDecoder.load(path: dir + "/excitations.png")
        let (pw, ph, cellW, cellH) = (330, 200, 400, 280)
        func pixel(_ x: Int, _ y: Int) -> (Int, Int, Int) {
            let o = (y * img.width + x) * 3
            return (Int(img.pixels[o]), Int(img.pixels[o + 1]), Int(img.pixels[o + 2]))
        }
        func count(_ color: (Int, Int, Int), panel: Int) -> Int {
            let (left, top) = (55 + (panel % 3) * cellW, 50 + (panel / 3) * cellH)
            var n = 0
            for y in (top + 2)..<(top + ph - 1) {
                for x in (left + 2)..<(left + pw - 1) {
                    let p = pixel(x, y)
                    if abs(p.0 - color.0) <= 12 && abs(p.1 - color.1) <= 12 && abs(p.2 - color.2) <= 12 { n += 1 }
                }
            }
            return n
        }
        func rgb(_ hex: String) -> (Int, Int, Int) {
            let v = Int(hex.dropFirst(), radix: 16)!
            return (v >> 16, (v >> 8) & 255, v & 255)
        }
        let classColors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"].map(rgb)
        for panel in 0..<5 {
            for (k, c) in classColors.enumerated() {
                // A line across the panel leaves hundreds of pixels in its colour. In the
                // closed-form blocks (panels 1–4) every class has the same excitations, so the
                // lines coincide: the last-drawn class shows in the gaps of the dashed 'all' line.
                let n = count(c, panel: panel)
                if panel == 0 { #expect(n > 10, "panel \(panel): \(n) pixels of class \(k)'s colour") }
                if panel > 0 && k == 3 { #expect(n > 30, "panel \(panel): \(n) pixels of class \(k)'s colour") }
            }
            #expect(count((0, 0, 0), panel: panel) > 100, "panel \(panel): no black 'all' line")
        }
        // In the SVG itself: one polyline per class and one 'all' line in each of the 5 panels.
        let svgText = try String(contentsOfFile: dir + "/excitations.svg", encoding: .utf8)
        for color in ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#000000"] {
            #expect(svgText.components(separatedBy: "<polyline fill='none' stroke='\(color)'").count - 1 == 5, "polylines in \(color)")
        }
        // The sixth cell of the grid is empty: nothing drawn there.
        #expect(classColors.allSatisfy { count($0, panel: 5) == 0 })
        // Fig. 7: a band and a line in the first colour in every panel.
        let inst = try ImageDecoder.load(path: dir + "/excitations-instance.png")
        #expect(inst.width == img.width)
    }

    @Test func badInputSaysWhatIsWrong() throws {
        try requireFashionMNIST()
        let dir = try freshDirectory("excitations-bad")
        try writeClosedFormModel(dir + "/w.safetensors")
        let base = ["excitations", "--model", "seresnet20", "--weights", dir + "/w.safetensors", "--data", "fashion-mnist",
                    "--images-per-class", "2", "--out", dir]
        var (status, _, err) = try runSenet(base + ["--blocks", "SE_2_3,SE_9_1"])
        #expect(status == 1 && err.contains("SE_9_1") && err.contains("valid blocks: SE_2_1, SE_2_2, SE_2_3, SE_3_1"), "\(err)")
        (status, _, err) = try runSenet(base + ["--classes", "Sneaker,Unicorn"])
        #expect(status != 0 && err.contains("Unicorn") && err.contains("Ankle boot"), "\(err)")

        // A class without images: an IDX set whose labels never name class 9.
        let idx = try freshDirectory("excitations-idx")
        try writeIDXSet(idx, labels: [0, 1, 2, 3, 0, 1, 2, 3, 8])
        let plain = try ModelRegistry.create("seresnet20", ModelOptions(numClasses: 10, inChannels: 1))
        try SafeTensors.write(plain.stateDict(), to: URL(fileURLWithPath: dir + "/r.safetensors"))
        (status, _, err) = try runSenet(["excitations", "--model", "seresnet20", "--weights", dir + "/r.safetensors", "--data", "idx:" + idx,
                                         "--split", "train", "--classes", "0,9", "--out", dir])
        #expect(status == 1 && err.contains("class '9'") && err.contains("no images"), "\(err)")

        // A model without SE blocks.
        let resnet = try ModelRegistry.create("resnet20", ModelOptions(numClasses: 10, inChannels: 1))
        try SafeTensors.write(resnet.stateDict(), to: URL(fileURLWithPath: dir + "/p.safetensors"))
        (status, _, err) = try runSenet(["excitations", "--model", "resnet20", "--weights", dir + "/p.safetensors", "--data", "fashion-mnist",
                                         "--images-per-class", "1", "--out", dir])
        #expect(status == 1 && err.contains("no SE blocks"), "\(err)")
    }

    @Test func summaryNamesTheSEBlocksAsThePaper() throws {
        let (status, out, err) = try runSenet(["summary", "seresnet50", "--json"])
        try #require(status == 0, "\(err)")
        let obj = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        let blocks = (obj?["se_blocks"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
        let expected = (1...3).map { "SE_2_\($0)" } + (1...4).map { "SE_3_\($0)" } + (1...6).map { "SE_4_\($0)" } + (1...3).map { "SE_5_\($0)" }
        #expect(blocks == expected)
        let (_, text, _) = try runSenet(["summary", "seresnet50"])
        #expect(text.contains("SE_4_6  (layer3.5.se)"))
    }
}

/// An IDX pair (train-images / train-labels, gzip) of 28×28 images with these labels.
func writeIDXSet(_ dir: String, labels: [Int]) throws {
    func gzip(_ bytes: [UInt8], to path: String) throws {
        let raw = path + ".raw"
        try Data(bytes).write(to: URL(fileURLWithPath: raw))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "gzip -c '\(raw)' > '\(path)' && rm '\(raw)'"]
        try p.run()
        p.waitUntilExit()
    }
    func be(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
    let n = labels.count
    var images: [UInt8] = [0, 0, 8, 3] + be(n) + be(28) + be(28)
    for i in 0..<(n * 28 * 28) { images.append(UInt8(i * 7 % 256)) }
    try gzip(images, to: dir + "/train-images-idx3-ubyte.gz")
    try gzip([0, 0, 8, 1] + be(n) + labels.map(UInt8.init), to: dir + "/train-labels-idx1-ubyte.gz")
}

@Suite("senet plot")
struct PlotCLITests {
    @Test func twoRunsOverlaidWithLabels() throws {
        let dir = try freshDirectory("plot-two-runs")
        for (run, offset) in [("a", 0.0), ("b", 0.1)] {
            let lines = (1...5).map { e in
                String(format: "{\"epoch\": %d, \"train_loss\": %.3f, \"train_top1\": %.3f, \"val_loss\": %.3f, \"val_top1\": %.3f, \"lr\": 0.1}",
                       e, 1.0 / Double(e) + offset, 0.5 + 0.08 * Double(e) - offset, 1.2 / Double(e) + offset, 0.45 + 0.08 * Double(e) - offset)
            }
            try FileManager.default.createDirectory(atPath: dir + "/" + run, withIntermediateDirectories: true)
            try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/\(run)/metrics.jsonl", atomically: true, encoding: .utf8)
        }
        let (status, _, err) = try runSenet(["plot", dir + "/a/metrics.jsonl", dir + "/b/metrics.jsonl",
                                             "--label", "ResNet-20", "--label", "SE-ResNet-20", "--out", dir + "/curves.svg"])
        try #require(status == 0, "\(err)")
        let svg = try String(contentsOfFile: dir + "/curves.svg", encoding: .utf8)
        #expect(svg.contains(">ResNet-20<") && svg.contains(">SE-ResNet-20<"))
        // Per run: train and test loss, train and test top-1.
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 8)
        if let rsvg = ["/usr/bin/rsvg-convert"].first(where: FileManager.default.fileExists) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: rsvg)
            p.arguments = [dir + "/curves.svg", "-o", dir + "/curves.png"]
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
            let img = try ImageDecoder.load(path: dir + "/curves.png")
            let coloured = stride(from: 0, to: img.pixels.count, by: 3).filter {
                let (r, g, b) = (Int(img.pixels[$0]), Int(img.pixels[$0 + 1]), Int(img.pixels[$0 + 2]))
                return max(r, g, b) - min(r, g, b) > 60
            }.count
            #expect(coloured > 500, "only \(coloured) coloured pixels")
        }
        let (bad, _, badErr) = try runSenet(["plot", dir + "/a/metrics.jsonl", "--label", "x", "--label", "y", "--out", dir + "/c.svg"])
        #expect(bad != 0 && badErr.contains("--label"))
    }
}
