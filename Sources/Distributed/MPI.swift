// Open MPI as a `ProcessGroup`, through the CMPIShim C target, which dlopen()s libmpi.so.40 at
// run time: the package builds without Open MPI, and a process started without `mpirun` never
// touches it. A process knows it was launched by Open MPI's mpirun from the OMPI_COMM_WORLD_*
// variables mpirun sets for each process it starts.
//
// Every collective is started non-blocking and completed by polling MPI_Test against a deadline,
// so a rank whose partner died or hung stops (MPI_Abort, which makes mpirun end the whole job)
// with a message instead of waiting forever. Open MPI's own reaction to a rank that exits or is
// killed without MPI_Finalize is faster still: mpirun notices the dead process and kills the
// others. Errors inside MPI come back as codes (MPI_ERRORS_RETURN) and are reported the same way.
// Two duplicated communicators keep the gradient buckets (in flight during backward) apart from
// the blocking collectives (batch-norm statistics, metrics, broadcasts).

import CMPIShim
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A failure to set up the process group, in one line.
public struct DistributedError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// How Open MPI's mpirun started this process (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE).
public struct MPILaunch: Sendable, Equatable {
    public let rank: Int, size: Int
    /// Rank and number of processes on this host.
    public let localRank: Int, localSize: Int

    public init(rank: Int, size: Int, localRank: Int, localSize: Int) {
        (self.rank, self.size, self.localRank, self.localSize) = (rank, size, localRank, localSize)
    }

    /// The launch read from the environment; nil when the process was not started by an MPI
    /// launcher. Throws when it was started by another MPI's launcher (MPICH/Hydra's PMI_*),
    /// which cannot share Open MPI's library, or when the variables are malformed.
    public static func detect(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> MPILaunch? {
        guard let sizeText = env["OMPI_COMM_WORLD_SIZE"] else {
            if let other = env["PMI_SIZE"] ?? env["PMI_RANK"] {
                throw DistributedError("started by an MPI launcher other than Open MPI's (PMI_SIZE/PMI_RANK = \(other)); "
                                       + "senet's MPI support loads Open MPI (libmpi.so.40): start it with Open MPI's mpirun")
            }
            return nil
        }
        guard let size = Int(sizeText), size >= 1, let rank = env["OMPI_COMM_WORLD_RANK"].flatMap(Int.init), rank >= 0, rank < size else {
            throw DistributedError("malformed Open MPI environment: OMPI_COMM_WORLD_SIZE=\(sizeText), "
                                   + "OMPI_COMM_WORLD_RANK=\(env["OMPI_COMM_WORLD_RANK"] ?? "(unset)")")
        }
        let localRank = env["OMPI_COMM_WORLD_LOCAL_RANK"].flatMap(Int.init) ?? rank
        let localSize = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? size
        return MPILaunch(rank: rank, size: size, localRank: localRank, localSize: max(localSize, 1))
    }
}

/// The ranks of an `mpirun` job, over Open MPI loaded at run time.
public final class MPIProcessGroup: ProcessGroup {
    public let rank: Int
    public let size: Int
    /// Seconds a collective may wait for the other ranks before the job is aborted.
    public let timeout: Double
    /// MPI_Get_library_version's first line.
    public let libraryVersion: String

    enum Channel: Int32 {
        case gradients = 0, control = 1
    }

    private var finalized = false

    /// Loads Open MPI (`library`, else $SENET_MPI_LIBRARY, else libmpi.so.40) and initialises it.
    /// Call once per process, in a process started by mpirun.
    public init(library: String? = nil, timeout: Double = 600) throws {
        var message = [CChar](repeating: 0, count: 512)
        let path = library ?? ProcessInfo.processInfo.environment["SENET_MPI_LIBRARY"]
        if senet_mpi_load(path, &message, message.count) != 0 {
            throw DistributedError("started by mpirun, but " + String(cString: message) + "; install Open MPI "
                                   + "(apt-get install libopenmpi-dev openmpi-bin) or point SENET_MPI_LIBRARY at its libmpi.so")
        }
        var r: Int32 = 0, s: Int32 = 0
        if senet_mpi_init(2, &r, &s, &message, message.count) != 0 {
            throw DistributedError("cannot initialise MPI: " + String(cString: message))
        }
        (rank, size, self.timeout) = (Int(r), Int(s), timeout)
        var version = [CChar](repeating: 0, count: 512)
        senet_mpi_library_version(&version, version.count)
        libraryVersion = String(cString: version).split(separator: "\n").first.map(String.init) ?? ""
    }

    /// MPI_Finalize; every rank calls it once its last collective is done.
    public func finalize() {
        guard !finalized else { return }
        finalized = true
        senet_mpi_finalize()
    }

    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data("senet: rank \(rank) of \(size): \(message)\n".utf8))
        senet_mpi_abort(1)
        exit(1)
    }

    static func errorText(_ code: Int32) -> String {
        var text = [CChar](repeating: 0, count: 512)
        senet_mpi_error_string(code, &text, text.count)
        return String(cString: text)
    }

    /// Polls `request` until the operation completes; aborts the job on an MPI error or when
    /// `timeout` seconds pass. Open MPI moves a non-blocking collective forward only inside MPI
    /// calls, so the loop polls without sleeping (a 50 µs sleep between polls halved the shared-
    /// memory bandwidth), yielding the core between polls since ranks may share cores; after
    /// 10 s of waiting (a rank busy elsewhere) it sleeps 50 µs between polls.
    func complete(_ request: inout UnsafeMutableRawPointer?, _ what: @autoclosure () -> String) {
        let start = DispatchTime.now().uptimeNanoseconds
        var polls = 0
        while true {
            var done: Int32 = 0
            let rc = senet_mpi_test(&request, &done)
            if rc != 0 { abort("\(what()) failed: \(Self.errorText(rc)); stopping the job") }
            if done != 0 { return }
            polls += 1
            if polls < 64 { continue }
            let waited = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if waited > timeout {
                abort(String(format: "%@ did not complete within %.0f s: another rank has died or hung; stopping the job "
                             + "(the limit is --mpi-timeout)", what(), timeout))
            }
            if waited < 10 { sched_yield() } else { usleep(50) }
        }
    }

    private func start(_ what: @autoclosure () -> String, _ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> Int32)
        -> UnsafeMutableRawPointer? {
        var request: UnsafeMutableRawPointer?
        let rc = body(&request)
        if rc != 0 { abort("\(what()) failed to start: \(Self.errorText(rc)); stopping the job") }
        return request
    }

    /// MPI counts are 32-bit: longer buffers go in chunks of 2³⁰ elements.
    private static let chunk = 1 << 30

    private func allReduce(_ base: UnsafeMutableRawPointer, count: Int, stride: Int, type: Int32, _ operation: ReduceOperation,
                           _ what: String) {
        let op: Int32
        switch operation {
        case .sum: op = Int32(SENET_MPI_SUM)
        case .max: op = Int32(SENET_MPI_MAX)
        case .min: op = Int32(SENET_MPI_MIN)
        }
        var offset = 0
        while offset < count {
            let n = min(Self.chunk, count - offset)
            var request = start("MPI_Iallreduce of \(n) \(what)") {
                senet_mpi_iallreduce(base + offset * stride, Int32(n), type, op, Channel.control.rawValue, $0)
            }
            complete(&request, "MPI_Iallreduce of \(n) \(what)")
            offset += n
        }
    }

    public func allReduce(_ values: UnsafeMutableBufferPointer<Float>, _ operation: ReduceOperation) {
        guard let base = values.baseAddress, size > 1 else { return }
        allReduce(UnsafeMutableRawPointer(base), count: values.count, stride: 4, type: Int32(SENET_MPI_FLOAT), operation, "floats")
    }

    public func allReduce(_ values: UnsafeMutableBufferPointer<Double>, _ operation: ReduceOperation) {
        guard let base = values.baseAddress, size > 1 else { return }
        allReduce(UnsafeMutableRawPointer(base), count: values.count, stride: 8, type: Int32(SENET_MPI_DOUBLE), operation, "doubles")
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) {
        guard let base = bytes.baseAddress, size > 1 else { return }
        var offset = 0
        while offset < bytes.count {
            let n = min(Self.chunk, bytes.count - offset)
            var request = start("MPI_Ibcast of \(n) bytes from rank \(root)") {
                senet_mpi_ibcast(base + offset, Int32(n), Int32(SENET_MPI_BYTE), Int32(root), Channel.control.rawValue, $0)
            }
            complete(&request, "MPI_Ibcast of \(n) bytes from rank \(root)")
            offset += n
        }
    }

    /// Sums `values` over all ranks with the blocking MPI_Allreduce on the gradient stream, with no
    /// deadline: for benchmarks (Open MPI's blocking algorithms can be faster than the
    /// non-blocking ones that `startSum` uses).
    public func blockingSum(_ values: UnsafeMutableBufferPointer<Float>) {
        guard let base = values.baseAddress, size > 1 else { return }
        precondition(values.count <= Int(Int32.max), "blockingSum: \(values.count) elements is more than MPI's 32-bit count")
        let rc = senet_mpi_allreduce(base, Int32(values.count), Int32(SENET_MPI_FLOAT), Int32(SENET_MPI_SUM), Channel.gradients.rawValue)
        if rc != 0 { abort("MPI_Allreduce of \(values.count) floats failed: \(Self.errorText(rc)); stopping the job") }
    }

    /// Waits until every rank has reached this point.
    public func barrier() {
        guard size > 1 else { return }
        var request = start("MPI_Ibarrier") { senet_mpi_ibarrier(Channel.control.rawValue, $0) }
        complete(&request, "MPI_Ibarrier")
    }

    public func startSum(_ values: UnsafeMutableBufferPointer<Float>, label: String) -> PendingCollective {
        precondition(values.count <= Int(Int32.max), "startSum: \(values.count) elements is more than MPI's 32-bit count")
        guard let base = values.baseAddress, size > 1 else { return SingleProcessGroup.Completed() }
        let what = "MPI_Iallreduce of \(label) (\(values.count) floats)"
        let request = start(what) {
            senet_mpi_iallreduce(base, Int32(values.count), Int32(SENET_MPI_FLOAT), Int32(SENET_MPI_SUM), Channel.gradients.rawValue, $0)
        }
        return Request(group: self, request: request, what: what)
    }

    final class Request: PendingCollective {
        let group: MPIProcessGroup
        var request: UnsafeMutableRawPointer?
        var done = false
        let what: String

        init(group: MPIProcessGroup, request: UnsafeMutableRawPointer?, what: String) {
            (self.group, self.request, self.what) = (group, request, what)
        }

        func test() -> Bool {
            if done { return true }
            var flag: Int32 = 0
            let rc = senet_mpi_test(&request, &flag)
            if rc != 0 { group.abort("\(what) failed: \(MPIProcessGroup.errorText(rc)); stopping the job") }
            done = flag != 0
            return done
        }

        func wait() {
            if done { return }
            group.complete(&request, what)
            done = true
        }
    }
}

/// Sets the OpenMP thread count of the libraries already loaded (oneDNN's libgomp), which read
/// OMP_NUM_THREADS only when they load; returns whether an OpenMP runtime was found.
@discardableResult
public func setOpenMPThreads(_ n: Int) -> Bool {
    senet_openmp_set_threads(Int32(max(n, 1))) != 0
}
