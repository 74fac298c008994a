// EXIF orientation: the eight transposes of PIL.ImageOps.exif_transpose.

extension RGBImage {
    /// The image as it should be displayed given EXIF orientation `tag` (1...8; other values leave it
    /// unchanged), as `PIL.ImageOps.exif_transpose`:
    /// 2 mirror left–right, 3 rotate 180°, 4 mirror top–bottom, 5 transpose, 6 rotate 90° clockwise,
    /// 7 transverse, 8 rotate 90° counter-clockwise. Tags 5–8 swap width and height.
    public func oriented(_ tag: Int) -> RGBImage {
        guard (2...8).contains(tag) else { return self }
        let (w, h) = (width, height)
        let swaps = tag >= 5
        let (ow, oh) = swaps ? (h, w) : (w, h)
        // The source pixel of output pixel (x, y).
        let source: (Int, Int) -> (Int, Int)
        switch tag {
        case 2: source = { x, y in (w - 1 - x, y) }
        case 3: source = { x, y in (w - 1 - x, h - 1 - y) }
        case 4: source = { x, y in (x, h - 1 - y) }
        case 5: source = { x, y in (y, x) }
        case 6: source = { x, y in (y, h - 1 - x) }
        case 7: source = { x, y in (w - 1 - y, h - 1 - x) }
        default: source = { x, y in (w - 1 - y, x) }
        }
        let out = [UInt8](unsafeUninitializedCapacity: pixels.count) { buffer, count in
            pixels.withUnsafeBufferPointer { src in
                for y in 0..<oh {
                    for x in 0..<ow {
                        let (sx, sy) = source(x, y)
                        let i = (sy * w + sx) * 3, o = (y * ow + x) * 3
                        buffer[o] = src[i]
                        buffer[o + 1] = src[i + 1]
                        buffer[o + 2] = src[i + 2]
                    }
                }
            }
            count = pixels.count
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}
