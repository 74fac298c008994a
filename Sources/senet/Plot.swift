// `senet plot`: training curves from one or more metrics.jsonl files as an SVG (no dependencies).

import ArgumentParser
import Foundation

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Plot training curves (loss and top-1 per epoch) from metrics.jsonl files into an SVG.")

    @Argument(help: "metrics.jsonl files (one curve set each; label with NAME=PATH or --label).") var files: [String]
    @Option(help: "Legend label of each file, in order (repeat the option; default: NAME= prefix or the file's directory).")
    var label: [String] = []
    @Option(help: "Output SVG file.") var out: String
    @Option(help: "Title.") var title = "Training curves"

    struct Series {
        let label: String
        var epochs: [Double] = [], trainLoss: [Double] = [], valLoss: [Double] = [], valTop1: [Double] = [], trainTop1: [Double] = []
    }

    func run() throws {
        var series: [Series] = []
        guard label.count <= files.count else { throw ValidationError("\(label.count) --label values for \(files.count) files") }
        for (index, spec) in files.enumerated() {
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            var (label, path) = parts.count == 2 ? (parts[0], parts[1]) : (URL(fileURLWithPath: spec).deletingLastPathComponent().lastPathComponent, spec)
            if index < self.label.count { label = self.label[index] }
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("\(path): cannot read the metrics file")
            }
            var s = Series(label: label)
            for (n, line) in text.split(separator: "\n").enumerated() {
                guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let e = o["epoch"] as? Int else {
                    throw ValidationError("\(path):\(n + 1): not a metrics record")
                }
                s.epochs.append(Double(e))
                s.trainLoss.append(o["train_loss"] as? Double ?? .nan)
                s.trainTop1.append(100 * (o["train_top1"] as? Double ?? .nan))
                s.valLoss.append(o["val_loss"] as? Double ?? .nan)
                s.valTop1.append(100 * (o["val_top1"] as? Double ?? .nan))
            }
            series.append(s)
        }
        let svg = render(series)
        try svg.write(toFile: out, atomically: true, encoding: .utf8)
        FileHandle.standardError.write(Data("wrote \(out)\n".utf8))
    }

    /// Two panels side by side: loss (train dashed, val solid) and top-1 %.
    func render(_ series: [Series]) -> String {
        let colors = plotColors
        let (w, h, pad) = (420.0, 300.0, 48.0)
        var body = ""
        let esc = svgEscape
        func panel(x0: Double, name: String, values: (Series) -> [(String, [Double], Bool)]) {
            let all = series.flatMap { s in values(s).flatMap { $0.1 } }.filter(\.isFinite)
            let xs = series.flatMap(\.epochs)
            guard let lo = all.min(), let hi = all.max(), let xmax = xs.max() else { return }
            let (ylo, yhi) = lo == hi ? (lo - 1, hi + 1) : (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
            let xmin = min(xs.min() ?? 0, 1)
            func px(_ e: Double) -> Double { x0 + pad + (e - xmin) / max(xmax - xmin, 1) * (w - 1.5 * pad) }
            func py(_ v: Double) -> Double { 30 + (h - pad - 30) * (1 - (v - ylo) / (yhi - ylo)) }
            body += "<rect x='\(x0 + pad)' y='30' width='\(w - 1.5 * pad)' height='\(h - pad - 30)' fill='none' stroke='#999'/>\n"
            body += "<text x='\(x0 + w / 2)' y='20' text-anchor='middle' font-size='13'>\(esc(name))</text>\n"
            for i in 0...4 {
                let v = ylo + (yhi - ylo) * Double(i) / 4
                body += "<text x='\(x0 + pad - 4)' y='\(py(v) + 4)' text-anchor='end' font-size='10'>\(String(format: "%.3g", v))</text>\n"
                body += "<line x1='\(x0 + pad)' x2='\(x0 + w - pad / 2)' y1='\(py(v))' y2='\(py(v))' stroke='#eee'/>\n"
            }
            body += "<text x='\(x0 + w / 2)' y='\(h - 10)' text-anchor='middle' font-size='11'>epoch</text>\n"
            for (i, s) in series.enumerated() {
                for (_, ys, dashed) in values(s) {
                    let pts = zip(s.epochs, ys).filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }
                    guard !pts.isEmpty else { continue }
                    body += "<polyline fill='none' stroke='\(colors[i % colors.count])' stroke-width='1.6'"
                        + (dashed ? " stroke-dasharray='4 3'" : "") + " points='\(pts.joined(separator: " "))'/>\n"
                }
            }
        }
        panel(x0: 0, name: "loss (dashed: train, solid: test)") { [("train", $0.trainLoss, true), ("val", $0.valLoss, false)] }
        panel(x0: w, name: "top-1 % (dashed: train, solid: test)") { [("train", $0.trainTop1, true), ("val", $0.valTop1, false)] }
        var legend = ""
        for (i, s) in series.enumerated() {
            let y = h + 14 + Double(i) * 16
            legend += "<line x1='\(pad)' x2='\(pad + 24)' y1='\(y - 4)' y2='\(y - 4)' stroke='\(colors[i % colors.count])' stroke-width='2'/>"
            legend += "<text x='\(pad + 30)' y='\(y)' font-size='11'>\(esc(s.label))</text>\n"
        }
        // The panels and legend sit below a band that holds the figure's title alone.
        let band = 24.0
        let total = band + h + 20 + Double(series.count) * 16
        return "<svg xmlns='http://www.w3.org/2000/svg' width='\(2 * w)' height='\(total)' font-family='sans-serif'>\n"
            + "<rect width='100%' height='100%' fill='white'/>\n<text x='\(w)' y='16' text-anchor='middle' font-size='13' font-weight='bold' fill='#333'>\(esc(title))</text>\n"
            + "<g transform='translate(0,\(band))'>\n" + body + legend + "</g>\n</svg>\n"
    }
}
