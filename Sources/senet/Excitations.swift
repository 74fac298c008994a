// `senet excitations`: the paper's Fig. 6 (mean excitation per channel, one line per class and
// one for all classes, one panel per SE block) and Fig. 7 (mean ± std over one class's images),
// with the numbers in a CSV.

import ArgumentParser
import Foundation
import SENet

struct Excitations: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Average SE excitations per class (paper §7.2): OUT/excitations.csv and OUT/excitations.svg (Fig. 6); --per-instance draws Fig. 7.",
        discussion: """
            The first --images-per-class images of every class of the data's test split run through the model in \
            evaluation mode; each SE block's excitation vector s is averaged per class and over all those images. \
            Blocks are named SE_<stage>_<block> as in the paper (see `senet summary`); by default the last block of \
            every stage and every block of the last stage. The CSV holds block, class, channel, mean and standard \
            deviation for the chosen classes and for all classes ("all").
            """)

    @Option(help: "Model name (see `senet models`).") var model: String
    @Option(help: "Weights or training checkpoint (safetensors).") var weights: String
    @Option(help: "Data: fashion-mnist, idx:DIR, cifar10:DIR, cifar100:DIR or folder:DIR.") var data: String
    @Option(help: "Split to read: test or train.") var split = "test"
    @Option(help: "Comma-separated classes to draw (names or indices; default: the first four).") var classes: String?
    @Option(help: "Comma-separated SE blocks, e.g. SE_2_3,SE_3_4,SE_4_6,SE_5_1,SE_5_2,SE_5_3 (default: last of each stage and all of the last stage).")
    var blocks: String?
    @Option(help: "Images per class (the first ones of each class in the split).") var imagesPerClass = 50
    @Option(help: "Channels per block in the figure and CSV (0: all).") var channels = 50
    @Option(help: "Which channels: first or uniform (evenly spaced over the block's channels).") var channelSampling = "first"
    @Option(help: "Draw Fig. 7 for this class (name or index): mean ± std over its images, OUT/excitations-instance.svg.")
    var perInstance: String?
    @Option(help: "Batch size.") var batchSize = 64
    @Option(help: "Loader threads.") var workers = 2
    @Option(help: "Output directory.") var out: String

    func run() throws {
        guard ["test", "train"].contains(split) else { throw ValidationError("--split must be test or train") }
        guard ["first", "uniform"].contains(channelSampling) else { throw ValidationError("--channel-sampling must be first or uniform") }
        guard channels >= 0 else { throw ValidationError("--channels must be 0 (all) or more") }
        let dataset = try openDataset(data, train: split == "train")
        let names = dataset.classNames
        func resolve(_ s: String) throws -> Int {
            let t = s.trimmingCharacters(in: .whitespaces)
            if let i = Int(t), names.indices.contains(i) { return i }
            if let i = names.firstIndex(where: { $0.caseInsensitiveCompare(t) == .orderedSame }) { return i }
            throw ValidationError("unknown class '\(t)' in \(dataset.name); classes: "
                                  + names.enumerated().prefix(50).map { "\($0.offset) \($0.element)" }.joined(separator: ", ")
                                  + (names.count > 50 ? ", …" : ""))
        }
        let chosen = try classes.map { try $0.split(separator: ",").map { try resolve(String($0)) } } ?? Array(names.indices.prefix(4))
        let instance = try perInstance.map(resolve)
        let requestedBlocks = blocks.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

        // The same evaluation preprocessing as `senet eval`.
        let (net, _) = try buildModel(model, weights: weights, numClasses: nil, inChannels: dataset.channels)
        let plan = DataPlan.make(spec: data, dataset: dataset, augment: "none")
        let stats = try collectExcitations(model: net, modelName: model, dataset: dataset, transform: plan.evalTransform,
                                           blocks: requestedBlocks, requiredClasses: chosen + (instance.map { [$0] } ?? []),
                                           imagesPerClass: imagesPerClass, batchSize: batchSize, workers: workers)

        let dir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let sampled = Dictionary(uniqueKeysWithValues: stats.blocks.map { ($0.name, sampleChannels($0.channels)) })
        try csv(stats, classes: chosen, sampled: sampled).write(to: dir.appendingPathComponent("excitations.csv"), atomically: true, encoding: .utf8)
        try figure6(stats, classes: chosen, sampled: sampled).write(to: dir.appendingPathComponent("excitations.svg"), atomically: true, encoding: .utf8)
        var written = ["excitations.csv", "excitations.svg"]
        if let instance {
            try figure7(stats, cls: instance, sampled: sampled).write(to: dir.appendingPathComponent("excitations-instance.svg"), atomically: true, encoding: .utf8)
            written.append("excitations-instance.svg")
        }
        let counts = chosen.map { "\(names[$0]) \(stats.imagesPerClass[$0])" }.joined(separator: ", ")
        print("\(model): \(stats.blocks.map(\.name).joined(separator: ", ")) over \(stats.imagesPerClass.reduce(0, +)) images of \(dataset.name) "
              + "(\(counts)); wrote \(written.map { dir.appendingPathComponent($0).path }.joined(separator: ", "))")
    }

    func sampleChannels(_ c: Int) -> [Int] {
        let m = channels == 0 ? c : min(channels, c)
        if channelSampling == "first" || m >= c { return Array(0..<m) }
        if m == 1 { return [0] }
        return (0..<m).map { Int((Double($0) * Double(c - 1) / Double(m - 1)).rounded()) }
    }

    func csv(_ stats: ExcitationStatistics, classes: [Int], sampled: [String: [Int]]) -> String {
        func field(_ s: String) -> String { s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
        var text = "block,class,channel,mean,std\n"
        for b in stats.blocks {
            let chans = sampled[b.name] ?? []
            for k in classes {
                for j in chans { text += "\(b.name),\(field(stats.classNames[k])),\(j),\(g(b.mean[k][j])),\(g(b.std[k][j]))\n" }
            }
            for j in chans { text += "\(b.name),all,\(j),\(g(b.allMean[j])),\(g(b.allStd[j]))\n" }
        }
        return text
    }

    func g(_ v: Double) -> String { String(format: "%.9g", v) }

    /// The y range: [0, 1] for a sigmoid-like gate, widened when values fall outside it.
    func yRange(_ values: [Double]) -> ClosedRange<Double> {
        let lo = min(0, values.filter(\.isFinite).min() ?? 0), hi = max(1, values.filter(\.isFinite).max() ?? 1)
        return lo...hi
    }

    func layout(_ panels: Int) -> (columns: Int, rows: Int) {
        let columns = min(3, max(panels, 1))
        return (columns, (panels + columns - 1) / columns)
    }

    func xTicks(_ chans: [Int]) -> [(Double, String)] {
        guard !chans.isEmpty else { return [] }
        let step = max(1, Int((Double(chans.count) / 5).rounded(.up)))
        var ticks = stride(from: 0, to: chans.count, by: step).map { (Double($0), String(chans[$0])) }
        if ticks.last?.0 != Double(chans.count - 1) { ticks.append((Double(chans.count - 1), String(chans[chans.count - 1]))) }
        return ticks
    }

    func figure6(_ stats: ExcitationStatistics, classes: [Int], sampled: [String: [Int]]) -> String {
        let (pw, ph) = (330.0, 200.0)
        let (cols, rows) = layout(stats.blocks.count)
        let cellW = pw + 70, cellH = ph + 80
        var panels: [SVGPanel] = []
        for (i, b) in stats.blocks.enumerated() {
            let chans = sampled[b.name] ?? []
            let values = classes.flatMap { k in chans.map { b.mean[k][$0] } } + chans.map { b.allMean[$0] }
            var p = SVGPanel(left: 55 + Double(i % cols) * cellW, top: 50 + Double(i / cols) * cellH, width: pw, height: ph,
                             x: 0...Double(max(chans.count - 1, 1)), y: yRange(values))
            p.axes(title: b.name, xLabel: "channel index", yLabel: "activation", xTicks: xTicks(chans))
            for (n, k) in classes.enumerated() {
                p.polyline(chans.enumerated().map { (Double($0.offset), b.mean[k][$0.element]) }, color: plotColors[n % plotColors.count])
            }
            p.polyline(chans.enumerated().map { (Double($0.offset), b.allMean[$0.element]) }, color: "#000000", width: 1.8, dashed: true)
            panels.append(p)
        }
        let width = 20 + Double(cols) * cellW
        var legend = classes.enumerated().map { (label: stats.classNames[$0.element], color: plotColors[$0.offset % plotColors.count], dashed: false) }
        legend.append((label: "all", color: "#000000", dashed: true))
        let top = 50 + Double(rows) * cellH - 20
        let height = top + Double(legendRows(legend.map(\.label), width: width)) * 18 + 10
        let perClass = stats.imagesPerClass.filter { $0 > 0 }
        let title = "\(model): mean excitation per channel (\(perClass.min() ?? 0)\(perClass.min() == perClass.max() ? "" : "–\(perClass.max() ?? 0)") images per class)"
        return svgDocument(width: width, height: height, title: title, panels: panels, legend: legend, legendTop: top)
    }

    func figure7(_ stats: ExcitationStatistics, cls: Int, sampled: [String: [Int]]) -> String {
        let (pw, ph) = (330.0, 200.0)
        let (cols, rows) = layout(stats.blocks.count)
        let cellW = pw + 70, cellH = ph + 80
        let color = plotColors[0]
        var panels: [SVGPanel] = []
        for (i, b) in stats.blocks.enumerated() {
            let chans = sampled[b.name] ?? []
            let mean = chans.map { b.mean[cls][$0] }, sd = chans.map { b.std[cls][$0] }
            let lower = zip(mean, sd).map { $0 - $1 }, upper = zip(mean, sd).map { $0 + $1 }
            var p = SVGPanel(left: 55 + Double(i % cols) * cellW, top: 50 + Double(i / cols) * cellH, width: pw, height: ph,
                             x: 0...Double(max(chans.count - 1, 1)), y: yRange(lower + upper))
            p.axes(title: b.name, xLabel: "channel index", yLabel: "activation", xTicks: xTicks(chans))
            let xs = chans.indices.map(Double.init)
            p.band(x: xs, lower: lower, upper: upper, color: color)
            p.polyline(Array(zip(xs, mean)), color: color, width: 1.8)
            panels.append(p)
        }
        let width = 20 + Double(cols) * cellW
        let top = 50 + Double(rows) * cellH - 20
        let title = "\(model): excitations of '\(stats.classNames[cls])' over \(stats.imagesPerClass[cls]) images (mean ± std)"
        return svgDocument(width: width, height: top + 28, title: title, panels: panels,
                           legend: [(label: "\(stats.classNames[cls]): mean (line) ± 1 std over its images (band)", color: color, dashed: false)], legendTop: top)
    }
}
