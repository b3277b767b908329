import Foundation

/// On-device latency: warm-up runs, then `runs` timed runs; the median is what the harness reports. Mirrors Latency.kt.
public struct LatencyStats {
    public let runs: Int
    public let medianMs, p90Ms, minMs, maxMs: Double

    public func toDict() -> [String: Any] { ["runs": runs, "median_ms": medianMs, "p90_ms": p90Ms, "min_ms": minMs, "max_ms": maxMs] }

    public static func of(_ samplesMs: [Double]) -> LatencyStats {
        precondition(!samplesMs.isEmpty, "no latency samples")
        let s = samplesMs.sorted(), n = s.count
        let median = n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
        let p90 = s[min(n - 1, Int((0.9 * Double(n)).rounded(.up)) - 1)]  // nearest rank
        return LatencyStats(runs: n, medianMs: median, p90Ms: p90, minMs: s[0], maxMs: s[n - 1])
    }

    public static func measure(runs: Int, warmup: Int, _ block: () throws -> Void) rethrows -> LatencyStats {
        precondition(runs > 0, "runs must be > 0")
        for _ in 0..<warmup { try block() }
        var samples: [Double] = []
        for _ in 0..<runs {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try block()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        return of(samples)
    }
}
