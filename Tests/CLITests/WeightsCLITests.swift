// `senet export` / `senet forward` as a user runs them: round trips, timm parity through files,
// and one-line errors for bad files.

import Foundation
import Testing
import _TestSupport
import Checkpoints
import TensorCore

func temporaryPath(_ name: String) -> String {
    processScratchDirectory("senet-cli").appendingPathComponent(name).path
}

@Suite("senet weights commands")
struct WeightsCLITests {
    /// export → load → export gives byte-identical files.
    @Test func exportRoundTripIsByteIdentical() throws {
        let a = temporaryPath("a.safetensors"), b = temporaryPath("b.safetensors")
        var (status, _, err) = try runSenet(["export", "--model", "legacy_seresnet18", "--seed", "3", "--output", a])
        #expect(status == 0, "\(err)")
        (status, _, err) = try runSenet(["export", "--model", "legacy_seresnet18", "--weights", a, "--output", b])
        #expect(status == 0, "\(err)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: a)) == Data(contentsOf: URL(fileURLWithPath: b)))
    }

    /// timm's legacy_seresnet18 with synthesised weights, through files: the logits of the parity fixture.
    @Test func forwardMatchesTimmThroughFiles() throws {
        let w = temporaryPath("legacy18.safetensors"), x = temporaryPath("x.safetensors"), y = temporaryPath("y.safetensors")
        var (status, _, err) = try runSenet(["export", "--model", "legacy_seresnet18", "--output", w])
        #expect(status == 0, "\(err)")
        let keys = try SafeTensors.read(URL(fileURLWithPath: w)).entries
        try SafeTensors.write(StateDict(keys.map { ($0.key, Synthetic.tensor($0.key, $0.tensor.shape)) }), to: URL(fileURLWithPath: w))
        try SafeTensors.write(StateDict([("input", Synthetic.tensor("input", [2, 3, 160, 208]))]), to: URL(fileURLWithPath: x))
        (status, _, err) = try runSenet(["forward", "--model", "legacy_seresnet18", "--weights", w, "--input", x, "--output", y])
        #expect(status == 0, "\(err)")
        let logits = try #require(try SafeTensors.read(URL(fileURLWithPath: y))["output"])
        let expected = try #require(try Fixture("parity_timm").tensors["legacy_seresnet18.160x208"])
        let scale = expected.scalars.map(abs).max()!
        #expect(zip(logits.scalars, expected.scalars).map { abs($0 - $1) }.max()! <= 1e-4 * scale)
    }

    /// A fine-tuning head: --num-classes re-initialises only the classifier, and forward reads the
    /// class count off the weights.
    @Test func numClassesReplacesTheHead() throws {
        let a = temporaryPath("head1000.safetensors"), b = temporaryPath("head7.safetensors"), x = temporaryPath("x7.safetensors")
        _ = try runSenet(["export", "--model", "seresnet18", "--output", a])
        let (status, _, err) = try runSenet(["export", "--model", "seresnet18", "--weights", a, "--num-classes", "7", "--output", b])
        #expect(status == 0 && err.contains("classifier re-initialised"), "\(err)")
        let s1 = try SafeTensors.read(URL(fileURLWithPath: a)), s2 = try SafeTensors.read(URL(fileURLWithPath: b))
        #expect(s2["fc.weight"]?.shape == [7, 512] && s2["conv1.weight"]!.scalars == s1["conv1.weight"]!.scalars)
        try SafeTensors.write(StateDict([("input", Tensor.zeros([1, 3, 64, 64]))]), to: URL(fileURLWithPath: x))
        let y = temporaryPath("y7.safetensors")
        let r = try runSenet(["forward", "--model", "seresnet18", "--weights", b, "--input", x, "--output", y])
        #expect(r.0 == 0, "\(r.2)")
        #expect(try SafeTensors.read(URL(fileURLWithPath: y))["output"]?.shape == [1, 7])
    }

    /// `senet convert` on hostile PyTorch files (pickles that would run code, tensors reaching
    /// outside their storage, a wrong model): one line naming the file and the problem, exit 1.
    @Test func convertRefusesHostileCheckpoints() throws {
        let out = temporaryPath("converted.safetensors")
        for (file, needle) in [("pth_evil_os_system.pkl", "system"), ("pth_evil_exec_zip.pth", "builtins.exec"),
                               ("pth_evil_eval_legacy.pth", "builtins.eval"), ("pth_hostile_outside.pth", "pth_hostile_outside.pth"),
                               ("pth_deflated.pth", "pth_deflated.pth")] {
            let path = fixturesDirectory.appendingPathComponent(file).path
            let (status, _, err) = try runSenet(["convert", path, out])
            #expect(status == 1, "\(file): status \(status)")
            #expect(err.split(separator: "\n").count == 1 && err.contains(needle), "\(file): \(err)")
        }
        let (status, _, err) = try runSenet(["convert", fixturesDirectory.appendingPathComponent("pth_wrapped_model.pth").path, out,
                                             "--model", "seresnet18"])
        #expect(status == 1 && err.contains("missing key"), "\(err)")
    }

    /// Bad files give one line on stderr naming the file, and exit status 1.
    @Test func badFilesAreOneLineErrors() throws {
        let corrupt = temporaryPath("corrupt.safetensors"), x = temporaryPath("x1.safetensors")
        try Data([0x10, 0, 0, 0, 0, 0, 0, 0, 0x7B]).write(to: URL(fileURLWithPath: corrupt))
        try SafeTensors.write(StateDict([("input", Tensor.zeros([1, 3, 32, 32]))]), to: URL(fileURLWithPath: x))
        for (args, needle) in [
            (["forward", "--model", "seresnet20", "--weights", corrupt, "--input", x, "--output", temporaryPath("o")], "corrupt.safetensors"),
            (["forward", "--model", "seresnet20", "--weights", "/nonexistent.safetensors", "--input", x, "--output", temporaryPath("o")], "/nonexistent.safetensors"),
            (["forward", "--model", "seresnet20", "--weights", x, "--input", x, "--output", temporaryPath("o")], "missing key"),
            (["forward", "--model", "seresnet20", "--weights", x, "--input", corrupt, "--output", temporaryPath("o")], "corrupt.safetensors"),
            (["export", "--model", "seresnet_20", "--output", temporaryPath("o")], "did you mean"),
        ] {
            let (status, _, err) = try runSenet(args)
            #expect(status == 1, "\(args): status \(status)")
            let lines = err.split(separator: "\n")
            #expect(lines.count == 1 && err.contains(needle), "\(args): \(err)")
        }
    }
}
