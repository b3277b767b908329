import Foundation

// Preprocessing spec 1.0 (docs/bundle-contract.md section 2): the twin of alisnet_export/preprocess.py
// and android_harness/core Preprocessing.kt, function for function.

public let preprocessingSpecVersion = "1.0"

public struct PreprocessingError: Error, CustomStringConvertible { public let description: String }

/// 8-bit RGB pixels, row-major, interleaved (H, W, 3), like the golden `source_rgb`.
public struct RgbImage {
    public let height: Int, width: Int
    public let pixels: [UInt8]

    public init(height: Int, width: Int, pixels: [UInt8]) throws {
        guard height > 0, width > 0, pixels.count == height * width * 3 else {
            throw PreprocessingError(description: "expected \(height * width * 3) bytes for \(width)x\(height) RGB, got \(pixels.count)")
        }
        self.height = height; self.width = width; self.pixels = pixels
    }

    /// Rows y0..<y1, columns x0..<x1 (spec step 2).
    public func crop(x0: Int, y0: Int, x1: Int, y1: Int) throws -> RgbImage {
        var out = [UInt8](); out.reserveCapacity((y1 - y0) * (x1 - x0) * 3)
        for y in y0..<y1 { out.append(contentsOf: pixels[((y * width + x0) * 3)..<((y * width + x1) * 3)]) }
        return try RgbImage(height: y1 - y0, width: x1 - x0, pixels: out)
    }
}

public struct Preprocessed {
    public let tensor: [Float]
    public let shape: [Int]
    public let crop: [Int]
    public let originalHeight: Int, originalWidth: Int
    public init(tensor: [Float], shape: [Int], crop: [Int], originalHeight: Int, originalWidth: Int) {
        self.tensor = tensor; self.shape = shape; self.crop = crop; self.originalHeight = originalHeight; self.originalWidth = originalWidth
    }
}

/// Spec step 3: [height, width], height fixed, aspect kept, both multiples of `divisor` (round half to even, as Python).
public func targetSize(_ h: Int, _ w: Int, _ height: Int, divisor: Int = 32) throws -> [Int] {
    guard height % divisor == 0 else { throw PreprocessingError(description: "target height \(height) is not a multiple of \(divisor)") }
    let q = (Double(Int64(w) * Int64(height)) / Double(h) / Double(divisor)).rounded(.toNearestOrEven)
    return [height, max(divisor, Int(q) * divisor)]
}

/// Spec step 2: the person box (x0, y0, x1, y1; exclusive ends) grown by `margin` of its size per side, clipped.
public func cropBox(_ box: [Int], imageHeight: Int, imageWidth: Int, margin: Double) -> [Int] {
    let mx = Double(box[2] - box[0]) * margin
    let my = Double(box[3] - box[1]) * margin
    return [max(0, Int((Double(box[0]) - mx).rounded(.down))), max(0, Int((Double(box[1]) - my).rounded(.down))),
            min(imageWidth, Int((Double(box[2]) + mx).rounded(.up))), min(imageHeight, Int((Double(box[3]) + my).rounded(.up)))]
}

/// Bilinear, half-pixel centres, no antialiasing, float32: (C, inH, inW) -> (C, outH, outW).
public func resizeBilinear(_ planes: [Float], channels: Int, inH: Int, inW: Int, outH: Int, outW: Int) -> [Float] {
    if inH == outH && inW == outW { return planes }
    let scaleH = Float(inH) / Float(outH), scaleW = Float(inW) / Float(outW)
    var x0 = [Int](repeating: 0, count: outW), x1 = x0, lx = [Float](repeating: 0, count: outW)
    for x in 0..<outW {
        let sx = max(scaleW * (Float(x) + 0.5) - 0.5, 0)
        x0[x] = Int(sx); x1[x] = x0[x] < inW - 1 ? x0[x] + 1 : x0[x]; lx[x] = sx - Float(x0[x])
    }
    var out = [Float](repeating: 0, count: channels * outH * outW)
    for y in 0..<outH {
        let sy = max(scaleH * (Float(y) + 0.5) - 0.5, 0)
        let y0 = Int(sy), y1 = y0 < inH - 1 ? y0 + 1 : y0
        let ly = sy - Float(y0), hy = 1 - ly
        for c in 0..<channels {
            let row0 = c * inH * inW + y0 * inW, row1 = c * inH * inW + y1 * inW, o = (c * outH + y) * outW
            for x in 0..<outW {
                let wx1 = lx[x], wx0 = 1 - wx1
                let top = hy * wx0 * planes[row0 + x0[x]] + hy * wx1 * planes[row0 + x1[x]]
                out[o + x] = top + ly * wx0 * planes[row1 + x0[x]] + ly * wx1 * planes[row1 + x1[x]]
            }
        }
    }
    return out
}

/// Spec step 3 on an 8-bit image: (H, W, 3) -> (3, outH, outW) float32 in 0...255.
public func resizeRgb(_ image: RgbImage, outH: Int, outW: Int) -> [Float] {
    let n = image.height * image.width
    var planes = [Float](repeating: 0, count: 3 * n)
    for i in 0..<n {
        planes[i] = Float(image.pixels[3 * i]); planes[n + i] = Float(image.pixels[3 * i + 1]); planes[2 * n + i] = Float(image.pixels[3 * i + 2])
    }
    return resizeBilinear(planes, channels: 3, inH: image.height, inW: image.width, outH: outH, outW: outW)
}

/// Spec step 4: x[c] = (v[c] / 255 - mean[c]) / std[c] on (3, H, W) planes.
public func normalize(_ chw: [Float], plane: Int, _ norm: Normalization) -> [Float] {
    var out = chw
    for c in 0..<3 {
        let m = norm.mean[c], s = norm.std[c]
        for i in (c * plane)..<((c + 1) * plane) { out[i] = (chw[i] / 255 - m) / s }
    }
    return out
}

/// Spec steps 2-4: optional person-box crop (+ crop_margin), resize to the manifest height, normalise.
public func preprocess(_ image: RgbImage, _ input: InputSpec, box: [Int]? = nil, height: Int? = nil) throws -> Preprocessed {
    let crop = box.map { cropBox($0, imageHeight: image.height, imageWidth: image.width, margin: input.resize.cropMargin) }
        ?? [0, 0, image.width, image.height]
    guard crop[2] - crop[0] >= 2, crop[3] - crop[1] >= 2 else {
        throw PreprocessingError(description: "person box \(box ?? []) leaves an empty crop of a \(image.width)x\(image.height) image")
    }
    let cropped = box == nil ? image : try image.crop(x0: crop[0], y0: crop[1], x1: crop[2], y1: crop[3])
    let size = try targetSize(cropped.height, cropped.width, height ?? input.resize.height, divisor: input.resize.multiple)
    let tensor = normalize(resizeRgb(cropped, outH: size[0], outW: size[1]), plane: size[0] * size[1], input.normalization)
    return Preprocessed(tensor: tensor, shape: [1, 3, size[0], size[1]], crop: crop, originalHeight: image.height, originalWidth: image.width)
}

/// Problems with an input size against the manifest's size_constraints (empty when it is fine).
public func checkInputSize(_ height: Int, _ width: Int, _ c: SizeConstraints) -> [String] {
    var p: [String] = []
    if height % c.multipleOf != 0 || width % c.multipleOf != 0 { p.append("\(height)x\(width) is not a multiple of \(c.multipleOf)") }
    if height < c.minHeight || height > c.maxHeight { p.append("height \(height) is outside \(c.minHeight)...\(c.maxHeight)") }
    if width < c.minWidth || width > c.maxWidth { p.append("width \(width) is outside \(c.minWidth)...\(c.maxWidth)") }
    if Int64(height) * Int64(width) < c.minPixels { p.append("H*W = \(height * width) is below min_pixels \(c.minPixels)") }
    return p
}

/// Spec step 6: (1, K, H, W) logits -> (H, W) mask, 1 where logits[fg] > logits[0].
public func logitsToMask(_ logits: [Float], classes: Int, height: Int, width: Int, foreground: Int = 1) throws -> [UInt8] {
    let plane = height * width
    guard logits.count == classes * plane else { throw PreprocessingError(description: "logits hold \(logits.count) values, expected \(classes) x \(height) x \(width)") }
    let fg = foreground * plane
    return (0..<plane).map { logits[fg + $0] > logits[$0] ? 1 : 0 }
}

/// Spec step 6, back onto the photo: resize the logits (not the mask) to the crop, take the mask, paste.
public func maskToOriginal(_ logits: [Float], classes: Int, _ pre: Preprocessed, foreground: Int = 1) throws -> [UInt8] {
    let h = pre.shape[2], w = pre.shape[3]
    let cw = pre.crop[2] - pre.crop[0], ch = pre.crop[3] - pre.crop[1]
    let resized = resizeBilinear(logits, channels: classes, inH: h, inW: w, outH: ch, outW: cw)
    let cropMask = try logitsToMask(resized, classes: classes, height: ch, width: cw, foreground: foreground)
    var full = [UInt8](repeating: 0, count: pre.originalHeight * pre.originalWidth)
    for y in 0..<ch {
        let dst = (y + pre.crop[1]) * pre.originalWidth + pre.crop[0]
        full.replaceSubrange(dst..<(dst + cw), with: cropMask[(y * cw)..<((y + 1) * cw)])
    }
    return full
}

/// Tight (x0, y0, x1, y1) box around a mask (exclusive ends), or nil when it is empty.
public func personBox(_ mask: [UInt8], height: Int, width: Int) -> [Int]? {
    var x0 = width, y0 = height, x1 = -1, y1 = -1
    for y in 0..<height { for x in 0..<width where mask[y * width + x] != 0 {
        x0 = min(x0, x); x1 = max(x1, x); y0 = min(y0, y); y1 = max(y1, y)
    } }
    return x1 < 0 ? nil : [x0, y0, x1 + 1, y1 + 1]
}

/// IoU of two masks (non-zero = person); 1.0 when both are empty, as in alisnet_export/parity.py.
public func maskIou(_ a: [UInt8], _ b: [UInt8]) throws -> Double {
    guard a.count == b.count else { throw PreprocessingError(description: "masks differ in size: \(a.count) vs \(b.count)") }
    var inter = 0, union = 0
    for i in a.indices {
        let pa = a[i] != 0, pb = b[i] != 0
        if pa && pb { inter += 1 }
        if pa || pb { union += 1 }
    }
    return union == 0 ? 1.0 : Double(inter) / Double(union)
}

/// max |a - b| (NaN anywhere counts as infinitely different).
public func maxAbsDiff(_ a: [Float], _ b: [Float]) throws -> Double {
    guard a.count == b.count else { throw PreprocessingError(description: "arrays differ in size: \(a.count) vs \(b.count)") }
    var m = 0.0
    for i in a.indices {
        let d = abs(Double(a[i]) - Double(b[i]))
        if d.isNaN { return .infinity }
        m = max(m, d)
    }
    return m
}
