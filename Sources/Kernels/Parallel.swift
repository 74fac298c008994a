// Work splitting for the project's own kernels. Two cores: a loop is split into at most
// `kernelThreads` contiguous chunks, and only when it is big enough to pay for the hand-off
// (~10 µs). The chunks run on oneDNN's own OpenMP team (OpenMPTeam), so one set of threads
// serves both, and their short spin between parallel regions (libgomp's default wait policy)
// hands each next region over without a wake-up.

import CDNNL
import Dispatch
import Foundation

/// Threads used by the project's own kernels (SENET_NUM_THREADS, else OMP_NUM_THREADS, else cores).
public let kernelThreads: Int = {
    let env = ProcessInfo.processInfo.environment
    if let s = env["SENET_NUM_THREADS"] ?? env["OMP_NUM_THREADS"], let n = Int(s), n > 0 { return n }
    return max(1, ProcessInfo.processInfo.activeProcessorCount)
}()

/// Calls `body(range)` over `0..<count` split into contiguous chunks, in parallel when
/// `count * costPerItem` exceeds a threshold. `costPerItem` is a rough count of flops per item.
@inline(__always)
public func parallelRanges(_ count: Int, costPerItem: Int = 1, _ body: (Range<Int>) -> Void) {
    let threads = kernelThreads
    if threads <= 1 || count < 2 || count * costPerItem < 32_768 {
        body(0..<count)
        return
    }
    let chunks = min(threads, count)
    withoutActuallyEscaping(body) { body in
        let chunk = { (i: Int) in
            let lo = count * i / chunks, hi = count * (i + 1) / chunks
            if lo < hi { body(lo..<hi) }
        }
        if let omp = OpenMPTeam.shared {
            omp.run(chunks, chunk)
        } else {
            DispatchQueue.concurrentPerform(iterations: chunks, execute: chunk)
        }
    }
}

/// oneDNN's OpenMP thread team (GNU libgomp, loaded with libdnnl), used for our own kernels too
/// unless SENET_PARALLEL=dispatch: the team's workers, which wait (spinning or asleep, as
/// OMP_WAIT_POLICY says) between oneDNN's primitives, then take our chunks as well, instead of
/// Dispatch's threads competing with them for the two cores.
final class OpenMPTeam: @unchecked Sendable {
    typealias Body = @convention(c) (UnsafeMutableRawPointer?) -> Void
    typealias Parallel = @convention(c) (Body, UnsafeMutableRawPointer?, UInt32, UInt32) -> Void
    typealias Query = @convention(c) () -> Int32

    static let shared: OpenMPTeam? = {
        guard ProcessInfo.processInfo.environment["SENET_PARALLEL"] != "dispatch",
              let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "GOMP_parallel"),
              let t = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "omp_get_thread_num"),
              let n = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "omp_get_num_threads"),
              let l = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "omp_get_level")
        else { return nil }
        return OpenMPTeam(unsafeBitCast(p, to: Parallel.self), unsafeBitCast(t, to: Query.self),
                          unsafeBitCast(n, to: Query.self), unsafeBitCast(l, to: Query.self))
    }()

    let parallel: Parallel
    let threadNumber, teamSize, level: Query

    private init(_ p: Parallel, _ t: Query, _ n: Query, _ l: Query) {
        (parallel, threadNumber, teamSize, level) = (p, t, n, l)
    }

    private struct Job {
        let team: OpenMPTeam
        let chunks: Int
        let body: (Int) -> Void
    }

    /// body(0) … body(chunks − 1), spread over a team of `chunks` threads (a smaller team, or a
    /// call from inside a parallel region, runs the rest in turn).
    func run(_ chunks: Int, _ body: @escaping (Int) -> Void) {
        if level() > 0 {
            for i in 0..<chunks { body(i) }
            return
        }
        var job = Job(team: self, chunks: chunks, body: body)
        withUnsafeMutablePointer(to: &job) { ctx in
            parallel({ raw in
                let job = raw!.assumingMemoryBound(to: Job.self).pointee
                let size = max(1, Int(job.team.teamSize()))
                for i in stride(from: Int(job.team.threadNumber()), to: job.chunks, by: size) { job.body(i) }
            }, UnsafeMutableRawPointer(ctx), UInt32(chunks), 0)
        }
    }
}

