// The namespace of the reference twins (one file per fast kernel file, named Reference<Kernel>.swift).

/// Slow, obviously-correct twins of the fast kernels in `Kernels`: the specification and the test
/// oracle. Each takes and returns plain arrays (outputs are returned), loops exactly as the formula
/// reads and accumulates in Double. Never used on a hot path.
public enum Reference {}
