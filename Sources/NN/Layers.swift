// The standard layers, with PyTorch's parameter names, shapes and default initialisation.

import TensorCore

/// How a convolution's weight is drawn.
public enum WeightInit: Sendable {
    /// PyTorch's default for Conv2d/Linear: U(±1/√fan_in).
    case pytorchDefault
    /// He et al. (2015) normal, fan_out, ReLU gain: N(0, 2/fan_out), as torchvision/timm ResNets
    /// and the paper (§5.1).
    case heNormal
}

/// 2-D convolution: weight [O, C/groups, kh, kw], optional bias [O]; keys `weight`, `bias`.
/// Default init as PyTorch (U(±1/√fan_in) for weight and bias).
public final class Conv2d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int), groups: Int

    public convenience init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                            dilation: Int = 1, groups: Int = 1, bias: Bool = true, initialization: WeightInit = .pytorchDefault,
                            generator: inout SeededGenerator) {
        self.init(inChannels, outChannels, kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding),
                  dilation: (dilation, dilation), groups: groups, bias: bias, initialization: initialization, generator: &generator)
    }

    /// A kh×kw kernel (e.g. Inception's 1×7 and 7×1) with per-axis stride, padding and dilation.
    public init(_ inChannels: Int, _ outChannels: Int, kernel: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1, bias: Bool = true,
                initialization: WeightInit = .pytorchDefault, generator: inout SeededGenerator) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0, "Conv2d: channels not divisible by groups")
        let shape = [outChannels, inChannels / groups, kernel.0, kernel.1]
        switch initialization {
        case .pytorchDefault: weight = Parameter(Tensor.pytorchDefaultWeight(shape, generator: &generator))
        case .heNormal: weight = Parameter(Tensor.heNormal(shape, generator: &generator))
        }
        self.bias = bias ? Parameter(Tensor.pytorchDefaultBias(outChannels, fanIn: shape[1] * kernel.0 * kernel.1, generator: &generator)) : nil
        (self.stride, self.padding, self.dilation, self.groups) = (stride, padding, dilation, groups)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        // Inside an inference engine: the folded weights, and the following ReLU in the epilogue.
        let folded = InferenceEngine.foldedParameters(self)
        let y = conv2d(x, weight: folded?.weight ?? weight.value, bias: folded?.bias ?? bias?.value, stride: stride,
                       padding: padding, dilation: dilation, groups: groups, fusedReLU: InferenceEngine.fusesReLU(self),
                       constantWeights: folded?.converted)
        InferenceEngine.trace(self, input: x, output: y)
        LayerRecorder.note(self, "Conv2d", y, macsPerImage: y.count / max(y.shape[0], 1) * weight.value.count / weight.shape[0])
        return y
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
    /// Set for synchronised batch norm in data-parallel training: sums the batch statistics over
    /// the processes that share each batch (see `batchNorm(_:…reducer:)`); nil normalises with
    /// this process's batch alone.
    public var statisticsReducer: BatchNormStatisticsReducer?

    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        weight = Parameter(.ones([channels]))
        bias = Parameter(.zeros([channels]))
        runningMean = Parameter(.zeros([channels]), isBuffer: true)
        runningVar = Parameter(.ones([channels]), isBuffer: true)
        self.eps = eps
        self.momentum = momentum
    }

    /// relu(self(x)). In training mode (without synchronised statistics) the ReLU runs inside the
    /// batch-norm passes; otherwise — evaluation, the inference engine's tracing and folding — it
    /// is the two calls.
    public func callAsFunction(_ x: Tensor, relu fuse: Bool) -> Tensor {
        guard fuse, isTraining, statisticsReducer == nil, ActivationCapture.current == nil else {
            return fuse ? relu(self(x)) : self(x)
        }
        let y = batchNorm(x, weight: weight.value, bias: bias.value, runningMean: &runningMean.value, runningVar: &runningVar.value,
                          training: true, momentum: momentum, eps: eps, fusedReLU: true)
        LayerRecorder.note(self, "BatchNorm2d", y, macsPerImage: 0)
        return y
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        if InferenceEngine.isAbsorbed(self) {
            LayerRecorder.note(self, "BatchNorm2d", x, macsPerImage: 0)
            return x
        }
        let y = batchNorm(x, weight: weight.value, bias: bias.value, runningMean: &runningMean.value, runningVar: &runningVar.value,
                          training: isTraining, momentum: momentum, eps: eps, reducer: statisticsReducer)
        InferenceEngine.trace(self, input: x, output: y)
        LayerRecorder.note(self, "BatchNorm2d", y, macsPerImage: 0)
        return y
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
        let y = linear(x, weight: weight.value, bias: bias?.value)
        LayerRecorder.note(self, "Linear", y, macsPerImage: weight.value.count)
        return y
    }
}

/// ReLU as a layer (no parameters).
public final class ReLU: Module {
    public override func callAsFunction(_ x: Tensor) -> Tensor { relu(x) }
}

/// Max pooling as a layer (no parameters).
public final class MaxPool2d: Module {
    public let kernel: Int, stride: Int, padding: Int, ceilMode: Bool

    public init(kernel: Int, stride: Int, padding: Int = 0, ceilMode: Bool = false) {
        (self.kernel, self.stride, self.padding, self.ceilMode) = (kernel, stride, padding, ceilMode)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let y = maxPool2d(x, kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding), ceilMode: ceilMode)
        LayerRecorder.note(self, "MaxPool2d", y, macsPerImage: 0)
        return y
    }
}

/// Average pooling as a layer (no parameters), with PyTorch's `ceil_mode` and `count_include_pad`.
public final class AvgPool2d: Module {
    public let kernel: Int, stride: Int, padding: Int, ceilMode: Bool, countIncludePad: Bool

    public init(kernel: Int, stride: Int, padding: Int = 0, ceilMode: Bool = false, countIncludePad: Bool = true) {
        (self.kernel, self.stride, self.padding) = (kernel, stride, padding)
        (self.ceilMode, self.countIncludePad) = (ceilMode, countIncludePad)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let y = avgPool2d(x, kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding),
                          ceilMode: ceilMode, countIncludePad: countIncludePad)
        LayerRecorder.note(self, "AvgPool2d", y, macsPerImage: 0)
        return y
    }
}

/// Dropout with probability `p` in training mode, identity in evaluation. Draws its masks from
/// its own seeded generator, so a run is reproducible.
public final class Dropout: Module {
    public let p: Float
    private var _generator: SeededGenerator

    public init(p: Float, seed: UInt64 = 0) {
        self.p = p
        _generator = SeededGenerator(seed: seed)
    }

    /// The mask generator's state, saved in training checkpoints so a resumed run draws the same masks.
    public var generatorState: [UInt64] {
        get { _generator.state }
        set { _generator.state = newValue }
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        isTraining && p > 0 ? dropout(x, p: p, generator: &_generator) : x
    }
}

/// ReLU6 as a layer (no parameters).
public final class ReLU6: Module {
    public override func callAsFunction(_ x: Tensor) -> Tensor { relu6(x) }
}

/// Hard-swish as a layer (no parameters).
public final class HardSwish: Module {
    public override func callAsFunction(_ x: Tensor) -> Tensor { hardSwish(x) }
}

/// Flattens [N, …] to [N, rest] (no parameters).
public final class Flatten: Module {
    public override func callAsFunction(_ x: Tensor) -> Tensor { x.flattened() }
}
