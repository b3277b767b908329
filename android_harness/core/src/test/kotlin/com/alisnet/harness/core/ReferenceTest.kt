package com.alisnet.harness.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Test
import java.io.File

/**
 * The Kotlin core against the Python side: a bundle written by `alisnet-export` (-Dalisnet.bundle)
 * and Python-computed preprocessing references (-Dalisnet.reference, written by
 * tests/test_harness_kotlin.py). Skipped (assumption) without them; the pytest driver treats a skip
 * as a failure, so these always run under `make test`.
 */
class ReferenceTest {
    private fun prop(name: String): File {
        val v = System.getProperty(name)
        assumeTrue("-D$name not set (run through tests/test_harness_kotlin.py)", v != null)
        return File(v!!)
    }

    private val reference: Map<String, GoldenTensor> by lazy { Golden.read(prop("alisnet.reference")) }
    private val bundle: Bundle by lazy { Bundle.open(prop("alisnet.bundle")) }

    private fun ints(t: GoldenTensor): IntArray {
        assertEquals(Golden.INT32, t.dtype)
        val out = IntArray(t.count)
        java.nio.ByteBuffer.wrap(t.payload).order(java.nio.ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(out)
        return out
    }

    private fun report(name: String, value: Any) = println("METRIC $name $value")

    @Test
    fun targetSizesMatchPython() {
        val rows = reference.getValue("target_sizes")
        val v = ints(rows)
        for (r in 0 until rows.shape[0]) {
            val (h, w, height, expected) = listOf(v[4 * r], v[4 * r + 1], v[4 * r + 2], v[4 * r + 3])
            assertEquals("targetSize($h, $w, $height)", expected, targetSize(h, w, height)[1])
        }
    }

    @Test
    fun cropBoxesMatchPython() {
        val rows = reference.getValue("crop_boxes")
        val v = ints(rows)
        val margin = ints(reference.getValue("crop_margin_permille"))[0] / 1000.0
        for (r in 0 until rows.shape[0]) {
            val o = 10 * r
            val got = cropBox(intArrayOf(v[o], v[o + 1], v[o + 2], v[o + 3]), v[o + 4], v[o + 5], margin)
            assertArrayEquals("cropBox row $r", intArrayOf(v[o + 6], v[o + 7], v[o + 8], v[o + 9]), got)
        }
    }

    @Test
    fun resizeAndNormaliseMatchPython() {
        val rgb = reference.getValue("image")
        val image = RgbImage(rgb.shape[0], rgb.shape[1], rgb.bytes())
        val norm = bundle.manifest.input.normalization
        var cases = 0
        for ((name, t) in reference) {
            if (!name.startsWith("resized.")) continue
            val h = t.shape[2]
            val w = t.shape[3]
            val resized = resizeRgb(image, h, w)
            val d255 = maxAbsDiff(resized, t.floats())
            report("resize_max_abs_0_255.${h}x$w", d255)
            assertTrue("resize ${h}x$w differs from torch by $d255 (0..255 units)", d255 <= 1e-3)
            val normalised = normalizeInPlace(resized, h * w, norm)
            val d = maxAbsDiff(normalised, reference.getValue("input.${h}x$w").floats())
            report("input_max_abs.${h}x$w", d)
            assertTrue("normalised input ${h}x$w differs by $d", d <= SelfCheck.PREPROCESSING_MAX_ABS)
            cases++
        }
        assertTrue("no resize cases in the reference file", cases >= 3)
    }

    @Test
    fun fullPreprocessWithAPersonBoxMatchesPython() {
        val rgb = reference.getValue("image")
        val image = RgbImage(rgb.shape[0], rgb.shape[1], rgb.bytes())
        val box = ints(reference.getValue("pre.box"))
        val expected = reference.getValue("pre.input")
        val pre = preprocess(image, bundle.manifest.input, box, expected.shape[2])
        assertArrayEquals(ints(reference.getValue("pre.crop")), pre.crop)
        assertArrayEquals(expected.shape, pre.shape)
        val d = maxAbsDiff(pre.tensor, expected.floats())
        report("preprocess_crop_max_abs", d)
        assertTrue("preprocess with a box differs by $d", d <= SelfCheck.PREPROCESSING_MAX_ABS)
    }

    @Test
    fun masksMatchPython() {
        val logits = reference.getValue("pre.logits")
        val k = logits.shape[1]
        val h = logits.shape[2]
        val w = logits.shape[3]
        assertArrayEquals(reference.getValue("pre.mask").bytes(), logitsToMask(logits.floats(), k, h, w, 1))
        val rgb = reference.getValue("image")
        val box = ints(reference.getValue("pre.box"))
        val crop = ints(reference.getValue("pre.crop"))
        val pre = Preprocessed(FloatArray(0), intArrayOf(1, 3, h, w), crop, rgb.shape[0], rgb.shape[1])
        val full = maskToOriginal(logits.floats(), k, pre, 1)
        val expected = reference.getValue("pre.mask_original").bytes()
        var mismatched = 0
        for (i in full.indices) if (full[i] != expected[i]) mismatched++
        report("mask_to_original_mismatched_pixels", mismatched)
        assertTrue("box $box: $mismatched of ${full.size} pixels differ", mismatched * 1000 <= full.size)
        assertTrue(maskIou(full, expected) >= 0.999)
    }

    @Test
    fun theExportedBundleReadsAndPassesItsOfflineSelfCheck() {
        val m = bundle.manifest
        assertEquals("1.0", m.schemaVersion)
        assertTrue(m.artifacts.isNotEmpty())
        val report = SelfCheck.offline(bundle)
        for (c in report.checks) report("check.${c.name}", "${c.passed} ${c.value}")
        assertTrue(report.toJson(), report.passed)
        assertTrue(report.checks.any { it.name == "preprocessing" && it.passed })
    }

    @Test
    fun aRunnerThatReproducesTheGoldenOutputPassesAndABrokenOneFails() {
        val entry = bundle.manifest.artifacts[0]
        val recorded = bundle.tensor("logits.${entry.id}")
        val good = object : ArtifactRunner {
            override fun run(input: FloatArray, shape: IntArray, outputShape: IntArray): FloatArray {
                recorded.shape.copyInto(outputShape)
                return recorded.floats()
            }
        }
        assertTrue(SelfCheck.run(bundle, entry, good).toJson(), SelfCheck.run(bundle, entry, good).passed)
        val broken = object : ArtifactRunner {
            override fun run(input: FloatArray, shape: IntArray, outputShape: IntArray): FloatArray {
                recorded.shape.copyInto(outputShape)
                val v = recorded.floats()
                for (i in v.indices) v[i] = -v[i]
                return v
            }
        }
        val report = SelfCheck.run(bundle, entry, broken)
        assertTrue(!report.passed && report.checks.any { it.name.endsWith("reference_mask_iou") && !it.passed })
    }

    @Test
    fun anArtifactThatCouldNotRunWhereItWasExportedSkipsOnlyTheSelfComparison() {
        // Core ML exported on Linux: parity not_run and no logits.<id> in the golden file (contract step 2: skip)
        val entry = bundle.manifest.artifacts[0]
        val recorded = bundle.tensor("logits.${entry.id}")
        fun withStatus(status: String) = ArtifactEntry(entry.id, entry.format, entry.file, entry.sizeBytes, entry.sha256,
            entry.precision, entry.runtimeKind, entry.runtime, status, entry.tolerances)
        fun stripped(status: String): Bundle {
            val m = bundle.manifest
            val manifest = Manifest(m.schemaVersion, m.variant, m.input, m.output, listOf(withStatus(status)), m.golden, m.raw)
            return Bundle(bundle.manifestFile, manifest, bundle.golden!!.filterKeys { it != "logits.${entry.id}" })
        }
        val notRun = SelfCheck.output(stripped("not_run"), withStatus("not_run"), recorded.floats(), recorded.shape)
        val self = notRun.single { it.name.endsWith("self_max_abs") }
        assertTrue(self.passed && self.skipped && self.toMap()["skipped"] == true)
        // step 3 still runs, and can fail: the negated output's mask is refused
        assertTrue(notRun.any { it.name.endsWith("reference_mask_iou") && it.passed && !it.skipped })
        val negated = recorded.floats().also { v -> for (i in v.indices) v[i] = -v[i] }
        assertTrue(SelfCheck.output(stripped("not_run"), withStatus("not_run"), negated, recorded.shape)
            .any { it.name.endsWith("reference_mask_iou") && !it.passed })
        val offline = SelfCheck.offline(stripped("not_run"))
        assertTrue(offline.toJson(), offline.passed && offline.checks.any { it.name == "output.${entry.id}" && it.skipped })
        // its parity ran, yet the golden file lacks its output: a broken bundle, not a skip
        for (report in listOf(SelfCheck.output(stripped("passed"), withStatus("passed"), recorded.floats(), recorded.shape),
                              SelfCheck.offline(stripped("passed")).checks)) {
            assertTrue(report.any { !it.passed && !it.skipped && it.detail.contains("broken bundle") })
        }
        assertTrue(!SelfCheck.offline(stripped("passed")).passed)
    }

    @Test
    fun aManifestFromAnotherMajorVersionOrLayoutIsRefused() {
        val text = bundle.manifestFile.readText()
        for ((from, to, field) in listOf(
            Triple("\"schema_version\": \"1.0\"", "\"schema_version\": \"2.0\"", "schema_version"),
            Triple("\"layout\": \"NCHW\"", "\"layout\": \"NHWC\"", "layout"),
            Triple("\"foreground_channel\": 1", "\"foreground_channel\": 0", "foreground_channel")
        )) {
            assertTrue("manifest text lacks $from", text.contains(from))
            try {
                Manifest.parse(text.replace(from, to), "m.json")
                throw AssertionError("accepted $to")
            } catch (ex: ManifestException) {
                val msg = ex.message ?: ""
                assertTrue(msg, msg.contains(field) && msg.contains("m.json"))
            }
        }
    }
}
