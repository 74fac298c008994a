// `senet train` / `senet eval` on real data (Debian's Fashion-MNIST, installed by `make deps`):
// a run killed with SIGKILL mid-epoch and resumed ends with the same weights, bit for bit, as an
// uninterrupted run; SIGINT checkpoints and exits 130; a NaN loss stops with the step named.

import Foundation
import Testing
import _TestSupport
import Checkpoints
import TensorCore

let fashionMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"

func requireFashionMNIST() throws {
    guard FileManager.default.fileExists(atPath: fashionMNIST) else {
        throw FixtureError("Fashion-MNIST is missing (\(fashionMNIST)): run `make deps` (Debian package dataset-fashion-mnist)")
    }
}

/// Starts `senet` with `args`, returning the process (stdout/stderr to files in `dir`).
func startSenet(_ args: [String], dir: String) throws -> Process {
    let p = Process()
    p.executableURL = senetExecutable()
    p.arguments = args
    FileManager.default.createFile(atPath: dir + "/stdout", contents: nil)
    FileManager.default.createFile(atPath: dir + "/stderr", contents: nil)
    p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/stdout"))
    p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/stderr"))
    try p.run()
    return p
}

/// An empty temporary directory named `name` (emptied if a previous run left it).
func freshDirectory(_ name: String) throws -> String {
    let d = temporaryPath(name)
    try? FileManager.default.removeItem(atPath: d)
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

/// The model tensors (not the optimizer state or metadata) of a checkpoint.
func modelTensors(_ path: String) throws -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    for (k, t) in try SafeTensors.read(URL(fileURLWithPath: path)).entries where !k.hasPrefix("optimizer.") { out[k] = t.scalars }
    return out
}

@Suite("senet train on Fashion-MNIST", .serialized)
struct TrainCLITests {
    /// 768 images, batch 64: 12 steps per epoch, 3 epochs.
    static func args(_ out: String) -> [String] {
        ["train", "--model", "resnet20", "--data", "fashion-mnist", "--limit", "768", "--batch-size", "64",
         "--epochs", "3", "--lr", "0.05", "--augment", "cifar", "--seed", "7", "--val-limit", "512", "--out", out]
    }

    @Test func killedMidEpochThenResumedEqualsUninterrupted() throws {
        try requireFashionMNIST()
        let a = try freshDirectory("uninterrupted"), b = try freshDirectory("killed")
        // The same options as the killed run (they are part of the checkpoint's metadata).
        let (status, _, err) = try runSenet(Self.args(a) + ["--checkpoint-every", "4"])
        #expect(status == 0, "\(err)")
        // The second run checkpoints every 4 steps; kill -9 it once its second epoch is under way.
        let p = try startSenet(Self.args(b) + ["--checkpoint-every", "4"], dir: b)
        let metrics = b + "/metrics.jsonl"
        let deadline = Date().addingTimeInterval(300)
        while p.isRunning && Date() < deadline {
            if let text = try? String(contentsOfFile: metrics, encoding: .utf8), text.contains("\"epoch\":1") { break }
            Thread.sleep(forTimeInterval: 0.02)
        }
        Thread.sleep(forTimeInterval: 0.8)
        #expect(p.isRunning, "the run finished before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)
        let killedAt = try SafeTensors.read(URL(fileURLWithPath: b + "/last.safetensors")).metadata
        let (status2, _, err2) = try runSenet(Self.args(b) + ["--checkpoint-every", "4", "--resume"])
        #expect(status2 == 0, "\(err2)")
        #expect(err2.contains("resumed from"), "\(err2)")
        let ta = try modelTensors(a + "/last.safetensors"), tb = try modelTensors(b + "/last.safetensors")
        #expect(ta.count == tb.count && ta.count > 0)
        let differing = ta.keys.filter { ta[$0] != tb[$0] }
        #expect(differing.isEmpty, "killed at epoch \(killedAt["train.epoch"] ?? "?") step \(killedAt["train.step"] ?? "?"); differing: \(differing.prefix(5))")
        // The whole checkpoint, training state and metadata included, byte for byte.
        let (fa, fb) = (try Data(contentsOf: URL(fileURLWithPath: a + "/last.safetensors")),
                        try Data(contentsOf: URL(fileURLWithPath: b + "/last.safetensors")))
        let (metaA, metaB) = (try SafeTensors.read(URL(fileURLWithPath: a + "/last.safetensors")).metadata,
                              try SafeTensors.read(URL(fileURLWithPath: b + "/last.safetensors")).metadata)
        #expect(fa == fb, "last.safetensors differs; metadata \(metaA) vs \(metaB)")
        // The metrics file has each epoch once, with the same numbers.
        let ma = try String(contentsOfFile: a + "/metrics.jsonl", encoding: .utf8)
        let mb = try String(contentsOfFile: b + "/metrics.jsonl", encoding: .utf8)
        #expect(ma == mb, "\(ma)\n---\n\(mb)")
    }

    @Test func sigintCheckpointsAndExits130() throws {
        try requireFashionMNIST()
        let d = try freshDirectory("sigint")
        var a = Self.args(d)
        a[a.firstIndex(of: "768")!] = "6400"
        let p = try startSenet(a, dir: d)
        let deadline = Date().addingTimeInterval(120)
        while p.isRunning && Date() < deadline {
            if let text = try? String(contentsOfFile: d + "/stderr", encoding: .utf8), text.contains("step 10/") { break }
            Thread.sleep(forTimeInterval: 0.02)
        }
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(p.terminationStatus == 130)
        let meta = try SafeTensors.read(URL(fileURLWithPath: d + "/last.safetensors")).metadata
        #expect(meta["train.epoch"] == "0" && (Int(meta["train.step"] ?? "") ?? 0) >= 10, "\(meta.filter { $0.key.hasPrefix("train.") })")
        let err = try String(contentsOfFile: d + "/stderr", encoding: .utf8)
        #expect(err.contains("interrupted; checkpoint written"))
    }

    @Test func nanLossStopsNamingTheStep() throws {
        try requireFashionMNIST()
        let d = try freshDirectory("nan")
        var a = Self.args(d)
        a[a.firstIndex(of: "0.05")!] = "1e30"
        let (status, _, err) = try runSenet(a)
        #expect(status == 1)
        #expect(err.contains("loss is NaN") || err.contains("loss is infinite"), "\(err)")
        #expect(err.contains("step"))
    }

    @Test func badDataPathsAreOneLine() throws {
        for (data, needle) in [("idx:/nonexistent", "/nonexistent"), ("cifar10:/tmp", "/tmp"), ("bogus:/x", "bogus")] {
            let (status, _, err) = try runSenet(["train", "--model", "resnet20", "--data", data, "--out", temporaryPath("bad")])
            #expect(status == 1, "\(data): \(status)")
            #expect(err.split(separator: "\n").count == 1 && err.contains(needle), "\(data): \(err)")
        }
    }

    /// A trained checkpoint evaluates with `senet eval` and classifies Fashion-MNIST PNGs with `senet predict`.
    @Test func evalAndPredictFromATrainingCheckpoint() throws {
        try requireFashionMNIST()
        let d = try freshDirectory("evalpredict")
        var a = Self.args(d)
        a[a.firstIndex(of: "3")!] = "1"
        var (status, _, err) = try runSenet(a)
        #expect(status == 0, "\(err)")
        var out: String
        (status, out, err) = try runSenet(["eval", "--model", "resnet20", "--weights", d + "/last.safetensors", "--data", "fashion-mnist", "--json"])
        #expect(status == 0, "\(err)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        #expect(obj["images"] as? Int == 10000 && (obj["per_class"] as? [Any])?.count == 10)
        // The fused inference path (BatchNorm folded, ReLUs in the convolutions) against the
        // reference path: the same predictions up to rounding.
        (status, out, err) = try runSenet(["eval", "--model", "resnet20", "--weights", d + "/last.safetensors", "--data", "fashion-mnist",
                                           "--json", "--no-fuse"])
        #expect(status == 0, "\(err)")
        let plain = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        for key in ["loss", "top1", "top5"] {
            let (f, u) = (obj[key] as? Double ?? .nan, plain[key] as? Double ?? .nan)
            #expect(abs(f - u) <= 2e-4 * max(1, abs(u)), "\(key): fused \(f), unfused \(u)")
        }
        let image = try requireAsset("foolbox/fashionMNIST_00_9.png")
        (status, out, err) = try runSenet(["predict", "--model", "resnet20", "--weights", d + "/best.safetensors", image])
        #expect(status == 0, "\(err)")
        #expect(out.contains("Ankle boot") || out.contains("Sneaker") || out.contains("Sandal") || out.split(separator: "\n").count == 6, "\(out)")
    }
}
