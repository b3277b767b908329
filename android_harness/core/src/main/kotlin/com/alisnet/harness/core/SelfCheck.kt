package com.alisnet.harness.core

/**
 * The on-device self-check of docs/bundle-contract.md section 4, step by step. Each step returns
 * [Check]s; the app (or the JVM CLI) collects them into a [SelfCheckReport].
 */
/** [skipped]: the contract says to skip this step here (e.g. no recorded output to compare with); it does not fail. */
class Check(val name: String, val passed: Boolean, val value: Double?, val limit: Double?, val detail: String,
            val skipped: Boolean = false) {
    fun toMap(): Map<String, Any?> {
        val m = linkedMapOf<String, Any?>("name" to name, "passed" to passed, "value" to value, "limit" to limit, "detail" to detail)
        if (skipped) m["skipped"] = true
        return m
    }
}

class SelfCheckReport(val bundle: String, val checks: List<Check>, val extra: Map<String, Any?> = emptyMap()) {
    val passed: Boolean get() = checks.isNotEmpty() && checks.all { it.passed }

    fun toMap(): Map<String, Any?> {
        val m = linkedMapOf<String, Any?>("bundle" to bundle, "passed" to passed, "checks" to checks.map { it.toMap() })
        m.putAll(extra)
        return m
    }

    fun toJson(): String = Json.write(toMap())
}

/** What the app plugs in per runtime: run the artifact on an NCHW float32 input, return its float32 logits. */
interface ArtifactRunner {
    /** Returns the flat logits; [outputShape] receives the output shape (4 dims). */
    fun run(input: FloatArray, shape: IntArray, outputShape: IntArray): FloatArray

    fun close() {}
}

object SelfCheck {
    /** Step 1 tolerance: float rounding only (contract section 4). */
    const val PREPROCESSING_MAX_ABS = 1e-4

    /** The artifact files and the golden file are the ones the manifest describes (size and sha256). */
    fun integrity(bundle: Bundle): List<Check> {
        val checks = ArrayList<Check>()
        for (entry in bundle.manifest.artifacts) {
            val file = bundle.artifactFile(entry)
            if (!file.exists()) {
                checks.add(Check("integrity.${entry.id}", false, null, null, "$file is missing (manifest artifact \"${entry.id}\")"))
                continue
            }
            val size = Bundle.artifactSize(file)
            val sha = Bundle.artifactSha256(file)
            val ok = size == entry.sizeBytes && sha == entry.sha256
            checks.add(Check("integrity.${entry.id}", ok, size.toDouble(), entry.sizeBytes.toDouble(),
                if (ok) "${file.name}: size and sha256 match"
                else "${file.name}: ${size} bytes sha256 $sha, manifest says ${entry.sizeBytes} bytes sha256 ${entry.sha256}: a corrupted or replaced file"))
        }
        val ref = bundle.manifest.golden
        val gfile = bundle.goldenFile()
        if (ref != null && gfile != null) {
            val sha = Bundle.sha256File(gfile)
            checks.add(Check("integrity.golden", sha == ref.sha256, null, null,
                if (sha == ref.sha256) "${gfile.name}: sha256 matches" else "${gfile.name}: sha256 $sha, manifest says ${ref.sha256}"))
        }
        return checks
    }

    /** Step 1: preprocess `source_rgb` per the manifest and compare with the golden `input`. */
    fun preprocessing(bundle: Bundle): Check {
        val src = bundle.tensor("source_rgb")
        val expected = bundle.tensor("input")
        if (src.shape.size != 3 || src.shape[2] != 3 || expected.shape.size != 4 || expected.shape[1] != 3) {
            return Check("preprocessing", false, null, PREPROCESSING_MAX_ABS,
                "golden shapes source_rgb ${src.shape.toList()} / input ${expected.shape.toList()} are not (h, w, 3) / (1, 3, H, W)")
        }
        val h = expected.shape[2]
        val w = expected.shape[3]
        val image = RgbImage(src.shape[0], src.shape[1], src.bytes())
        val got = normalizeInPlace(resizeRgb(image, h, w), h * w, bundle.manifest.input.normalization)
        val diff = maxAbsDiff(got, expected.floats())
        val ok = diff <= PREPROCESSING_MAX_ABS
        return Check("preprocessing", ok, diff, PREPROCESSING_MAX_ABS,
            if (ok) "source_rgb preprocessed per the manifest matches the golden input (${h}x$w)"
            else "preprocessing per the manifest differs from the golden input by up to ${"%.4g".format(diff)}: " +
                "the manifest's normalisation/resize or this app's preprocessing no longer matches what the model was exported with")
    }

    /**
     * Contract step 2 is skipped for an artifact that could not run on the exporting machine (Core ML
     * exported on Linux: parity not_run, no `logits.<id>`); step 3 still compares with the float reference.
     */
    private fun notRecorded(name: String, entry: ArtifactEntry, limit: Double?): Check =
        Check(name, true, null, limit, "skipped: no logits.${entry.id} to compare with; the artifact could not run on " +
            "the exporting machine (parity not_run). Its output is checked against the float reference only", skipped = true)

    /**
     * Steps 2-3 for one artifact's output on the golden input: against its own recorded output
     * (`logits.<id>`, self_max_abs) and the float reference (`mask.float` IoU, `logits.float` max abs).
     */
    fun output(bundle: Bundle, entry: ArtifactEntry, logits: FloatArray, shape: IntArray): List<Check> {
        val tol = entry.tolerances ?: return listOf(Check("output.${entry.id}", false, null, null,
            "artifact \"${entry.id}\" has no golden_tolerances in the manifest; re-export it"))
        val checks = ArrayList<Check>()
        val ref = bundle.tensor("logits.float")
        if (!shape.contentEquals(ref.shape)) {
            return listOf(Check("output.${entry.id}.shape", false, null, null,
                "output shape ${shape.toList()} differs from the golden logits ${ref.shape.toList()}"))
        }
        val recorded = bundle.golden?.get("logits.${entry.id}")
        if (recorded != null) {
            val d = maxAbsDiff(logits, recorded.floats())
            checks.add(Check("output.${entry.id}.self_max_abs", d <= tol.selfMaxAbs, d, tol.selfMaxAbs,
                "max |logits - logits.${entry.id}| (its output on the exporting machine)"))
        } else if (entry.parityStatus == "not_run") {
            checks.add(notRecorded("output.${entry.id}.self_max_abs", entry, tol.selfMaxAbs))
        } else {
            checks.add(Check("output.${entry.id}.self_max_abs", false, null, tol.selfMaxAbs,
                "golden vectors lack logits.${entry.id}, yet its parity ran (${entry.parityStatus}): a broken bundle; re-export it"))
        }
        val classes = shape[1]
        val h = shape[2]
        val w = shape[3]
        val fg = bundle.manifest.output.foregroundChannel
        val iou = maskIou(logitsToMask(logits, classes, h, w, fg), bundle.tensor("mask.float").bytes())
        checks.add(Check("output.${entry.id}.reference_mask_iou", iou >= tol.referenceMinMaskIou, iou, tol.referenceMinMaskIou,
            "IoU of its mask with mask.float (the float model's)"))
        val refMax = tol.referenceMaxAbs
        if (refMax != null) {
            val d = maxAbsDiff(logits, ref.floats())
            checks.add(Check("output.${entry.id}.reference_max_abs", d <= refMax, d, refMax, "max |logits - logits.float|"))
        }
        return checks
    }

    /**
     * What can be checked without running the artifact (the JVM, or an app before it loads a runtime):
     * integrity, step 1, and steps 2-3 on each artifact's recorded output `logits.<id>`.
     */
    fun offline(bundle: Bundle): SelfCheckReport {
        val checks = ArrayList<Check>(integrity(bundle))
        if (bundle.golden == null) {
            checks.add(Check("golden", false, null, null, "${bundle.manifestFile}: the manifest names no golden vectors; re-export the bundle"))
            return SelfCheckReport(bundle.manifestFile.path, checks)
        }
        checks.add(preprocessing(bundle))
        for (entry in bundle.manifest.artifacts) {
            val recorded = bundle.golden["logits.${entry.id}"]
            if (recorded == null) {
                checks.add(if (entry.parityStatus == "not_run") notRecorded("output.${entry.id}", entry, null)
                    else Check("output.${entry.id}", false, null, null,
                        "golden vectors lack logits.${entry.id}, yet its parity ran (${entry.parityStatus}): a broken bundle; re-export it"))
                continue
            }
            checks.addAll(output(bundle, entry, recorded.floats(), recorded.shape).filter { !it.name.endsWith("self_max_abs") })
        }
        return SelfCheckReport(bundle.manifestFile.path, checks, mapOf("mode" to "offline (recorded outputs; no runtime)"))
    }

    /** Steps 1-3 with a real runtime: the app's self-check for one artifact. */
    fun run(bundle: Bundle, entry: ArtifactEntry, runner: ArtifactRunner): SelfCheckReport {
        val checks = ArrayList<Check>()
        checks.add(preprocessing(bundle))
        val input = bundle.tensor("input")
        val outShape = IntArray(4)
        val logits = runner.run(input.floats(), input.shape, outShape)
        checks.addAll(output(bundle, entry, logits, outShape))
        return SelfCheckReport(bundle.manifestFile.path, checks, mapOf("artifact" to entry.id, "format" to entry.format))
    }
}
