package com.alisnet.harness.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

/** Spec properties that hold without Python; the Python-computed references are in ReferenceTest. */
class PreprocessingTest {
    @Test
    fun targetSizeKeepsTheHeightAndRoundsTheWidthHalfToEven() {
        assertArrayEquals(intArrayOf(1024, 768), targetSize(400, 300, 1024))
        assertArrayEquals(intArrayOf(256, 192), targetSize(400, 300, 256))
        assertArrayEquals(intArrayOf(64, 64), targetSize(64, 80, 64))    // 2.5 -> 2 (Python round)
        assertArrayEquals(intArrayOf(64, 128), targetSize(64, 112, 64))  // 3.5 -> 4
        assertArrayEquals(intArrayOf(64, 32), targetSize(1000, 10, 64))  // never below one multiple
    }

    @Test(expected = PreprocessingException::class)
    fun targetHeightMustBeAMultipleOf32() {
        targetSize(100, 100, 100)
    }

    @Test
    fun resizeToTheSameSizeIsExactAndAConstantImageStaysConstant() {
        val px = ByteArray(5 * 7 * 3) { (it * 37 % 256).toByte() }
        val img = RgbImage(5, 7, px)
        val same = resizeRgb(img, 5, 7)
        for (i in 0 until 35) assertEquals((px[3 * i].toInt() and 0xff).toFloat(), same[i], 0f)
        val flat = RgbImage(9, 13, ByteArray(9 * 13 * 3) { 200.toByte() })
        for (v in resizeRgb(flat, 32, 64)) assertEquals(200f, v, 1e-4f)
    }

    @Test
    fun normalisationFollowsTheFormula() {
        val chw = floatArrayOf(0f, 255f, 127.5f)
        normalizeInPlace(chw, 1, Normalization(floatArrayOf(0.5f, 0.25f, 0f), floatArrayOf(0.5f, 0.25f, 2f)))
        assertArrayEquals(floatArrayOf(-1f, 3f, 0.25f), chw, 1e-6f)
    }

    @Test
    fun maskRuleAndIou() {
        // (1, 2, 1, 3): person where channel 1 > channel 0; ties are background
        val mask = logitsToMask(floatArrayOf(0f, 1f, 2f, 1f, 1f, 1f), 2, 1, 3)
        assertArrayEquals(byteArrayOf(1, 0, 0), mask)
        assertEquals(0.5, maskIou(byteArrayOf(1, 1, 0), byteArrayOf(1, 0, 0)), 1e-12)
        assertEquals(1.0, maskIou(byteArrayOf(0, 0), byteArrayOf(0, 0)), 0.0)
        assertArrayEquals(intArrayOf(1, 0, 3, 2), personBox(byteArrayOf(0, 1, 1, 0, 0, 1), 2, 3))
        assertNull(personBox(ByteArray(4), 2, 2))
    }

    @Test
    fun cropBoxGrowsByTheMarginAndClips() {
        assertArrayEquals(intArrayOf(9, 19, 31, 41), cropBox(intArrayOf(10, 20, 30, 40), 100, 100, 0.05))
        assertArrayEquals(intArrayOf(0, 0, 50, 60), cropBox(intArrayOf(0, 0, 50, 60), 60, 50, 0.1))
    }

    @Test
    fun sizeConstraintsAreChecked() {
        val c = SizeConstraints(32, 64, 1024, 64, 1024, 8192)
        assertEquals(emptyList<String>(), checkInputSize(128, 96, c))
        assertEquals(2, checkInputSize(100, 2048, c).size)
        assertEquals(1, checkInputSize(64, 64, c).size)
    }

    @Test
    fun latencyMedianAndPercentile() {
        val s = LatencyStats.of(doubleArrayOf(5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 7.0, 8.0, 9.0))
        assertEquals(5.5, s.medianMs, 1e-12)
        assertEquals(9.0, s.p90Ms, 1e-12)
        assertEquals(1.0, s.minMs, 0.0)
        var calls = 0
        assertEquals(4, LatencyStats.measure(4, 2) { calls++ }.runs)
        assertEquals(6, calls)
    }
}
