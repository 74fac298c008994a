// JPEG through libjpeg-turbo's TurboJPEG API, plus the two steps Pillow adds on top of libjpeg:
// its CMYK → RGB conversion and (through ImageOps.exif_transpose) the EXIF orientation.

import CTurboJPEG

extension ImageDecoder {
    static func decodeJPEG(_ bytes: [UInt8], name: String, maxPixels: Int) throws -> RGBImage {
        guard let handle = tjInitDecompress() else {
            throw ImageError(.corrupt, name: name, problem: "cannot create the TurboJPEG decoder")
        }
        defer { tjDestroy(handle) }
        func failure() -> ImageError {
            ImageError(.corrupt, name: name, problem: "corrupt or truncated JPEG: " + String(cString: tjGetErrorStr2(handle)))
        }

        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        let headerStatus = bytes.withUnsafeBufferPointer {
            tjDecompressHeader3(handle, $0.baseAddress, UInt($0.count), &width, &height, &subsampling, &colorspace)
        }
        if headerStatus != 0 { throw failure() }
        let (w, h) = (Int(width), Int(height))
        if w * h > maxPixels {
            throw ImageError(.tooLarge, name: name,
                             problem: "\(w) x \(h) = \(w * h) pixels exceeds the limit of \(maxPixels) (decompression bomb?)")
        }

        let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let channels = cmyk ? 4 : 3
        let format = cmyk ? TJPF_CMYK : TJPF_RGB
        // Accurate integer IDCT and fancy upsampling as Pillow; a warning (corrupt or missing data)
        // stops decoding and fails; progressive files are capped at 500 scans against scan bombs.
        let flags = TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS
        var status: Int32 = 0
        var decoded = [UInt8](unsafeUninitializedCapacity: w * h * channels) { buffer, count in
            status = bytes.withUnsafeBufferPointer { src in
                tjDecompress2(handle, src.baseAddress, UInt(src.count), buffer.baseAddress,
                              width, 0, height, Int32(format.rawValue), flags)
            }
            count = w * h * channels
        }
        if status != 0 { throw failure() }
        if cmyk { decoded = invertedCMYKToRGB(decoded) }
        let image = RGBImage(width: w, height: h, pixels: decoded)
        return image.oriented(exifOrientation(bytes))
    }

    /// Pillow's reading of a 4-channel JPEG: the samples are taken as Adobe-inverted CMYK
    /// (c' = 255 − c), then R = (255 − k) − round(c·(255 − k)/255) with c, k the un-inverted values,
    /// the rounded product computed as Pillow's `MULDIV255`.
    static func invertedCMYKToRGB(_ cmyk: [UInt8]) -> [UInt8] {
        let n = cmyk.count / 4
        return [UInt8](unsafeUninitializedCapacity: n * 3) { out, count in
            for i in 0..<n {
                let white = Int(cmyk[4 * i + 3])  // 255 − k
                for ch in 0..<3 {
                    let ink = 255 - Int(cmyk[4 * i + ch])
                    let t = ink * white + 128
                    out[3 * i + ch] = UInt8(white - (((t >> 8) + t) >> 8))
                }
            }
            count = n * 3
        }
    }

    /// The EXIF orientation (1...8) from the first APP1 "Exif" segment before the first scan; 1 when
    /// absent or unreadable. Every read is bounds-checked: the segment is untrusted.
    static func exifOrientation(_ bytes: [UInt8]) -> Int {
        var pos = 2
        while pos + 4 <= bytes.count {
            guard bytes[pos] == 0xFF else { return 1 }
            let marker = bytes[pos + 1]
            if marker == 0xFF { pos += 1; continue }  // fill byte
            if marker == 0x01 || (0xD0...0xD8).contains(marker) { pos += 2; continue }  // no length
            if marker == 0xDA || marker == 0xD9 { return 1 }  // scan data or end: no more metadata
            let length = Int(bytes[pos + 2]) << 8 | Int(bytes[pos + 3])
            let start = pos + 4, end = pos + 2 + length
            guard length >= 2, end <= bytes.count else { return 1 }
            if marker == 0xE1, end - start >= 6, bytes[start..<start + 6].elementsEqual("Exif\0\0".utf8) {
                return tiffOrientation(bytes[(start + 6)..<end]) ?? 1
            }
            pos = end
        }
        return 1
    }

    /// Tag 0x0112 of IFD0 of a TIFF structure (the body of an Exif segment).
    static func tiffOrientation(_ tiff: ArraySlice<UInt8>) -> Int? {
        let t = Array(tiff)
        guard t.count >= 8 else { return nil }
        let little: Bool
        switch (t[0], t[1]) {
        case (0x49, 0x49): little = true
        case (0x4D, 0x4D): little = false
        default: return nil
        }
        func u16(_ i: Int) -> Int? {
            guard i >= 0, i + 2 <= t.count else { return nil }
            return little ? Int(t[i]) | Int(t[i + 1]) << 8 : Int(t[i]) << 8 | Int(t[i + 1])
        }
        func u32(_ i: Int) -> Int? {
            guard let a = u16(i), let b = u16(i + 2) else { return nil }
            return little ? a | b << 16 : a << 16 | b
        }
        guard u16(2) == 42, let ifd = u32(4), let entries = u16(ifd) else { return nil }
        for e in 0..<entries {
            let entry = ifd + 2 + 12 * e
            guard let tag = u16(entry), let type = u16(entry + 2) else { return nil }
            guard tag == 0x0112 else { continue }
            let value: Int?
            switch type {
            case 3: value = u16(entry + 8)  // SHORT
            case 4: value = u32(entry + 8)  // LONG
            default: value = nil
            }
            guard let v = value, (1...8).contains(v) else { return nil }
            return v
        }
        return nil
    }
}
