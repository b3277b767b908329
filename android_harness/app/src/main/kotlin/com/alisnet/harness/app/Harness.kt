package com.alisnet.harness.app

import com.alisnet.harness.core.ArtifactEntry
import com.alisnet.harness.core.Bundle
import com.alisnet.harness.core.Check
import com.alisnet.harness.core.Json
import com.alisnet.harness.core.LatencyStats
import com.alisnet.harness.core.RgbImage
import com.alisnet.harness.core.SelfCheck
import com.alisnet.harness.core.SelfCheckReport
import com.alisnet.harness.core.checkInputSize
import com.alisnet.harness.core.logitsToMask
import com.alisnet.harness.core.preprocess

/** One artifact's on-device result: the golden self-check, latency, and the golden input's mask. */
class ArtifactResult(
    val entry: ArtifactEntry,
    val report: SelfCheckReport,
    val goldenLatency: LatencyStats,
    val deploymentLatency: LatencyStats?,
    val deploymentSize: IntArray,
    val mask: ByteArray,
    val maskHeight: Int,
    val maskWidth: Int
) {
    val passed: Boolean get() = report.passed

    fun toMap(): Map<String, Any?> = linkedMapOf(
        "artifact" to entry.id, "format" to entry.format, "file" to entry.file, "passed" to passed,
        "checks" to report.checks.map { it.toMap() },
        "latency_golden" to linkedMapOf<String, Any?>("input" to "${maskHeight}x$maskWidth").apply { putAll(goldenLatency.toMap()) },
        "latency_deployment" to deploymentLatency?.let { l ->
            linkedMapOf<String, Any?>("input" to "${deploymentSize[0]}x${deploymentSize[1]}").apply { putAll(l.toMap()) }
        },
        "mask_foreground_fraction" to mask.count { it.toInt() != 0 }.toDouble() / mask.size
    )
}

object Harness {
    /** The artifacts of [bundle] this APK's runtime can run (its flavor: ptl or pte). */
    fun runnable(bundle: Bundle): List<ArtifactEntry> = bundle.manifest.artifacts.filter { it.format in Runtimes.FORMATS }

    /**
     * Self-check, then latency: the median of [runs] timed runs after [warmup], on the golden input
     * and on the golden photo preprocessed at the manifest's deployment height (1024 for the paper).
     */
    fun run(bundle: Bundle, entry: ArtifactEntry, runs: Int, warmup: Int): ArtifactResult {
        val runner = Runtimes.open(entry, bundle.artifactFile(entry))
        try {
            val extra = ArrayList<Check>()
            val runtimeProblem = Runtimes.compatibility(entry)
            extra.add(Check("runtime.${entry.id}", runtimeProblem == null, null, null,
                runtimeProblem ?: "${Runtimes.DESCRIPTION} can run ${entry.file}"))
            val check = SelfCheck.run(bundle, entry, runner)
            val report = SelfCheckReport(check.bundle, extra + check.checks, check.extra)

            val golden = bundle.tensor("input")
            val x = golden.floats()
            val outShape = IntArray(4)
            val logits = runner.run(x, golden.shape, outShape)
            val mask = logitsToMask(logits, outShape[1], outShape[2], outShape[3], bundle.manifest.output.foregroundChannel)
            val goldenLatency = LatencyStats.measure(runs, warmup) { runner.run(x, golden.shape, outShape) }

            val src = bundle.tensor("source_rgb")
            val pre = preprocess(RgbImage(src.shape[0], src.shape[1], src.bytes()), bundle.manifest.input)
            val size = intArrayOf(pre.shape[2], pre.shape[3])
            val deployment = if (checkInputSize(size[0], size[1], bundle.manifest.input.sizeConstraints).isEmpty()) {
                val shape2 = IntArray(4)
                LatencyStats.measure(runs, warmup) { runner.run(pre.tensor, pre.shape, shape2) }
            } else null
            return ArtifactResult(entry, report, goldenLatency, deployment, size, mask, outShape[2], outShape[3])
        } finally {
            runner.close()
        }
    }

    fun reportJson(bundle: Bundle, results: List<ArtifactResult>): String = Json.write(linkedMapOf(
        "bundle" to bundle.manifestFile.name, "variant" to bundle.manifest.variant, "runtime" to Runtimes.DESCRIPTION,
        "device" to "${android.os.Build.MANUFACTURER} ${android.os.Build.MODEL} (Android ${android.os.Build.VERSION.RELEASE}, ${android.os.Build.SUPPORTED_ABIS.firstOrNull()})",
        "passed" to (results.isNotEmpty() && results.all { it.passed }),
        "artifacts" to results.map { it.toMap() }
    ))
}
