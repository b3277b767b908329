package com.alisnet.harness.core

/** On-device latency: warm-up runs, then [runs] timed runs; the median is what the harness reports. */
class LatencyStats(val runs: Int, val medianMs: Double, val p90Ms: Double, val minMs: Double, val maxMs: Double) {
    fun toMap(): Map<String, Any?> = linkedMapOf("runs" to runs, "median_ms" to medianMs, "p90_ms" to p90Ms, "min_ms" to minMs, "max_ms" to maxMs)

    companion object {
        fun of(samplesMs: DoubleArray): LatencyStats {
            require(samplesMs.isNotEmpty()) { "no latency samples" }
            val s = samplesMs.sortedArray()
            val n = s.size
            val median = if (n % 2 == 1) s[n / 2] else (s[n / 2 - 1] + s[n / 2]) / 2
            // nearest-rank 90th percentile
            val p90 = s[Math.min(n - 1, Math.ceil(0.9 * n).toInt() - 1)]
            return LatencyStats(n, median, p90, s[0], s[n - 1])
        }

        fun measure(runs: Int, warmup: Int, block: () -> Unit): LatencyStats {
            require(runs > 0) { "runs must be > 0, got $runs" }
            for (i in 0 until warmup) block()
            val samples = DoubleArray(runs)
            for (i in 0 until runs) {
                val t0 = System.nanoTime()
                block()
                samples[i] = (System.nanoTime() - t0) / 1e6
            }
            return of(samples)
        }
    }
}
