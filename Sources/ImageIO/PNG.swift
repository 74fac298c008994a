// PNG through libpng; the decoding itself lives in the C shim (Sources/CPNG) because libpng
// reports errors by longjmp.

import CPNG

extension ImageDecoder {
    static func decodePNG(_ bytes: [UInt8], name: String, maxPixels: Int) throws -> RGBImage {
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: UInt32 = 0, height: UInt32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = bytes.withUnsafeBufferPointer { src in
            senet_png_decode(src.baseAddress, src.count, UInt64(maxPixels), &pixels, &width, &height,
                             &message, message.count)
        }
        let problem = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        switch status {
        case SENET_PNG_OK:
            guard let pixels else { throw ImageError(.corrupt, name: name, problem: "PNG decoder returned no pixels") }
            defer { senet_png_free(pixels) }
            let (w, h) = (Int(width), Int(height))
            return RGBImage(width: w, height: h, pixels: Array(UnsafeBufferPointer(start: pixels, count: w * h * 3)))
        case SENET_PNG_TOO_LARGE:
            throw ImageError(.tooLarge, name: name, problem: problem)
        default:
            throw ImageError(.corrupt, name: name, problem: "corrupt or truncated PNG: " + problem)
        }
    }
}
