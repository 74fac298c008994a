// `senet-bench allreduce` (under `mpirun -np K`): MPI_Allreduce time for a model's gradients,
// split into buckets as `DataParallel` splits them and reduced as the trainer reduces them once
// backward has finished (MPI_Iallreduce, one bucket in flight at a time); `--concurrent` keeps
// every bucket in flight together, `--blocking` uses the blocking MPI_Allreduce instead. Each repeat is timed from a barrier to the
// last bucket's completion on the slowest rank; the table gives medians, the algorithm bandwidth
// (gradient bytes / time) and the bus bandwidth (× 2(K−1)/K, the bytes a ring allreduce moves
// per rank, comparable across K).

import ArgumentParser
import Foundation
import SENet

struct AllreduceBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "allreduce",
        abstract: "Time MPI_Allreduce of a model's gradients in buckets (run under mpirun -np K).")

    @Option(help: "Model whose trainable parameter count sets the gradient size.") var model = "seresnet50"
    @Option(help: "Gradient floats (overrides --model).") var floats: Int?
    @Option(help: "Comma-separated bucket sizes in MB (0: one bucket for everything).") var bucketMb = "1,5,25,0"
    @Option(help: "Timed repeats per bucket size (after two warm-up runs).") var repeats = 10
    @Flag(help: "Blocking MPI_Allreduce per bucket, one after the other, instead of the trainer's MPI_Iallreduce.") var blocking = false
    @Flag(help: "All buckets' MPI_Iallreduce in flight together instead of one at a time (as the trainer).") var concurrent = false
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        setvbuf(stdout, nil, _IOLBF, 0)
        guard let launch = try MPILaunch.detect() else {
            throw ValidationError("run under Open MPI: mpirun -np 2 senet-bench allreduce")
        }
        let group = try MPIProcessGroup()
        defer { group.finalize() }
        let count = try floats ?? ModelRegistry.create(model, ModelOptions()).parameterCount
        let label = floats == nil ? "\(model) (\(count) gradients)" : "\(count) floats"
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1)
        if group.isRoot && !json {
            print("\(blocking ? "blocking MPI_Allreduce" : concurrent ? "MPI_Iallreduce, all buckets in flight," : "MPI_Iallreduce, one bucket in flight,") of \(label), \(String(format: "%.1f", Double(count) * 4 / 1_048_576)) MB, \(group.size) ranks "
                  + "(\(launch.localSize) on this host); \(group.libraryVersion)")
            print("bucket MB  buckets  median ms    min ms    max ms  algbw GB/s  busbw GB/s")
        }
        for mb in bucketMb.split(separator: ",").compactMap({ Double($0.trimmingCharacters(in: .whitespaces)) }) {
            let capacity = mb > 0 ? max(1, Int(mb * 1_048_576 / 4)) : count
            var bounds: [Range<Int>] = []
            var start = 0
            while start < count { bounds.append(start..<min(start + capacity, count)); start += capacity }
            var times: [Double] = []
            for rep in 0..<(repeats + 2) {
                group.barrier()
                let t0 = DispatchTime.now().uptimeNanoseconds
                if blocking {
                    for r in bounds { group.blockingSum(UnsafeMutableBufferPointer(rebasing: buffer[r])) }
                } else if concurrent {
                    let pending = bounds.enumerated().map { i, r in
                        group.startSum(UnsafeMutableBufferPointer(rebasing: buffer[r]), label: "bucket \(i + 1)")
                    }
                    for p in pending { p.wait() }
                } else {
                    for (i, r) in bounds.enumerated() {
                        group.startSum(UnsafeMutableBufferPointer(rebasing: buffer[r]), label: "bucket \(i + 1)").wait()
                    }
                }
                let t = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                if rep >= 2 { times.append(t) }
                buffer.update(repeating: 1)  // keep the values finite and equal from run to run
            }
            times = group.allReduced(times, .max)  // the slowest rank's time per repeat
            times.sort()
            let median = times[times.count / 2]
            let bytes = Double(count) * 4
            let algbw = bytes / median / 1e9, busbw = algbw * 2 * Double(group.size - 1) / Double(group.size)
            guard group.isRoot else { continue }
            if json {
                let obj: [String: Any] = ["mode": blocking ? "blocking" : concurrent ? "concurrent" : "one in flight", "floats": count, "ranks": group.size, "bucket_mb": mb, "buckets": bounds.count,
                                          "median_s": median, "min_s": times.first!, "max_s": times.last!,
                                          "algbw_gbs": algbw, "busbw_gbs": busbw]
                let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(String(format: "%9@  %7d  %9.1f  %8.1f  %8.1f  %10.2f  %10.2f", mb > 0 ? String(format: "%g", mb) : "all",
                             bounds.count, median * 1000, times.first! * 1000, times.last! * 1000, algbw, busbw))
            }
        }
    }
}
