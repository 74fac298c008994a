// The Squeeze-and-Excitation block (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", §3):
// squeeze z = global average pool of U; excitation s = σ(W2·δ(W1·z)); scale x̃_c = s_c·u_c.
// W1 and W2 are 1×1 convolutions with bias (as the Caffe release, timm and torchvision), keys
// `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`. The variants the paper ablates (squeeze,
// gate, rounding) belong to the model-zoo issue and extend this class.

import TensorCore

/// SE block on [N, C, H, W]: output has the input's shape. The reduced width is
/// `channels / reduction` rounded down (the paper's and the Caffe release's rule: 64/16 → 4).
public final class SqueezeExcitation: Module {
    public let fc1: Conv2d
    public let fc2: Conv2d

    public init(channels: Int, reduction: Int = 16, generator: inout SeededGenerator) {
        let reduced = max(1, channels / reduction)
        fc1 = Conv2d(channels, reduced, kernel: 1, generator: &generator)
        fc2 = Conv2d(reduced, channels, kernel: 1, generator: &generator)
    }

    /// The excitation vector s [N, C, 1, 1] for input x.
    public func excitation(_ x: Tensor) -> Tensor {
        sigmoid(fc2(relu(fc1(globalAvgPool2d(x)))))
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        x * excitation(x)
    }
}
