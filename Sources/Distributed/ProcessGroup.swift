// Process groups: the collective operations data-parallel training needs (allreduce, broadcast),
// over MPI (`MPIProcessGroup`, Open MPI loaded at run time) or over this process alone
// (`SingleProcessGroup`, where every collective is the identity).
//
// Failure policy: a collective that fails or does not complete within the group's timeout ends
// the whole job (`abort`), with a message naming the rank and the operation. A half-failed
// collective leaves the ranks in states that cannot be reconciled, so there is nothing to retry.

import Foundation

/// How an allreduce combines the ranks' values.
public enum ReduceOperation: Sendable {
    case sum, max, min
}

/// A collective operation started and not yet waited for.
public protocol PendingCollective: AnyObject {
    /// Lets the operation progress; true once it has completed.
    func test() -> Bool
    /// Returns once the operation has completed.
    func wait()
}

/// The processes (ranks 0 ..< size) that run one data-parallel job. Every rank must issue the
/// same collectives in the same order with the same lengths; `abort` ends every rank.
public protocol ProcessGroup: AnyObject {
    /// This process's rank, 0 ..< size.
    var rank: Int { get }
    /// Number of processes.
    var size: Int { get }
    /// Combines `values` element-wise over all ranks, in place (blocking).
    func allReduce(_ values: UnsafeMutableBufferPointer<Float>, _ operation: ReduceOperation)
    func allReduce(_ values: UnsafeMutableBufferPointer<Double>, _ operation: ReduceOperation)
    /// Copies rank `root`'s bytes into every other rank's buffer (blocking).
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int)
    /// Starts an in-place sum of `values` over all ranks on a stream of its own, independent of
    /// the blocking collectives (which may run while it is in flight). The buffer must stay valid
    /// and untouched until the returned operation completes.
    func startSum(_ values: UnsafeMutableBufferPointer<Float>, label: String) -> PendingCollective
    /// Stops every rank of the job, after writing `message` to standard error.
    func abort(_ message: String) -> Never
}

extension ProcessGroup {
    /// Whether this is rank 0, the one that writes files and progress.
    public var isRoot: Bool { rank == 0 }

    /// `values` combined over all ranks.
    public func allReduced(_ values: [Double], _ operation: ReduceOperation = .sum) -> [Double] {
        var v = values
        v.withUnsafeMutableBufferPointer { allReduce($0, operation) }
        return v
    }

    /// Rank `root`'s `values` on every rank.
    public func broadcast(_ values: inout [Float], root: Int = 0) {
        values.withUnsafeMutableBytes { broadcast($0, root: root) }
    }
}

/// This process alone: rank 0 of 1, every collective leaves its data as it is.
public final class SingleProcessGroup: ProcessGroup {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allReduce(_ values: UnsafeMutableBufferPointer<Float>, _ operation: ReduceOperation) {}
    public func allReduce(_ values: UnsafeMutableBufferPointer<Double>, _ operation: ReduceOperation) {}
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) {}
    public func startSum(_ values: UnsafeMutableBufferPointer<Float>, label: String) -> PendingCollective { Completed() }
    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data("senet: \(message)\n".utf8))
        exit(1)
    }

    final class Completed: PendingCollective {
        func test() -> Bool { true }
        func wait() {}
    }
}
