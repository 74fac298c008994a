// The paper's excitation analysis (§7.2, Figs. 6 and 7): the SE blocks' excitation vectors s,
// averaged per class over a set of images of each class, and over all of them.

import Datasets
import Foundation
import NN
import TensorCore

/// An analysis that cannot run as asked (unknown block, empty class, model without SE blocks).
public struct AnalysisError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Mean and standard deviation of every channel's excitation, per class and over all images.
public struct ExcitationStatistics: Sendable {
    public struct Block: Sendable {
        public let name: String
        public let path: String
        public let channels: Int
        /// Per class (index = class label): mean and population standard deviation over that
        /// class's images, per channel. Empty for classes without images.
        public var mean: [[Double]]
        public var std: [[Double]]
        /// Over every image analysed.
        public var allMean: [Double]
        public var allStd: [Double]
    }

    public let classNames: [String]
    /// Images analysed per class.
    public let imagesPerClass: [Int]
    public var blocks: [Block]

    public func block(_ name: String) -> Block? { blocks.first { $0.name == name } }
}

/// A view of chosen samples of a dataset, in the given order.
struct IndexedSubset: Dataset {
    let base: Dataset
    let indices: [Int]
    var count: Int { indices.count }
    var classNames: [String] { base.classNames }
    var labels: [Int] { let l = base.labels; return indices.map { l[$0] } }
    var channels: Int { base.channels }
    var name: String { base.name }
    func image(at index: Int) throws -> Image8 { try base.image(at: indices[index]) }
}

/// The default blocks of Fig. 6: the last block of every stage and every block of the last stage
/// (for SE-ResNet-50: SE_2_3, SE_3_4, SE_4_6, SE_5_1, SE_5_2, SE_5_3).
public func defaultExcitationBlocks(_ names: [String]) -> [String] {
    func stage(_ n: String) -> Int { Int(n.split(separator: "_").dropFirst().first ?? "") ?? 0 }
    let stages = names.map(stage)
    guard let last = stages.max() else { return [] }
    var out: [String] = []
    for (i, n) in names.enumerated() {
        let isLastOfStage = i + 1 == names.count || stages[i + 1] != stages[i]
        if stages[i] == last || isLastOfStage { out.append(n) }
    }
    return out
}

/// Runs the first `imagesPerClass` images (in dataset order) of every class through `model` in
/// evaluation mode and accumulates the excitations of `blocks` (nil: `defaultExcitationBlocks`).
/// `requiredClasses` must each have at least one image.
public func collectExcitations(model: Module, modelName: String, dataset: Dataset, transform: Transform,
                               blocks requested: [String]?, requiredClasses: [Int], imagesPerClass: Int,
                               batchSize: Int = 64, workers: Int = 2) throws -> ExcitationStatistics {
    guard imagesPerClass >= 1 else { throw AnalysisError("--images-per-class must be at least 1") }
    let classes = dataset.classNames.count
    var chosen = [[Int]](repeating: [], count: classes)
    for (i, label) in dataset.labels.enumerated() where label >= 0 && label < classes && chosen[label].count < imagesPerClass {
        chosen[label].append(i)
    }
    for c in requiredClasses where chosen[c].isEmpty {
        throw AnalysisError("class '\(dataset.classNames[c])' (\(c)) has no images in \(dataset.name)")
    }
    let order = chosen.flatMap { $0 }
    guard !order.isEmpty else { throw AnalysisError("\(dataset.name) has no images") }
    let subset = IndexedSubset(base: dataset, indices: order)
    let loader = DataLoader(dataset: subset, transform: transform, batchSize: batchSize, sampler: .sequential, seed: 0,
                            dropLast: false, workers: workers)
    model.eval()

    var selected: [String] = []
    var sums: [String: (sum: [[Double]], squares: [[Double]])] = [:]
    var infos: [String: (path: String, channels: Int)] = [:]
    var seen = [Int](repeating: 0, count: classes)
    let stream = loader.batches(epoch: 0)
    defer { stream.cancel() }
    var first = true
    while let batch = try stream.next() {
        let wanted = Set(selected)
        let capture = ActivationCapture(excitations: { first || wanted.contains($0) })
        _ = withoutGradients { capture.capture(model, inputHeight: batch.images.shape[2]) { model(batch.images) } }
        if first {
            let names = capture.seBlocks.map(\.name)
            guard !names.isEmpty else { throw AnalysisError("model '\(modelName)' has no SE blocks: there are no excitations to analyse") }
            if let requested {
                let unknown = requested.filter { !names.contains($0) }
                guard unknown.isEmpty else {
                    throw AnalysisError("unknown SE block\(unknown.count > 1 ? "s" : "") \(unknown.joined(separator: ", ")) in '\(modelName)'; "
                                        + "valid blocks: \(names.joined(separator: ", "))")
                }
                selected = requested
            } else {
                selected = defaultExcitationBlocks(names)
            }
            for b in capture.seBlocks where selected.contains(b.name) {
                infos[b.name] = (b.path, b.channels)
                sums[b.name] = (Array(repeating: Array(repeating: 0, count: b.channels), count: classes),
                                Array(repeating: Array(repeating: 0, count: b.channels), count: classes))
            }
            first = false
        }
        for name in selected {
            guard let s = capture.excitation(name), var acc = sums[name] else { continue }
            let c = s.shape[1], values = s.scalars
            for (row, label) in batch.labels.enumerated() {
                for j in 0..<c {
                    let v = Double(values[row * c + j])
                    acc.sum[label][j] += v
                    acc.squares[label][j] += v * v
                }
            }
            sums[name] = acc
        }
        for label in batch.labels { seen[label] += 1 }
    }

    var out: [ExcitationStatistics.Block] = []
    for name in selected {
        guard let acc = sums[name], let info = infos[name] else { continue }
        var mean = [[Double]](repeating: [], count: classes), std = mean
        var total = [Double](repeating: 0, count: info.channels), totalSq = total
        for k in 0..<classes where seen[k] > 0 {
            let n = Double(seen[k])
            mean[k] = acc.sum[k].map { $0 / n }
            std[k] = zip(acc.squares[k], mean[k]).map { (max($0 / n - $1 * $1, 0)).squareRoot() }
            for j in 0..<info.channels { total[j] += acc.sum[k][j]; totalSq[j] += acc.squares[k][j] }
        }
        let n = Double(seen.reduce(0, +))
        let allMean = total.map { $0 / n }
        let allStd = zip(totalSq, allMean).map { (max($0 / n - $1 * $1, 0)).squareRoot() }
        out.append(.init(name: name, path: info.path, channels: info.channels, mean: mean, std: std, allMean: allMean, allStd: allStd))
    }
    return ExcitationStatistics(classNames: dataset.classNames, imagesPerClass: seen, blocks: out)
}
