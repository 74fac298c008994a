@_exported import TensorCore
@_exported import NN
