@file:JvmName("PreprocessingKt")
package com.alisnet.harness.core

/**
 * Preprocessing spec 1.0 (docs/bundle-contract.md section 2), the twin of alisnet_export/preprocess.py
 * and ios_harness/Sources/ALiSNetCore/Preprocessing.swift. Pure Kotlin on plain arrays: the app turns
 * its Bitmap into an [RgbImage], everything after that is here and tested on the JVM.
 */
const val SPEC_VERSION = "1.0"

class PreprocessingException(message: String) : Exception(message)

/** 8-bit RGB pixels, row-major, interleaved (H, W, 3), like the golden `source_rgb`. */
class RgbImage(val height: Int, val width: Int, val pixels: ByteArray) {
    init {
        require(height > 0 && width > 0) { "image must not be empty, got ${width}x$height" }
        require(pixels.size == height * width * 3) { "expected ${height * width * 3} bytes for ${width}x$height RGB, got ${pixels.size}" }
    }

    /** Rows y0 until y1, columns x0 until x1 (spec step 2). */
    fun crop(x0: Int, y0: Int, x1: Int, y1: Int): RgbImage {
        val w = x1 - x0
        val out = ByteArray((y1 - y0) * w * 3)
        for (y in y0 until y1) System.arraycopy(pixels, (y * width + x0) * 3, out, (y - y0) * w * 3, w * 3)
        return RgbImage(y1 - y0, w, out)
    }

    companion object {
        /** From Android-style packed ARGB ints (Bitmap.getPixels); alpha is ignored, the caller refuses transparent images. */
        fun fromArgb(height: Int, width: Int, argb: IntArray): RgbImage {
            val px = ByteArray(height * width * 3)
            for (i in 0 until height * width) {
                val c = argb[i]
                px[3 * i] = (c shr 16 and 0xff).toByte()
                px[3 * i + 1] = (c shr 8 and 0xff).toByte()
                px[3 * i + 2] = (c and 0xff).toByte()
            }
            return RgbImage(height, width, px)
        }
    }
}

/** A network input (NCHW float32, N = 1) and what maps its output back onto the original photo. */
class Preprocessed(val tensor: FloatArray, val shape: IntArray, val crop: IntArray, val originalHeight: Int, val originalWidth: Int)

/** Spec step 3: (height, width) with the height fixed, the aspect kept, both multiples of [divisor]. */
fun targetSize(h: Int, w: Int, height: Int, divisor: Int = 32): IntArray {
    if (height % divisor != 0) throw PreprocessingException("target height $height is not a multiple of $divisor")
    // Python: max(divisor, int(round(w * height / h / divisor)) * divisor); round() is half-to-even, as rint
    val width = Math.max(divisor, Math.rint((w.toLong() * height).toDouble() / h / divisor).toInt() * divisor)
    return intArrayOf(height, width)
}

/** Spec step 2: the person box (x0, y0, x1, y1; x1, y1 exclusive) grown by [margin] of its size per side, clipped. */
fun cropBox(box: IntArray, imageHeight: Int, imageWidth: Int, margin: Double): IntArray {
    val mx = (box[2] - box[0]) * margin
    val my = (box[3] - box[1]) * margin
    return intArrayOf(
        Math.max(0, Math.floor(box[0] - mx).toInt()), Math.max(0, Math.floor(box[1] - my).toInt()),
        Math.min(imageWidth, Math.ceil(box[2] + mx).toInt()), Math.min(imageHeight, Math.ceil(box[3] + my).toInt())
    )
}

/**
 * Bilinear resize with half-pixel centres and no antialiasing, in float32, of [channels] planes
 * (C, inH, inW) -> (C, outH, outW): torch.nn.functional.interpolate(mode="bilinear", align_corners=False).
 */
fun resizeBilinear(planes: FloatArray, channels: Int, inH: Int, inW: Int, outH: Int, outW: Int): FloatArray {
    if (inH == outH && inW == outW) return planes.copyOf()
    val scaleH = inH.toFloat() / outH
    val scaleW = inW.toFloat() / outW
    val x0 = IntArray(outW); val x1 = IntArray(outW); val lx = FloatArray(outW)
    for (x in 0 until outW) {
        val sx = Math.max(scaleW * (x + 0.5f) - 0.5f, 0f)
        x0[x] = sx.toInt()
        x1[x] = if (x0[x] < inW - 1) x0[x] + 1 else x0[x]
        lx[x] = sx - x0[x]
    }
    val out = FloatArray(channels * outH * outW)
    for (y in 0 until outH) {
        val sy = Math.max(scaleH * (y + 0.5f) - 0.5f, 0f)
        val y0 = sy.toInt()
        val y1 = if (y0 < inH - 1) y0 + 1 else y0
        val ly = sy - y0
        val hy = 1f - ly
        for (c in 0 until channels) {
            val base = c * inH * inW
            val row0 = base + y0 * inW
            val row1 = base + y1 * inW
            val o = (c * outH + y) * outW
            for (x in 0 until outW) {
                val wx1 = lx[x]
                val wx0 = 1f - wx1
                out[o + x] = hy * wx0 * planes[row0 + x0[x]] + hy * wx1 * planes[row0 + x1[x]] +
                    ly * wx0 * planes[row1 + x0[x]] + ly * wx1 * planes[row1 + x1[x]]
            }
        }
    }
    return out
}

/** Spec step 3 on an 8-bit image: (H, W, 3) uint8 -> (3, outH, outW) float32 in 0..255. */
fun resizeRgb(image: RgbImage, outH: Int, outW: Int): FloatArray {
    val h = image.height
    val w = image.width
    val planes = FloatArray(3 * h * w)
    for (i in 0 until h * w) {
        planes[i] = (image.pixels[3 * i].toInt() and 0xff).toFloat()
        planes[h * w + i] = (image.pixels[3 * i + 1].toInt() and 0xff).toFloat()
        planes[2 * h * w + i] = (image.pixels[3 * i + 2].toInt() and 0xff).toFloat()
    }
    return resizeBilinear(planes, 3, h, w, outH, outW)
}

/** Spec step 4, in place: x[c] = (v[c] / 255 - mean[c]) / std[c] on (3, H, W) planes. */
fun normalizeInPlace(chw: FloatArray, plane: Int, norm: Normalization): FloatArray {
    for (c in 0 until 3) {
        val m = norm.mean[c]
        val s = norm.std[c]
        for (i in c * plane until (c + 1) * plane) chw[i] = (chw[i] / 255f - m) / s
    }
    return chw
}

/** Spec steps 2-4: optional person-box crop (+ crop_margin), resize to the manifest height, normalise. */
fun preprocess(image: RgbImage, input: InputSpec, box: IntArray? = null, height: Int = input.resize.height): Preprocessed {
    val crop = if (box != null) cropBox(box, image.height, image.width, input.resize.cropMargin)
               else intArrayOf(0, 0, image.width, image.height)
    if (crop[2] - crop[0] < 2 || crop[3] - crop[1] < 2) {
        throw PreprocessingException("person box ${box?.toList()} leaves an empty crop of a ${image.width}x${image.height} image")
    }
    val cropped = if (box != null) image.crop(crop[0], crop[1], crop[2], crop[3]) else image
    val size = targetSize(cropped.height, cropped.width, height, input.resize.multiple)
    val tensor = normalizeInPlace(resizeRgb(cropped, size[0], size[1]), size[0] * size[1], input.normalization)
    return Preprocessed(tensor, intArrayOf(1, 3, size[0], size[1]), crop, image.height, image.width)
}

/** Problems with an input size against the manifest's size_constraints (empty when it is fine). */
fun checkInputSize(height: Int, width: Int, c: SizeConstraints): List<String> {
    val problems = ArrayList<String>()
    if (height % c.multipleOf != 0 || width % c.multipleOf != 0) problems.add("${height}x$width is not a multiple of ${c.multipleOf}")
    if (height < c.minHeight || height > c.maxHeight) problems.add("height $height is outside ${c.minHeight}..${c.maxHeight}")
    if (width < c.minWidth || width > c.maxWidth) problems.add("width $width is outside ${c.minWidth}..${c.maxWidth}")
    if (height.toLong() * width < c.minPixels) problems.add("H*W = ${height.toLong() * width} is below min_pixels ${c.minPixels}")
    return problems
}

/** Spec step 6: (1, K, H, W) logits -> (H, W) mask, 1 where logits[fg] > logits[0]. */
fun logitsToMask(logits: FloatArray, classes: Int, height: Int, width: Int, foreground: Int = 1): ByteArray {
    val plane = height * width
    if (logits.size != classes * plane) throw PreprocessingException("logits hold ${logits.size} values, expected $classes x $height x $width")
    val mask = ByteArray(plane)
    val fg = foreground * plane
    for (i in 0 until plane) if (logits[fg + i] > logits[i]) mask[i] = 1
    return mask
}

/** Spec step 6, back onto the photo: resize the logits (not the mask) to the crop, take the mask, paste. */
fun maskToOriginal(logits: FloatArray, classes: Int, pre: Preprocessed, foreground: Int = 1): ByteArray {
    val h = pre.shape[2]
    val w = pre.shape[3]
    val cw = pre.crop[2] - pre.crop[0]
    val ch = pre.crop[3] - pre.crop[1]
    val resized = resizeBilinear(logits, classes, h, w, ch, cw)
    val cropMask = logitsToMask(resized, classes, ch, cw, foreground)
    val full = ByteArray(pre.originalHeight * pre.originalWidth)
    for (y in 0 until ch) System.arraycopy(cropMask, y * cw, full, (y + pre.crop[1]) * pre.originalWidth + pre.crop[0], cw)
    return full
}

/** Tight (x0, y0, x1, y1) box around a mask (x1, y1 exclusive), or null when it is empty. */
fun personBox(mask: ByteArray, height: Int, width: Int): IntArray? {
    var x0 = width; var y0 = height; var x1 = -1; var y1 = -1
    for (y in 0 until height) for (x in 0 until width) {
        if (mask[y * width + x].toInt() != 0) {
            if (x < x0) x0 = x
            if (x > x1) x1 = x
            if (y < y0) y0 = y
            if (y > y1) y1 = y
        }
    }
    return if (x1 < 0) null else intArrayOf(x0, y0, x1 + 1, y1 + 1)
}

/** IoU of two masks (non-zero = person); 1.0 when both are empty, as in alisnet_export/parity.py. */
fun maskIou(a: ByteArray, b: ByteArray): Double {
    if (a.size != b.size) throw PreprocessingException("masks differ in size: ${a.size} vs ${b.size}")
    var inter = 0L
    var union = 0L
    for (i in a.indices) {
        val pa = a[i].toInt() != 0
        val pb = b[i].toInt() != 0
        if (pa && pb) inter++
        if (pa || pb) union++
    }
    return if (union == 0L) 1.0 else inter.toDouble() / union
}

/** max |a - b| (NaN anywhere counts as infinitely different). */
fun maxAbsDiff(a: FloatArray, b: FloatArray): Double {
    if (a.size != b.size) throw PreprocessingException("arrays differ in size: ${a.size} vs ${b.size}")
    var m = 0.0
    for (i in a.indices) {
        val d = Math.abs(a[i].toDouble() - b[i].toDouble())
        if (d.isNaN()) return Double.POSITIVE_INFINITY
        if (d > m) m = d
    }
    return m
}
