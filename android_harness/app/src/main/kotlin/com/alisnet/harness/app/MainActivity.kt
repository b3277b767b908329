package com.alisnet.harness.app

import android.app.Activity
import android.graphics.Bitmap
import android.graphics.Color
import android.os.Bundle
import android.util.Log
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import com.alisnet.harness.core.resizeRgb
import java.io.File

/**
 * Loads the embedded bundle, runs every artifact this APK's runtime supports through the golden
 * self-check and the latency loop, and shows pass/fail, the median latencies and the mask.
 * The JSON report is also written to files/harness-report.json and logged under the tag "ALiSNet".
 */
class MainActivity : Activity() {
    private lateinit var column: LinearLayout
    private lateinit var status: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        column = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(24, 24, 24, 24) }
        status = TextView(this).apply { text = "Running the self-check…"; textSize = 14f }
        column.addView(status)
        setContentView(ScrollView(this).apply { addView(column) })
        Thread { runHarness() }.start()
    }

    private fun runHarness() {
        try {
            val bundle = BundleAssets.open(this)
            val entries = Harness.runnable(bundle)
            if (entries.isEmpty()) {
                show("The bundle has no ${Runtimes.FORMATS.joinToString()} artifact for this APK (${Runtimes.DESCRIPTION}); " +
                    "it lists ${bundle.manifest.artifacts.joinToString { it.format }}. Install the other flavor.")
                return
            }
            val results = entries.map { Harness.run(bundle, it, runs = 30, warmup = 3) }
            val json = Harness.reportJson(bundle, results)
            File(filesDir, "harness-report.json").writeText(json)
            Log.i(TAG, json)
            val src = bundle.tensor("source_rgb")
            runOnUiThread {
                status.text = if (results.all { it.passed }) "ALL PASSED" else "SELF-CHECK FAILED: do not ship this bundle"
                for (r in results) {
                    column.addView(TextView(this).apply { text = describe(r); textSize = 13f })
                    column.addView(ImageView(this).apply {
                        adjustViewBounds = true
                        setImageBitmap(overlay(src.shape[0], src.shape[1], src.bytes(), r))
                    })
                }
            }
        } catch (ex: Exception) {
            Log.e(TAG, "harness failed", ex)
            show("ERROR: ${ex.message}")
        }
    }

    private fun describe(r: ArtifactResult): String {
        val sb = StringBuilder("${r.entry.id} (${r.entry.file}): ${if (r.passed) "PASS" else "FAIL"}\n")
        for (c in r.report.checks) sb.append("  ${if (c.passed) "ok  " else "FAIL"} ${c.name}${c.value?.let { " = %.4g (limit %s)".format(it, c.limit) } ?: ""}\n")
        sb.append("  latency ${r.maskHeight}x${r.maskWidth}: median %.1f ms (p90 %.1f, n=%d)\n".format(r.goldenLatency.medianMs, r.goldenLatency.p90Ms, r.goldenLatency.runs))
        r.deploymentLatency?.let {
            sb.append("  latency ${r.deploymentSize[0]}x${r.deploymentSize[1]}: median %.1f ms (p90 %.1f, n=%d)\n".format(it.medianMs, it.p90Ms, it.runs))
        }
        return sb.toString()
    }

    /** The golden photo at the mask's size with the person tinted red. */
    private fun overlay(h: Int, w: Int, rgb: ByteArray, r: ArtifactResult): Bitmap {
        val planes = resizeRgb(com.alisnet.harness.core.RgbImage(h, w, rgb), r.maskHeight, r.maskWidth)
        val n = r.maskHeight * r.maskWidth
        val px = IntArray(n)
        for (i in 0 until n) {
            var red = planes[i].toInt().coerceIn(0, 255)
            var green = planes[n + i].toInt().coerceIn(0, 255)
            var blue = planes[2 * n + i].toInt().coerceIn(0, 255)
            if (r.mask[i].toInt() != 0) { red = (red + 255) / 2; green /= 2; blue /= 2 }
            px[i] = Color.rgb(red, green, blue)
        }
        return Bitmap.createBitmap(px, r.maskWidth, r.maskHeight, Bitmap.Config.ARGB_8888)
    }

    private fun show(message: String) = runOnUiThread { status.text = message }

    companion object {
        const val TAG = "ALiSNet"
    }
}
