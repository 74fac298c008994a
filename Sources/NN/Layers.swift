// The standard layers, with PyTorch's parameter names, shapes and default initialisation.

import TensorCore

/// 2-D convolution: weight [O, C/groups, kh, kw], optional bias [O]; keys `weight`, `bias`.
/// Default init as PyTorch (U(±1/√fan_in) for weight and bias).
public final class Conv2d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int), groups: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, groups: Int = 1, bias: Bool = true, generator: inout SeededGenerator) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0, "Conv2d: channels not divisible by groups")
        let shape = [outChannels, inChannels / groups, kernel, kernel]
        weight = Parameter(Tensor.pytorchDefaultWeight(shape, generator: &generator))
        self.bias = bias ? Parameter(Tensor.pytorchDefaultBias(outChannels, fanIn: shape[1] * kernel * kernel, generator: &generator)) : nil
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.groups = groups
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        conv2d(x, weight: weight.value, bias: bias?.value, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }
}

/// Batch normalisation over channels: weight (ones), bias (zeros), buffers running_mean (zeros)
/// and running_var (ones); eps 1e-5, momentum 0.1 as PyTorch.
public final class BatchNorm2d: Module {
    public let weight: Parameter
    public let bias: Parameter
    public let runningMean: Parameter
    public let runningVar: Parameter
    public let eps: Float, momentum: Float

    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        weight = Parameter(.ones([channels]))
        bias = Parameter(.zeros([channels]))
        runningMean = Parameter(.zeros([channels]), isBuffer: true)
        runningVar = Parameter(.ones([channels]), isBuffer: true)
        self.eps = eps
        self.momentum = momentum
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        batchNorm(x, weight: weight.value, bias: bias.value, runningMean: &runningMean.value, runningVar: &runningVar.value,
                  training: isTraining, momentum: momentum, eps: eps)
    }
}

/// Fully connected layer: weight [O, I], bias [O]; input [B, I].
public final class Linear: Module {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, generator: inout SeededGenerator) {
        weight = Parameter(Tensor.pytorchDefaultWeight([outFeatures, inFeatures], generator: &generator))
        self.bias = bias ? Parameter(Tensor.pytorchDefaultBias(outFeatures, fanIn: inFeatures, generator: &generator)) : nil
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        linear(x, weight: weight.value, bias: bias?.value)
    }
}

/// ReLU as a layer (no parameters).
public final class ReLU: Module {
    public override func callAsFunction(_ x: Tensor) -> Tensor { relu(x) }
}
