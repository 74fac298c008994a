// The built `senet` tool, run as a user would.

import Foundation
import Testing

/// The `senet` executable built next to the test bundle.
func senetExecutable() -> URL {
    let url = Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("senet")
    if FileManager.default.fileExists(atPath: url.path) { return url }
    return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("senet")
}

/// Runs the `senet` executable built next to the test bundle; returns (status, stdout, stderr).
func runSenet(_ args: [String]) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = senetExecutable()
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

@Suite("senet CLI")
struct CLITests {
    @Test func version() throws {
        let (status, out, _) = try runSenet(["--version"])
        #expect(status == 0)
        #expect(out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test func help() throws {
        let (status, out, _) = try runSenet(["--help"])
        #expect(status == 0)
        #expect(out.contains("USAGE: senet") && out.contains("demo"))
    }

    @Test func unknownOptionIsAUsageError() throws {
        let (status, _, err) = try runSenet(["--no-such-option"])
        #expect(status == 2, "exit status \(status)")
        #expect(err.contains("no-such-option"))
    }

    @Test func demoRunsOneTrainingStep() throws {
        let (status, out, err) = try runSenet(["demo", "--batch-size", "4"])
        #expect(status == 0, "\(err)")
        // An untrained 10-class model starts near ln 10 ≈ 2.30.
        let line = out.split(separator: "\n").first { $0.hasPrefix("loss ") } ?? ""
        let loss = Double(line.split(separator: " ")[1]) ?? 0
        #expect(loss > 1.5 && loss < 3.5, "\(out)")
    }
}

@Suite("senet models and summary")
struct ModelCLITests {
    @Test func summaryJSONReportsParametersAndMACs() throws {
        let (status, out, err) = try runSenet(["summary", "legacy_seresnet50", "--json"])
        #expect(status == 0, "\(err)")
        let obj = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        #expect(obj?["parameters"] as? Int == 28_088_024)
        #expect(obj?["macs"] as? Int == 3_860_488_192)
        #expect(obj?["input_size"] as? [Int] == [224, 224])
    }

    @Test func summaryOptionsChangeTheModel() throws {
        let (_, out, _) = try runSenet(["summary", "legacy_seresnet50", "--se-stages", "4", "--json"])
        let obj = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        #expect(obj?["parameters"] as? Int == 26_349_992)  // paper Table 13: 26.4M
        let (_, table, _) = try runSenet(["summary", "seresnet20", "--input-size", "28", "28", "--in-channels", "1"])
        #expect(table.contains("layer1.0.se.fc1") && table.contains("total: "))
    }

    @Test func unknownModelSuggestsCloseNames() throws {
        let (status, _, err) = try runSenet(["summary", "seresnet5O"])
        #expect(status == 1)
        #expect(err.contains("seresnet50"))
    }

    @Test func tooSmallInputNamesTheMinimum() throws {
        let (status, _, err) = try runSenet(["summary", "seresnet50", "--input-size", "16"])
        #expect(status == 1)
        #expect(err.contains("at least 32×32"))
    }

    @Test func badSEStagesIsAUsageError() throws {
        let (status, _, err) = try runSenet(["summary", "seresnet50", "--se-stages", "7"])
        #expect(status == 2)
        #expect(err.contains("--se-stages"))
    }
}

@Suite("senet bench")
struct BenchCLITests {
    @Test func jsonHasTheFieldsTheComparisonReads() throws {
        for mode in ["inference", "training"] {
            let (status, out, err) = try runSenet(["bench", "--model", "seresnet20", "--batch-size", "4", "--input-size", "32",
                                                   "--num-classes", "10", "--mode", mode, "--iterations", "2", "--warmup", "1", "--json"])
            try #require(status == 0, "\(err)")
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
            let ips = try #require(obj["images_per_second"] as? Double)
            let ms = try #require(obj["ms_per_batch_median"] as? Double)
            #expect(abs(ips - 4000 / ms) < 1e-6 * ips, "\(obj)")
            #expect((obj["peak_rss_bytes"] as? Int ?? 0) > 10_000_000)
            #expect(obj["mode"] as? String == mode)
        }
        let (bad, _, err) = try runSenet(["bench", "--model", "seresnet20", "--mode", "sideways"])
        #expect(bad != 0 && err.contains("--mode"))
    }

    /// `--against`: the second network's median and the time ratio, the ratio of medians being
    /// exactly the two medians' quotient; an unknown second model is refused by name.
    @Test func againstTimesASecondModelInTurn() throws {
        let (status, out, err) = try runSenet(["bench", "--model", "seresnet20", "--against", "resnet20", "--batch-size", "4",
                                               "--iterations", "3", "--warmup", "1", "--json"])
        try #require(status == 0, "\(err)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        let other = try #require(obj["against"] as? [String: Any], "\(obj)")
        #expect(other["model"] as? String == "resnet20")
        let ms = try #require(obj["ms_per_batch_median"] as? Double)
        let otherMs = try #require(other["ms_per_batch_median"] as? Double)
        let paired = try #require(other["time_ratio_paired"] as? Double)
        let medians = try #require(other["time_ratio_medians"] as? Double)
        #expect(otherMs > 0 && paired.isFinite && paired > 0)
        #expect(abs(medians - ms / otherMs) < 1e-9 * medians)
        let (bad, _, badErr) = try runSenet(["bench", "--model", "seresnet20", "--against", "resnet21", "--iterations", "1"])
        #expect(bad != 0 && badErr.contains("resnet21"), "\(badErr)")
    }
}
