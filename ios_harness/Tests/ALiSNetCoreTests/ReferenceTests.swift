import XCTest
@testable import ALiSNetCore

// Mirrors ReferenceTest.kt: the core against a bundle written by alisnet-export (ALISNET_BUNDLE) and
// the Python-computed references of tests/test_harness_kotlin.py (ALISNET_REFERENCE). Skipped without them.
final class ReferenceTests: XCTestCase {
    private func env(_ name: String) throws -> URL {
        guard let v = ProcessInfo.processInfo.environment[name] else { throw XCTSkip("\(name) not set") }
        return URL(fileURLWithPath: v)
    }
    private func bundle() throws -> ALiSNetBundle { try ALiSNetBundle.open(try env("ALISNET_BUNDLE")) }
    private func reference() throws -> [String: GoldenTensor] { try Golden.read(try env("ALISNET_REFERENCE")) }
    private func ints(_ t: GoldenTensor) -> [Int] {
        XCTAssertEqual(t.dtype, Golden.int32)
        return t.payload.withUnsafeBytes { raw in (0..<t.count).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) } }
    }

    func testTargetSizesMatchPython() throws {
        let t = try reference()["target_sizes"]!, v = ints(t)
        for r in 0..<t.shape[0] { XCTAssertEqual(try targetSize(v[4 * r], v[4 * r + 1], v[4 * r + 2])[1], v[4 * r + 3]) }
    }

    func testCropBoxesMatchPython() throws {
        let ref = try reference()
        let t = ref["crop_boxes"]!, v = ints(t), margin = Double(ints(ref["crop_margin_permille"]!)[0]) / 1000.0
        for r in 0..<t.shape[0] {
            let o = 10 * r
            XCTAssertEqual(cropBox(Array(v[o..<(o + 4)]), imageHeight: v[o + 4], imageWidth: v[o + 5], margin: margin), Array(v[(o + 6)..<(o + 10)]))
        }
    }

    func testResizeAndNormaliseMatchPython() throws {
        let ref = try reference(), b = try bundle()
        let rgb = ref["image"]!
        let image = try RgbImage(height: rgb.shape[0], width: rgb.shape[1], pixels: try rgb.bytes())
        var cases = 0
        for (name, t) in ref where name.hasPrefix("resized.") {
            let h = t.shape[2], w = t.shape[3]
            let resized = resizeRgb(image, outH: h, outW: w)
            XCTAssertLessThanOrEqual(try maxAbsDiff(resized, try t.floats()), 1e-3)
            let input = normalize(resized, plane: h * w, b.manifest.input.normalization)
            XCTAssertLessThanOrEqual(try maxAbsDiff(input, try ref["input.\(h)x\(w)"]!.floats()), SelfCheck.preprocessingMaxAbs)
            cases += 1
        }
        XCTAssertGreaterThanOrEqual(cases, 3)
    }

    func testFullPreprocessWithAPersonBoxMatchesPython() throws {
        let ref = try reference(), b = try bundle()
        let rgb = ref["image"]!, expected = ref["pre.input"]!
        let pre = try preprocess(try RgbImage(height: rgb.shape[0], width: rgb.shape[1], pixels: try rgb.bytes()), b.manifest.input,
                                 box: ints(ref["pre.box"]!), height: expected.shape[2])
        XCTAssertEqual(pre.crop, ints(ref["pre.crop"]!))
        XCTAssertEqual(pre.shape, expected.shape)
        XCTAssertLessThanOrEqual(try maxAbsDiff(pre.tensor, try expected.floats()), SelfCheck.preprocessingMaxAbs)
    }

    func testMasksMatchPython() throws {
        let ref = try reference()
        let logits = ref["pre.logits"]!, rgb = ref["image"]!
        let k = logits.shape[1], h = logits.shape[2], w = logits.shape[3]
        XCTAssertEqual(try logitsToMask(try logits.floats(), classes: k, height: h, width: w), try ref["pre.mask"]!.bytes())
        let pre = Preprocessed(tensor: [], shape: [1, 3, h, w], crop: ints(ref["pre.crop"]!), originalHeight: rgb.shape[0], originalWidth: rgb.shape[1])
        let full = try maskToOriginal(try logits.floats(), classes: k, pre)
        XCTAssertGreaterThanOrEqual(try maskIou(full, try ref["pre.mask_original"]!.bytes()), 0.999)
    }

    func testTheExportedBundleReadsAndPassesItsOfflineSelfCheck() throws {
        let b = try bundle()
        XCTAssertEqual(b.manifest.schemaVersion, "1.0")
        let report = try SelfCheck.offline(b)
        XCTAssertTrue(report.passed, report.toJSON())
        XCTAssertTrue(report.checks.contains { $0.name == "preprocessing" && $0.passed })
    }

    func testARunnerThatReproducesTheGoldenOutputPassesAndABrokenOneFails() throws {
        let b = try bundle()
        let entry = b.manifest.artifacts[0]
        let recorded = try b.tensor("logits.\(entry.id)")
        struct Fixed: ArtifactRunner {
            let logits: [Float]; let shape: [Int]
            func run(_ input: [Float], shape: [Int]) throws -> (logits: [Float], shape: [Int]) { (logits, self.shape) }
        }
        XCTAssertTrue(try SelfCheck.run(b, entry, runner: Fixed(logits: try recorded.floats(), shape: recorded.shape)).passed)
        let broken = try SelfCheck.run(b, entry, runner: Fixed(logits: try recorded.floats().map { -$0 }, shape: recorded.shape))
        XCTAssertFalse(broken.passed)
        XCTAssertTrue(broken.checks.contains { $0.name.hasSuffix("reference_mask_iou") && !$0.passed })
    }

    func testAnArtifactThatCouldNotRunWhereItWasExportedSkipsOnlyTheSelfComparison() throws {
        // Core ML exported on Linux: parity not_run and no logits.<id> in the golden file (contract step 2: skip)
        let b = try bundle()
        let e = b.manifest.artifacts[0]
        let recorded = try b.tensor("logits.\(e.id)")
        func entry(_ status: String) -> ArtifactEntry {
            ArtifactEntry(id: e.id, format: e.format, file: e.file, sizeBytes: e.sizeBytes, sha256: e.sha256, precision: e.precision,
                          runtimeKind: e.runtimeKind, runtime: e.runtime, parityStatus: status, tolerances: e.tolerances)
        }
        let stripped = ALiSNetBundle(manifestURL: b.manifestURL, manifest: b.manifest,
                                     golden: b.golden!.filter { $0.key != "logits.\(e.id)" })
        let notRun = try SelfCheck.output(stripped, entry("not_run"), logits: try recorded.floats(), shape: recorded.shape)
        let selfCheck = try XCTUnwrap(notRun.first { $0.name.hasSuffix("self_max_abs") })
        XCTAssertTrue(selfCheck.passed && selfCheck.skipped)
        XCTAssertTrue(notRun.contains { $0.name.hasSuffix("reference_mask_iou") && $0.passed && !$0.skipped })
        // its parity ran, yet the golden file lacks its output: a broken bundle, not a skip
        let missing = try SelfCheck.output(stripped, entry("passed"), logits: try recorded.floats(), shape: recorded.shape)
        XCTAssertTrue(missing.contains { !$0.passed && !$0.skipped && $0.detail.contains("broken bundle") })
    }

    func testAManifestFromAnotherMajorVersionOrLayoutIsRefused() throws {
        let text = try String(contentsOf: try bundle().manifestURL, encoding: .utf8)
        for (from, to, field) in [("\"schema_version\": \"1.0\"", "\"schema_version\": \"2.0\"", "schema_version"),
                                  ("\"layout\": \"NCHW\"", "\"layout\": \"NHWC\"", "layout"),
                                  ("\"foreground_channel\": 1", "\"foreground_channel\": 0", "foreground_channel")] {
            XCTAssertTrue(text.contains(from))
            XCTAssertThrowsError(try Manifest.parse(Data(text.replacingOccurrences(of: from, with: to).utf8), source: "m.json")) { error in
                let message = String(describing: error)
                XCTAssertTrue(message.contains(field) && message.contains("m.json"), message)
            }
        }
    }

    func testAChangedNormalisationFailsTheSelfCheck() throws {
        let b = try bundle()
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.copyItem(at: b.folder, to: tmp)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let manifestURL = tmp.appendingPathComponent(b.manifestURL.lastPathComponent)
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: manifestURL)) as! [String: Any]
        var input = json["input"] as! [String: Any]
        input["normalization"] = ["mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "formula": "x = (v / 255 - mean[c]) / std[c]"]
        json["input"] = input
        try JSONSerialization.data(withJSONObject: json).write(to: manifestURL)
        let report = try SelfCheck.offline(try ALiSNetBundle.open(tmp))
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.checks.filter { !$0.passed }.map { $0.name }, ["preprocessing"])
    }
}
