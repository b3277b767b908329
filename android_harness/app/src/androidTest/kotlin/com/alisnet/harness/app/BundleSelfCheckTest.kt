package com.alisnet.harness.app

import android.os.Bundle as AndroidBundle
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import com.alisnet.harness.core.SelfCheck
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File

/**
 * On a device or emulator: every artifact of the embedded bundle that this flavor's runtime supports
 * passes the golden self-check (contract section 4, steps 1-3) on the real runtime, and its latency
 * is reported (instrumentation status key "alisnet", and files/harness-report.json).
 *
 *   ./gradlew :app:connectedPtlDebugAndroidTest -PalisnetBundle=/path/to/bundle \
 *       -Pandroid.testInstrumentationRunnerArguments.runs=90
 */
@RunWith(AndroidJUnit4::class)
class BundleSelfCheckTest {
    private val instrumentation = InstrumentationRegistry.getInstrumentation()
    private val context = instrumentation.targetContext
    private val runs = InstrumentationRegistry.getArguments().getString("runs", "30").toInt()

    @Test
    fun offlineChecksPassBeforeAnyRuntimeIsLoaded() {
        val report = SelfCheck.offline(BundleAssets.open(context))
        assertTrue(report.toJson(), report.passed)
    }

    @Test
    fun everyArtifactForThisRuntimePassesTheGoldenSelfCheckAndIsTimed() {
        val bundle = BundleAssets.open(context)
        val entries = Harness.runnable(bundle)
        assertFalse("the bundle has no ${Runtimes.FORMATS} artifact for ${Runtimes.DESCRIPTION}", entries.isEmpty())
        val results = entries.map { Harness.run(bundle, it, runs = runs, warmup = 3) }
        val json = Harness.reportJson(bundle, results)
        File(context.filesDir, "harness-report.json").writeText(json)
        instrumentation.sendStatus(0, AndroidBundle().apply { putString("alisnet", json) })
        for (r in results) {
            assertTrue("${r.entry.id}: ${r.report.toJson()}", r.passed)
            assertTrue(r.goldenLatency.runs == runs && r.goldenLatency.medianMs > 0.0)
        }
    }
}
