// VGG-16 with batch normalisation (Simonyan & Zisserman 2015, configuration D; BN after every
// convolution as the paper trains it, §5.1) and SE-VGG-16: an SE block after each convolution's
// ReLU (paper §4). The plain network has torchvision's `vgg16_bn` keys (`features.K`,
// `classifier.0/3/6`); the SE blocks are inserted into `features`, shifting its indices.

import NN
import TensorCore

public final class VGG: Module {
    public let features: Sequential
    public let classifier: Sequential

    /// Configuration D: 64,64,M,128,128,M,256×3,M,512×3,M,512×3,M; classifier 25088→4096→4096→classes.
    public init(se: SEConfig?, numClasses: Int = 1000, inChannels: Int = 3, seed: UInt64 = 0) {
        var g = SeededGenerator(seed: seed)
        let cfg = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0]
        var layers: [Module] = []
        var cin = inChannels
        for c in cfg {
            if c == 0 { layers.append(MaxPool2d(kernel: 2, stride: 2)); continue }
            layers += [Conv2d(cin, c, kernel: 3, padding: 1, initialization: .heNormal, generator: &g), BatchNorm2d(c), ReLU()]
            if let se { layers.append(SqueezeExcitation(channels: c, config: se, generator: &g)) }
            cin = c
        }
        features = Sequential(layers)
        classifier = Sequential([Linear(512 * 7 * 7, 4096, generator: &g), ReLU(), Dropout(p: 0.5, seed: seed &+ 1),
                                 Linear(4096, 4096, generator: &g), ReLU(), Dropout(p: 0.5, seed: seed &+ 2),
                                 Linear(4096, numClasses, generator: &g)])
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        // Adaptive pooling to 7×7 keeps the classifier's input fixed at any input size.
        classifier(adaptiveAvgPool2d(features(x), outputSize: (7, 7)).flattened())
    }
}
