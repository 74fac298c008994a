// torchvision's `ImageFolder` layout: ROOT/<split>/<class>/**/<image>. Classes are the
// sub-folder names sorted by code point (Python's `sorted`); samples are listed as
// `make_dataset` does — for each class in order, its folders sorted by path (`sorted(os.walk)`),
// each folder's files sorted — keeping the JPEG and PNG files. Images are decoded on demand.

import Foundation
import ImageIO

/// A folder-per-class image dataset, decoded lazily through ImageIO (JPEG, PNG) into 3-channel
/// RGB (gray files become R = G = B, as Pillow's `convert("RGB")`).
public struct ImageFolderDataset: Dataset {
    /// File extensions kept (compared case-insensitively).
    public static let extensions: Set<String> = ["jpg", "jpeg", "png"]

    public let count: Int
    public let classNames: [String]
    public let labels: [Int]
    public let channels = 3
    public let name: String
    /// The path of every sample, in dataset order.
    public let paths: [String]

    /// Lists `root/<split>` (split "train" or "val"). Throws when the folder is missing, holds no
    /// class folders, or a class folder holds no image (as torchvision does).
    public init(root: String, split: String) throws {
        let fm = FileManager.default
        let splitDir = (root as NSString).appendingPathComponent(split)
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: splitDir, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DatasetError("folder:\(root): missing the \(split)/ folder (expected \(split)/<class>/<image>.jpg)")
        }
        let classes = try Self.subdirectories(of: splitDir).sorted(by: codePointLess)
        guard !classes.isEmpty else { throw DatasetError("folder:\(root): \(split)/ holds no class folders") }
        var paths: [String] = [], labels: [Int] = []
        for (label, name) in classes.enumerated() {
            let files = try Self.imageFiles(under: (splitDir as NSString).appendingPathComponent(name))
            guard !files.isEmpty else {
                throw DatasetError("folder:\(root): class folder \(split)/\(name) holds no .jpg, .jpeg or .png file")
            }
            paths += files
            labels += Array(repeating: label, count: files.count)
        }
        self.paths = paths
        self.labels = labels
        self.count = paths.count
        self.classNames = classes
        self.name = "folder:\(root) (\(split))"
    }

    /// Decodes the file; any decoding failure becomes a `DatasetError` naming the file.
    public func image(at index: Int) throws -> Image8 {
        precondition(index >= 0 && index < count, "ImageFolderDataset: index \(index) out of range 0..<\(count)")
        do {
            let rgb = try ImageDecoder.load(path: paths[index])
            return Image8(width: rgb.width, height: rgb.height, channels: 3, pixels: rgb.pixels)
        } catch let error as ImageError {
            throw DatasetError(error.description)
        }
    }

    static func subdirectories(of path: String) throws -> [String] {
        let fm = FileManager.default
        let entries: [String]
        do { entries = try fm.contentsOfDirectory(atPath: path) } catch {
            throw DatasetError("\(path): cannot list: \(error.localizedDescription)")
        }
        return entries.filter { entry in
            var isDirectory: ObjCBool = false
            return fm.fileExists(atPath: (path as NSString).appendingPathComponent(entry), isDirectory: &isDirectory)
                && isDirectory.boolValue
        }
    }

    /// The image files below `dir` in `make_dataset` order: folders sorted by full path, files
    /// sorted within each folder. Symbolic links to folders are followed (`followlinks=True`).
    static func imageFiles(under dir: String) throws -> [String] {
        let fm = FileManager.default
        var folders: [(String, [String])] = []
        var pending = [dir], visited = Set<String>()
        while let folder = pending.popLast() {
            let real = (folder as NSString).resolvingSymlinksInPath
            guard visited.insert(real).inserted else { continue }
            let entries: [String]
            do { entries = try fm.contentsOfDirectory(atPath: folder) } catch {
                throw DatasetError("\(folder): cannot list: \(error.localizedDescription)")
            }
            var files: [String] = []
            for entry in entries {
                let path = (folder as NSString).appendingPathComponent(entry)
                var isDirectory: ObjCBool = false
                guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
                if isDirectory.boolValue {
                    pending.append(path)
                } else if extensions.contains((entry as NSString).pathExtension.lowercased()) {
                    files.append(entry)
                }
            }
            folders.append((folder, files.sorted(by: codePointLess)))
        }
        folders.sort { codePointLess($0.0, $1.0) }
        return folders.flatMap { folder, files in files.map { (folder as NSString).appendingPathComponent($0) } }
    }
}

/// Python's string order: lexicographic by Unicode scalar value (Swift's `<` compares
/// canonically-equivalent forms instead).
func codePointLess(_ a: String, _ b: String) -> Bool {
    a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value }
}
