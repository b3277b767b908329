import ALiSNetCore
import SwiftUI

struct ArtifactResult: Identifiable {
    let id: String
    let report: SelfCheckReport
    let golden: LatencyStats?
    let deployment: LatencyStats?
    let deploymentSize: [Int]
    let mask: [UInt8], maskHeight: Int, maskWidth: Int
    let error: String?
}

/// Runs every .ptl/.pte/.mlpackage of the embedded bundle: golden self-check, latency (median of N), mask.
enum Harness {
    static func run(bundle: ALiSNetBundle, entry: ArtifactEntry, runs: Int, warmup: Int) -> ArtifactResult {
        do {
            let runner = try Runtimes.open(entry, bundle: bundle)
            let report = try SelfCheck.run(bundle, entry, runner: runner)
            let golden = try bundle.tensor("input")
            let x = try golden.floats()
            let out = try runner.run(x, shape: golden.shape)
            let mask = try logitsToMask(out.logits, classes: out.shape[1], height: out.shape[2], width: out.shape[3],
                                        foreground: bundle.manifest.output.foregroundChannel)
            let goldenLatency = try LatencyStats.measure(runs: runs, warmup: warmup) { _ = try runner.run(x, shape: golden.shape) }
            let src = try bundle.tensor("source_rgb")
            let pre = try preprocess(try RgbImage(height: src.shape[0], width: src.shape[1], pixels: try src.bytes()), bundle.manifest.input)
            let size = [pre.shape[2], pre.shape[3]]
            let deployment = checkInputSize(size[0], size[1], bundle.manifest.input.sizeConstraints).isEmpty
                ? try LatencyStats.measure(runs: runs, warmup: warmup) { _ = try runner.run(pre.tensor, shape: pre.shape) } : nil
            return ArtifactResult(id: entry.id, report: report, golden: goldenLatency, deployment: deployment, deploymentSize: size,
                                  mask: mask, maskHeight: out.shape[2], maskWidth: out.shape[3], error: nil)
        } catch {
            return ArtifactResult(id: entry.id, report: SelfCheckReport(bundle: bundle.manifestURL.path, checks: []), golden: nil,
                                  deployment: nil, deploymentSize: [], mask: [], maskHeight: 0, maskWidth: 0, error: String(describing: error))
        }
    }
}

@main
struct HarnessApp: App {
    var body: some Scene { WindowGroup { ContentView() } }
}

struct ContentView: View {
    @State private var status = "Running the self-check…"
    @State private var results: [ArtifactResult] = []

    var body: some View {
        ScrollView {
            VStack(alignment: .leading, spacing: 12) {
                Text(status).font(.headline)
                ForEach(results) { r in
                    Text(describe(r)).font(.system(.footnote, design: .monospaced))
                    if let image = maskImage(r) { Image(decorative: image, scale: 1).resizable().scaledToFit() }
                }
            }.padding()
        }.task { await runAll() }
    }

    private func runAll() async {
        let found: (ALiSNetBundle, [ArtifactResult])? = await Task.detached(priority: .userInitiated) {
            guard let folder = Bundle.main.url(forResource: "Bundle", withExtension: nil),
                  let bundle = try? ALiSNetBundle.open(folder) else { return nil }
            let entries = bundle.manifest.artifacts.filter { ["ptl", "pte", "coreml"].contains($0.format) }
            return (bundle, entries.map { Harness.run(bundle: bundle, entry: $0, runs: 30, warmup: 3) })
        }.value
        guard let (bundle, rs) = found else { status = "No bundle in the app: copy one into App/Bundle (README)"; return }
        results = rs
        status = !rs.isEmpty && rs.allSatisfy { $0.report.passed } ? "ALL PASSED (\(bundle.manifest.variant))" : "SELF-CHECK FAILED: do not ship this bundle"
        print(rs.map { $0.report.toJSON() }.joined(separator: "\n"))
    }

    private func describe(_ r: ArtifactResult) -> String {
        if let e = r.error { return "\(r.id): ERROR \(e)" }
        var s = "\(r.id): \(r.report.passed ? "PASS" : "FAIL")\n"
        for c in r.report.checks { s += "  \(c.passed ? "ok  " : "FAIL") \(c.name)\(c.value.map { String(format: " = %.4g", $0) } ?? "")\n" }
        if let g = r.golden { s += String(format: "  latency %dx%d: median %.1f ms (p90 %.1f, n=%d)\n", r.maskHeight, r.maskWidth, g.medianMs, g.p90Ms, g.runs) }
        if let d = r.deployment { s += String(format: "  latency %dx%d: median %.1f ms (p90 %.1f, n=%d)\n", r.deploymentSize[0], r.deploymentSize[1], d.medianMs, d.p90Ms, d.runs) }
        return s
    }

    private func maskImage(_ r: ArtifactResult) -> CGImage? {
        guard !r.mask.isEmpty else { return nil }
        let pixels = r.mask.map { $0 != 0 ? UInt8(255) : UInt8(0) }
        guard let provider = CGDataProvider(data: Data(pixels) as CFData) else { return nil }
        return CGImage(width: r.maskWidth, height: r.maskHeight, bitsPerComponent: 8, bitsPerPixel: 8, bytesPerRow: r.maskWidth,
                       space: CGColorSpaceCreateDeviceGray(), bitmapInfo: CGBitmapInfo(rawValue: 0), provider: provider,
                       decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }
}
