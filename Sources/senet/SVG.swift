// A small SVG writer for the project's plots: framed panels with y ticks, polylines, bands and a
// legend. Plain strings, no dependencies; every plot the CLI draws is readable without Python.

import Foundation

/// Line colours in plotting order (distinct hues, all far from black and grey).
let plotColors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f3fbf"]

func svgEscape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "'", with: "&apos;")
}

/// One framed panel: data coordinates (x in xRange, y in yRange) mapped into a rectangle.
struct SVGPanel {
    let left: Double, top: Double, width: Double, height: Double
    let xRange: ClosedRange<Double>, yRange: ClosedRange<Double>
    private(set) var body = ""

    init(left: Double, top: Double, width: Double, height: Double, x: ClosedRange<Double>, y: ClosedRange<Double>) {
        (self.left, self.top, self.width, self.height) = (left, top, width, height)
        xRange = x.lowerBound == x.upperBound ? (x.lowerBound - 1)...(x.upperBound + 1) : x
        yRange = y.lowerBound == y.upperBound ? (y.lowerBound - 1)...(y.upperBound + 1) : y
    }

    func px(_ x: Double) -> Double { left + (x - xRange.lowerBound) / (xRange.upperBound - xRange.lowerBound) * width }
    func py(_ y: Double) -> Double { top + (1 - (y - yRange.lowerBound) / (yRange.upperBound - yRange.lowerBound)) * height }

    /// Frame, title, horizontal grid with `yTicks` labelled ticks, x ticks at `xTicks` (position,
    /// label), and axis labels.
    mutating func axes(title: String, xLabel: String, yLabel: String, yTicks: Int = 5, xTicks: [(Double, String)]) {
        body += "<rect x='\(f(left))' y='\(f(top))' width='\(f(width))' height='\(f(height))' fill='none' stroke='#888'/>\n"
        body += "<text x='\(f(left + width / 2))' y='\(f(top - 8))' text-anchor='middle' font-size='13' font-weight='bold'>\(svgEscape(title))</text>\n"
        for i in 0...yTicks {
            let v = yRange.lowerBound + (yRange.upperBound - yRange.lowerBound) * Double(i) / Double(yTicks)
            body += "<line x1='\(f(left))' x2='\(f(left + width))' y1='\(f(py(v)))' y2='\(f(py(v)))' stroke='#eee'/>\n"
            body += "<text x='\(f(left - 4))' y='\(f(py(v) + 3.5))' text-anchor='end' font-size='10'>\(String(format: "%.3g", v))</text>\n"
        }
        for (x, label) in xTicks {
            body += "<line x1='\(f(px(x)))' x2='\(f(px(x)))' y1='\(f(top + height))' y2='\(f(top + height + 4))' stroke='#888'/>\n"
            body += "<text x='\(f(px(x)))' y='\(f(top + height + 14))' text-anchor='middle' font-size='10'>\(svgEscape(label))</text>\n"
        }
        body += "<text x='\(f(left + width / 2))' y='\(f(top + height + 28))' text-anchor='middle' font-size='11'>\(svgEscape(xLabel))</text>\n"
        body += "<text transform='translate(\(f(left - 34)),\(f(top + height / 2))) rotate(-90)' text-anchor='middle' font-size='11'>\(svgEscape(yLabel))</text>\n"
    }

    mutating func polyline(_ points: [(Double, Double)], color: String, width w: Double = 1.6, dashed: Bool = false) {
        let pts = points.filter { $0.1.isFinite }.map { "\(f(px($0.0))),\(f(py($0.1)))" }
        guard !pts.isEmpty else { return }
        body += "<polyline fill='none' stroke='\(color)' stroke-width='\(w)' stroke-linejoin='round'"
            + (dashed ? " stroke-dasharray='5 3'" : "") + " points='\(pts.joined(separator: " "))'/>\n"
    }

    /// A filled band between `lower` and `upper` (same x positions).
    mutating func band(x: [Double], lower: [Double], upper: [Double], color: String, opacity: Double = 0.25) {
        guard !x.isEmpty else { return }
        let top = zip(x, upper).map { "\(f(px($0))),\(f(py($1)))" }
        let bottom = zip(x, lower).reversed().map { "\(f(px($0))),\(f(py($1)))" }
        body += "<polygon fill='\(color)' fill-opacity='\(opacity)' stroke='none' points='\((top + bottom).joined(separator: " "))'/>\n"
    }
}

/// A whole picture: white background, optional title, panels and a legend row.
func svgDocument(width: Double, height: Double, title: String?, panels: [SVGPanel], legend: [(label: String, color: String, dashed: Bool)],
                 legendTop: Double) -> String {
    var s = "<svg xmlns='http://www.w3.org/2000/svg' width='\(f(width))' height='\(f(height))' font-family='sans-serif'>\n"
    s += "<rect width='100%' height='100%' fill='white'/>\n"
    if let title { s += "<text x='\(f(width / 2))' y='16' text-anchor='middle' font-size='14'>\(svgEscape(title))</text>\n" }
    for p in panels { s += p.body }
    var x = 20.0, y = legendTop
    for item in legend {
        let w = 40 + Double(item.label.count) * 6.5
        if x + w > width - 10 { x = 20; y += 18 }
        s += "<line x1='\(f(x))' x2='\(f(x + 26))' y1='\(f(y - 4))' y2='\(f(y - 4))' stroke='\(item.color)' stroke-width='2.5'"
            + (item.dashed ? " stroke-dasharray='5 3'" : "") + "/>"
        s += "<text x='\(f(x + 32))' y='\(f(y))' font-size='11'>\(svgEscape(item.label))</text>\n"
        x += w
    }
    return s + "</svg>\n"
}

/// Rows the legend needs at `width`.
func legendRows(_ labels: [String], width: Double) -> Int {
    var x = 20.0, rows = labels.isEmpty ? 0 : 1
    for l in labels {
        let w = 40 + Double(l.count) * 6.5
        if x + w > width - 10 { x = 20; rows += 1 }
        x += w
    }
    return rows
}

private func f(_ v: Double) -> String { String(format: "%.1f", v) }
