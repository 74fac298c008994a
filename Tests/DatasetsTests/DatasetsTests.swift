// Readers: IDX on the real Fashion-MNIST and on damaged files, CIFAR binary and ImageFolder
// built from the foolbox sample images, and `openDataset`'s spec parsing.

import Foundation
import Testing
@testable import Datasets
import ImageIO
import TensorCore

@Suite struct IDXTests {
    /// Expected values read with Python's gzip + struct from Debian's files (not with this reader).
    @Test func fashionMNISTTrain() throws {
        try requireFashionMNIST()
        let ds = try fashionTrain.get()
        #expect(ds.count == 60000)
        #expect(ds.width == 28 && ds.height == 28 && ds.channels == 1)
        #expect(ds.classNames == IDXDataset.fashionMNISTClassNames)
        #expect(Array(ds.labels.prefix(10)) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
        #expect(ds.labels.last == 5)
        let first = try ds.image(at: 0)
        #expect(Array(first.pixels[(14 * 28 + 10)..<(14 * 28 + 18)]) == [0, 0, 237, 226, 217, 223, 222, 219])
        #expect(first.pixels.reduce(0) { $0 + Int($1) } == 76247)
        #expect(try ds.image(at: 1).pixels[5 * 28 + 20] == 222)
        let last = try ds.image(at: 59999)
        #expect(last.pixels[14 * 28 + 14] == 0)
        #expect(last.pixels.reduce(0) { $0 + Int($1) } == 16684)
        // Every class has 6,000 training images.
        #expect(Dictionary(grouping: ds.labels, by: { $0 }).values.map(\.count).allSatisfy { $0 == 6000 })
    }

    @Test func fashionMNISTTestThroughSpec() throws {
        try requireFashionMNIST()
        let ds = try openDataset("fashion-mnist", train: false)
        #expect(ds.count == 10000)
        #expect(ds.name == "idx:/usr/share/datasets/fashion-mnist (test)")
        #expect(Array(ds.labels.prefix(10)) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
        let first = try ds.image(at: 0)
        #expect(Array(first.pixels[(14 * 28 + 10)..<(14 * 28 + 18)]) == [0, 0, 98, 136, 110, 109, 110, 162])
        #expect(first.pixels.reduce(0) { $0 + Int($1) } == 33456)
        #expect(try ds.image(at: 1).pixels[5 * 28 + 20] == 220)
        let last = try ds.image(at: 9999)
        #expect(last.pixels[14 * 28 + 14] == 132)
        #expect(Array(last.pixels[(20 * 28 + 5)..<(20 * 28 + 10)]) == [31, 58, 50, 53, 54])
        #expect(ds.labels[9999] == 5)
    }

    /// A 5-image 4×3 IDX pair, raw and gzip, reads the same; names default to digits.
    @Test func smallRawAndGzip() throws {
        let dir = try TemporaryDirectory("idx")
        let pixels = (0..<60).map { UInt8($0 * 4) }
        try dir.write("raw/train-images-idx3-ubyte", idxBytes(sizes: [5, 3, 4], data: pixels))
        try dir.write("raw/train-labels-idx1-ubyte", idxBytes(sizes: [5], data: [3, 1, 4, 1, 5]))
        let raw = try IDXDataset(directory: dir.file("raw"), train: true)
        #expect(raw.count == 5 && raw.width == 4 && raw.height == 3)
        #expect(raw.labels == [3, 1, 4, 1, 5])
        #expect(raw.classNames == (0..<10).map(String.init))
        #expect(try raw.image(at: 2) == Image8(width: 4, height: 3, channels: 1, pixels: Array(pixels[24..<36])))

        for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
            try FileManager.default.createDirectory(atPath: dir.file("gz"), withIntermediateDirectories: true)
            try FileManager.default.moveItem(atPath: dir.file("raw/" + name), toPath: dir.file("gz/" + name))
            try gzipFile(dir.file("gz/" + name))
            try FileManager.default.removeItem(atPath: dir.file("gz/" + name))
        }
        let gz = try IDXDataset(directory: dir.file("gz"), train: true, classNames: ["a", "b", "c", "d", "e", "f"])
        #expect(gz.labels == raw.labels && gz.pixels == raw.pixels)
        #expect(gz.classNames.count == 6)
    }

    /// Each damage gives a one-line DatasetError naming the file and the problem.
    @Test func damagedFiles() throws {
        let dir = try TemporaryDirectory("idx-bad")
        let images = idxBytes(sizes: [5, 3, 4], data: [UInt8](repeating: 7, count: 60))
        let labels = idxBytes(sizes: [5], data: [0, 1, 2, 3, 4])
        func expectError(_ images: [UInt8]?, _ labels: [UInt8]?, gzipImages: Bool = false,
                         _ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
            let sub = UUID().uuidString
            if let images { try dir.write("\(sub)/train-images-idx3-ubyte", images) }
            if let labels { try dir.write("\(sub)/train-labels-idx1-ubyte", labels) }
            if gzipImages {
                try gzipFile(dir.file("\(sub)/train-images-idx3-ubyte"))
                try FileManager.default.removeItem(atPath: dir.file("\(sub)/train-images-idx3-ubyte"))
            }
            do {
                _ = try IDXDataset(directory: dir.file(sub), train: true)
                Issue.record("no error; expected \(fragments)", sourceLocation: sourceLocation)
            } catch let error as DatasetError {
                for f in fragments {
                    #expect(error.description.contains(f), "\(error) lacks '\(f)'", sourceLocation: sourceLocation)
                }
                #expect(!error.description.contains("\n"), sourceLocation: sourceLocation)
            }
        }
        var badMagic = images; badMagic[3] = 4
        try expectError(badMagic, labels, ["train-images-idx3-ubyte", "magic", "00 00 08 04"])
        var badType = labels; badType[2] = 0x0D
        try expectError(images, badType, ["train-labels-idx1-ubyte", "magic"])
        try expectError(Array(images.dropLast(7)), labels, ["train-images-idx3-ubyte", "truncated"])
        try expectError(Array(images.prefix(10)), labels, ["train-images-idx3-ubyte", "truncated", "dimension sizes"])
        try expectError(images + [0], labels, ["train-images-idx3-ubyte", "trailing"])
        try expectError(images, idxBytes(sizes: [4], data: [0, 1, 2, 3]), ["4 labels", "5 images"])
        try expectError(images, idxBytes(sizes: [5], data: [0, 1, 10, 3, 4]), ["label 10 of sample 2", "out of range"])
        try expectError(images, nil, ["missing train-labels-idx1-ubyte"])
        try expectError(idxBytes(sizes: [1 << 20, 1 << 10, 1 << 10], data: []), labels, ["announce more than"])
        // A gzip bomb: the header announces 60 bytes, the stream holds 4 MB more; reading stops
        // at the first byte past the announced size.
        try expectError(images + [UInt8](repeating: 0, count: 4 << 20), labels, gzipImages: true, ["trailing bytes"])
    }

    @Test func damagedGzip() throws {
        try requireFashionMNIST()
        let dir = try TemporaryDirectory("idx-gz")
        let gz = try [UInt8](Data(contentsOf: URL(fileURLWithPath: fashionMNISTDirectory + "/t10k-images-idx3-ubyte.gz")))
        let labels = try [UInt8](Data(contentsOf: URL(fileURLWithPath: fashionMNISTDirectory + "/t10k-labels-idx1-ubyte.gz")))
        try dir.write("cut/t10k-images-idx3-ubyte.gz", Array(gz.prefix(gz.count / 2)))
        try dir.write("cut/t10k-labels-idx1-ubyte.gz", labels)
        #expect { try IDXDataset(directory: dir.file("cut"), train: false) } throws: { error in
            let d = (error as? DatasetError)?.description ?? ""
            return d.contains("t10k-images-idx3-ubyte.gz") && d.contains("truncated")
        }
        var flipped = gz
        for i in stride(from: gz.count / 3, to: gz.count / 3 + 64, by: 1) { flipped[i] ^= 0x5A }
        try dir.write("flip/t10k-images-idx3-ubyte.gz", flipped)
        try dir.write("flip/t10k-labels-idx1-ubyte.gz", labels)
        #expect { try IDXDataset(directory: dir.file("flip"), train: false) } throws: { error in
            let d = (error as? DatasetError)?.description ?? ""
            // Depending on where the damage lands, inflate fails, ends early, or produces the wrong amount.
            return d.contains("t10k-images-idx3-ubyte.gz")
                && ["corrupt gzip", "truncated", "trailing"].contains { d.contains($0) }
        }
        // A wrong CRC-32 in the gzip trailer is caught once the data has been read.
        var badCRC = labels
        badCRC[badCRC.count - 8] ^= 0xFF
        try dir.write("crc/t10k-images-idx3-ubyte.gz", gz)
        try dir.write("crc/t10k-labels-idx1-ubyte.gz", badCRC)
        #expect { try IDXDataset(directory: dir.file("crc"), train: false) } throws: { error in
            let d = (error as? DatasetError)?.description ?? ""
            return d.contains("t10k-labels-idx1-ubyte.gz") && d.contains("corrupt gzip") && d.contains("incorrect data check")
        }
    }
}

@Suite struct CIFARTests {
    /// Writes CIFAR-10 records from the 20 foolbox CIFAR-10 PNGs (4 per training batch file, the
    /// same 20 as the test batch), then checks pixels and labels round-trip.
    @Test func cifar10RoundTrip() throws {
        let files = try foolboxImages("cifar10_")
        let images = try files.map { try ImageDecoder.load(path: $0.path) }
        #expect(images.allSatisfy { $0.width == 32 && $0.height == 32 })
        func record(_ i: Int) -> [UInt8] {
            let px = images[i].pixels
            return [UInt8(files[i].label)] + (0..<3).flatMap { c in (0..<1024).map { px[3 * $0 + c] } }
        }
        let dir = try TemporaryDirectory("cifar10")
        for b in 0..<5 { try dir.write("data_batch_\(b + 1).bin", (4 * b..<4 * b + 4).flatMap(record)) }
        try dir.write("test_batch.bin", (0..<20).reversed().flatMap(record))
        let names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        try dir.write("batches.meta.txt", Array((names.joined(separator: "\n") + "\n\n").utf8))

        let train = try openDataset("cifar10:" + dir.path, train: true)
        #expect(train.count == 20 && train.channels == 3)
        #expect(train.classNames == names)
        #expect(train.labels == files.map(\.label))
        #expect(files.map(\.label).prefix(4) == [3, 8, 8, 0])
        for i in 0..<20 {
            let img = try train.image(at: i)
            #expect(img.width == 32 && img.height == 32 && img.pixels == images[i].pixels)
        }
        let test = try CIFARDataset(directory: dir.path, variant: .cifar10, train: false)
        #expect(test.labels == files.map(\.label).reversed())
        #expect(try test.image(at: 0).pixels == images[19].pixels)

        try dir.write("data_batch_3.bin", Array(record(0).dropLast()))
        #expect { try CIFARDataset(directory: dir.path, variant: .cifar10, train: true) } throws: {
            "\($0)".contains("data_batch_3.bin") && "\($0)".contains("3073-byte")
        }
        var bad = record(0); bad[0] = 10
        try dir.write("data_batch_3.bin", bad)
        #expect { try CIFARDataset(directory: dir.path, variant: .cifar10, train: true) } throws: {
            "\($0)".contains("data_batch_3.bin") && "\($0)".contains("label 10 of record 0")
        }
        try FileManager.default.removeItem(atPath: dir.file("data_batch_3.bin"))
        #expect { try CIFARDataset(directory: dir.path, variant: .cifar10, train: true) } throws: {
            "\($0)".contains("missing data_batch_3.bin")
        }
    }

    /// CIFAR-100 in the tarball's folder, two label bytes, no names file: fine labels, numbered names.
    @Test func cifar100FineLabels() throws {
        let files = try foolboxImages("cifar100_")
        let images = try files.map { try ImageDecoder.load(path: $0.path) }
        let dir = try TemporaryDirectory("cifar100")
        let records = (0..<20).flatMap { i -> [UInt8] in
            let px = images[i].pixels
            return [UInt8(files[i].label / 5), UInt8(files[i].label)] + (0..<3).flatMap { c in (0..<1024).map { px[3 * $0 + c] } }
        }
        try dir.write("cifar-100-binary/train.bin", records)
        try dir.write("cifar-100-binary/test.bin", Array(records.prefix(2 * 3074)))
        let train = try CIFARDataset(directory: dir.path, variant: .cifar100, train: true)
        #expect(train.labels == files.map(\.label))
        #expect(Array(train.labels.prefix(3)) == [49, 33, 72])
        #expect(train.coarseLabels == files.map { $0.label / 5 })
        #expect(train.classNames == (0..<100).map(String.init))
        #expect(try (0..<20).allSatisfy { try train.image(at: $0).pixels == images[$0].pixels })
        #expect(try openDataset("cifar100:" + dir.path, train: false).count == 2)
    }
}

@Suite struct ImageFolderTests {
    /// ImageNet JPEGs under train/<label>/ (label folders sort as strings, as torchvision's), one in
    /// a nested folder, plus a folder of grayscale Fashion-MNIST PNGs that decode to RGB.
    @Test func layoutOrderAndDecoding() throws {
        let jpegs = try foolboxImages("imagenet_")
        let grays = try foolboxImages("fashionMNIST_")
        let dir = try TemporaryDirectory("folder")
        let fm = FileManager.default
        for (i, f) in jpegs.enumerated() {
            let target = i == 0 ? "train/\(f.label)/nested/a.jpg" : "train/\(f.label)/img\(i).JPG"
            try fm.createDirectory(atPath: dir.file((target as NSString).deletingLastPathComponent), withIntermediateDirectories: true)
            try fm.copyItem(atPath: f.path, toPath: dir.file(target))
        }
        for (i, f) in grays.prefix(3).enumerated() {
            try fm.createDirectory(atPath: dir.file("train/gray"), withIntermediateDirectories: true)
            try fm.copyItem(atPath: f.path, toPath: dir.file("train/gray/g\(i).png"))
        }
        try dir.write("train/gray/notes.txt", Array("not an image".utf8))
        try fm.createDirectory(atPath: dir.file("val/x"), withIntermediateDirectories: true)
        try fm.copyItem(atPath: jpegs[1].path, toPath: dir.file("val/x/one.jpeg"))

        let ds = try ImageFolderDataset(root: dir.path, split: "train")
        let expectedClasses = (Set(jpegs.map { String($0.label) }) + ["gray"]).sorted()
        #expect(ds.classNames == expectedClasses)
        #expect(ds.classNames.first == "129" && ds.classNames.contains("99") && ds.classNames.last == "gray")
        #expect(ds.count == jpegs.count + 3 && ds.channels == 3)
        #expect(ds.paths.filter { $0.hasSuffix(".txt") }.isEmpty)
        // Class 243 (the first JPEG) holds only the nested file.
        let c243 = ds.classNames.firstIndex(of: "243")!
        #expect(ds.paths[ds.labels.firstIndex(of: c243)!].hasSuffix("243/nested/a.jpg"))
        // Labels agree with the folder each path sits in.
        for (p, label) in zip(ds.paths, ds.labels) {
            #expect(p.contains("/train/\(ds.classNames[label])/"))
        }
        let j = ds.paths.firstIndex { $0.hasSuffix("img3.JPG") }!
        let rgb = try ImageDecoder.load(path: jpegs[3].path)
        #expect(try ds.image(at: j) == Image8(width: rgb.width, height: rgb.height, channels: 3, pixels: rgb.pixels))
        let g = try ds.image(at: ds.labels.firstIndex(of: ds.classNames.count - 1)!)
        #expect(g.channels == 3 && g.width == 28)
        var grayOK = true
        for i in stride(from: 0, to: g.pixels.count, by: 3) where g.pixels[i] != g.pixels[i + 1] || g.pixels[i] != g.pixels[i + 2] {
            grayOK = false
        }
        #expect(grayOK)

        let val = try openDataset("folder:" + dir.path, train: false)
        #expect(val.count == 1 && val.classNames == ["x"])

        // A truncated JPEG throws a DatasetError naming the file.
        let jpeg = try [UInt8](Data(contentsOf: URL(fileURLWithPath: jpegs[2].path)))
        let broken = try dir.write("val/x/zz_broken.jpg", Array(jpeg.prefix(jpeg.count / 3)))
        let val2 = try ImageFolderDataset(root: dir.path, split: "val")
        #expect { try val2.image(at: 1) } throws: { ($0 as? DatasetError)?.description.contains(broken) == true }

        try fm.createDirectory(atPath: dir.file("val/empty"), withIntermediateDirectories: true)
        #expect { try ImageFolderDataset(root: dir.path, split: "val") } throws: { "\($0)".contains("val/empty holds no") }
    }
}

@Suite struct SpecTests {
    @Test func badSpecs() throws {
        let dir = try TemporaryDirectory("spec")
        try dir.write("f", [1])
        let cases: [(String, String)] = [
            ("mnist", "expected idx:DIR"),
            ("png:/tmp", "unknown kind 'png'"),
            ("idx:", "no directory"),
            ("idx:/no/such/dir", "no such directory"),
            ("cifar10:" + dir.file("f"), "not a directory"),
            ("cifar10:" + dir.path, "missing data_batch_1.bin"),
            ("cifar100:" + dir.path, "missing train.bin"),
            ("idx:" + dir.path, "missing train-images-idx3-ubyte"),
            ("folder:" + dir.path, "missing the train/ folder"),
        ]
        for (spec, fragment) in cases {
            #expect { try openDataset(spec, train: true) } throws: { error in
                let d = (error as? DatasetError)?.description ?? ""
                return d.contains(fragment) && !d.contains("\n")
            }
        }
    }
}
