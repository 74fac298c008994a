// SENet: the umbrella module. Re-exports the public API of the tensor core and the layers.

@_exported import TensorCore
@_exported import NN
@_exported import Models
@_exported import Checkpoints
@_exported import ImageIO
@_exported import Datasets
@_exported import Distributed
@_exported import Training

/// The library's version.
public enum SENetVersion {
    public static let string = "0.1.0"
}
