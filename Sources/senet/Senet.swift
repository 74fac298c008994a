// The `senet` command-line tool: one file per subcommand. Results go to stdout, progress and
// logs to stderr; exit 0 on success, 1 on error (one-line message), 2 on usage errors.

import ArgumentParser
import Foundation
import SENet

@main
struct Senet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "senet",
        abstract: "Squeeze-and-Excitation networks in Swift: build, train, evaluate and inspect SE networks.",
        discussion: "Numerics match PyTorch; convolutions and matrix products run on oneDNN.",
        version: SENetVersion.string,
        subcommands: [Models.self, Summary.self, Train.self, Eval.self, Excitations.self, Plot.self, Bench.self, Predict.self, Forward.self, Export.self, Convert.self, Demo.self])

    /// Runs the tool with the project's exit codes: 0 success, 1 error, 2 usage error.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
