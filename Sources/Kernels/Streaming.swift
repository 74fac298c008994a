// Streaming stores for the memory-bound passes of training (batch norm, the SE scale + residual
// add + ReLU, forward and backward). Such a pass writes a fresh buffer the size of a block's
// activations; with plain stores every cache line written is first read from memory, with
// streaming ones it is not. Measured on this machine (2 threads, a pass reading two 64 MB arrays
// and writing a third): 6.5 ms with plain stores, 4.3 with streaming ones. A buffer that a later
// kernel reads while it is still in the cache should not bypass it, so only outputs of at least
// `streamingMinBytes` stream.

import CStreamingStore
import Foundation

/// Outputs of at least this many bytes are written with streaming stores: SENET_STREAM_MIN_BYTES
/// (0: every output, a negative value: none), else 16 MiB, half this machine's L3 cache.
public let streamingMinBytes = largeTensorBytes("SENET_STREAM_MIN_BYTES")

/// The size from which a tensor counts as large for the cache (`streamingMinBytes`,
/// `blockMajorMinBytes`): the environment variable `name` (bytes; 0: every tensor, a negative
/// value: none), else 16 MiB, half this machine's L3 cache.
func largeTensorBytes(_ name: String) -> Int {
    if let s = ProcessInfo.processInfo.environment[name], let v = Int(s) { return v < 0 ? .max : v }
    return 16 << 20
}

/// Which stores a kernel that can stream writes its output with.
public enum OutputStorePolicy: Sendable {
    /// Streaming for outputs of at least `streamingMinBytes`, plain below.
    case automatic
    /// Streaming whatever the size (the tests' way to exercise them on small tensors).
    case streaming
    /// Plain stores.
    case plain
}

/// How a kernel writes one output buffer of `count` floats: streaming when the policy asks for it
/// and the buffer is 32-byte aligned (a streaming store of 8 floats needs that; otherwise plain).
/// A kernel that streams calls `finish()` at the end of each parallel chunk, before the data is
/// read elsewhere. Stores at base + a multiple of 8 floats only.
struct OutputStores {
    let streaming: Bool

    @inline(__always)
    init(_ base: UnsafeMutablePointer<Float>, count: Int, _ policy: OutputStorePolicy) {
        let wanted: Bool
        switch policy {
        case .automatic: wanted = count * MemoryLayout<Float>.size >= streamingMinBytes
        case .streaming: wanted = true
        case .plain: wanted = false
        }
        streaming = wanted && Int(bitPattern: base) % 32 == 0
    }

    /// Stores v at p (p 32-byte aligned when streaming: base + a multiple of 8 floats).
    @inline(__always)
    func store(_ v: SIMD8<Float>, at p: UnsafeMutablePointer<Float>) {
        if streaming {
            senet_stream8(p, v)
        } else {
            UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
        }
    }

    @inline(__always)
    func finish() {
        if streaming { senet_store_fence() }
    }
}
