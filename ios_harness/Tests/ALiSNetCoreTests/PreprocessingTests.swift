import XCTest
@testable import ALiSNetCore

// Mirrors android_harness/core/src/test/.../PreprocessingTest.kt.
final class PreprocessingTests: XCTestCase {
    func testTargetSizeKeepsTheHeightAndRoundsTheWidthHalfToEven() throws {
        XCTAssertEqual(try targetSize(400, 300, 1024), [1024, 768])
        XCTAssertEqual(try targetSize(400, 300, 256), [256, 192])
        XCTAssertEqual(try targetSize(64, 80, 64), [64, 64])     // 2.5 -> 2 (Python round)
        XCTAssertEqual(try targetSize(64, 112, 64), [64, 128])   // 3.5 -> 4
        XCTAssertEqual(try targetSize(1000, 10, 64), [64, 32])   // never below one multiple
        XCTAssertThrowsError(try targetSize(100, 100, 100))
    }

    func testResizeToTheSameSizeIsExactAndAConstantImageStaysConstant() throws {
        let px = (0..<(5 * 7 * 3)).map { UInt8($0 * 37 % 256) }
        let same = resizeRgb(try RgbImage(height: 5, width: 7, pixels: px), outH: 5, outW: 7)
        for i in 0..<35 { XCTAssertEqual(same[i], Float(px[3 * i])) }
        let flat = try RgbImage(height: 9, width: 13, pixels: [UInt8](repeating: 200, count: 9 * 13 * 3))
        for v in resizeRgb(flat, outH: 32, outW: 64) { XCTAssertEqual(v, 200, accuracy: 1e-4) }
    }

    func testNormalisationFollowsTheFormula() {
        let out = normalize([0, 255, 127.5], plane: 1, Normalization(mean: [0.5, 0.25, 0], std: [0.5, 0.25, 2]))
        for (a, b) in zip(out, [Float(-1), 3, 0.25]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    func testMaskRuleAndIou() throws {
        XCTAssertEqual(try logitsToMask([0, 1, 2, 1, 1, 1], classes: 2, height: 1, width: 3), [1, 0, 0])
        XCTAssertEqual(try maskIou([1, 1, 0], [1, 0, 0]), 0.5, accuracy: 1e-12)
        XCTAssertEqual(try maskIou([0, 0], [0, 0]), 1.0)
        XCTAssertEqual(personBox([0, 1, 1, 0, 0, 1], height: 2, width: 3), [1, 0, 3, 2])
        XCTAssertNil(personBox([0, 0, 0, 0], height: 2, width: 2))
    }

    func testCropBoxGrowsByTheMarginAndClips() {
        XCTAssertEqual(cropBox([10, 20, 30, 40], imageHeight: 100, imageWidth: 100, margin: 0.05), [9, 19, 31, 41])
        XCTAssertEqual(cropBox([0, 0, 50, 60], imageHeight: 60, imageWidth: 50, margin: 0.1), [0, 0, 50, 60])
    }

    func testSizeConstraintsAreChecked() {
        let c = SizeConstraints(multipleOf: 32, minHeight: 64, maxHeight: 1024, minWidth: 64, maxWidth: 1024, minPixels: 8192)
        XCTAssertEqual(checkInputSize(128, 96, c), [])
        XCTAssertEqual(checkInputSize(100, 2048, c).count, 2)
        XCTAssertEqual(checkInputSize(64, 64, c).count, 1)
    }

    func testLatencyMedianAndPercentile() {
        let s = LatencyStats.of([5, 1, 3, 2, 4, 10, 6, 7, 8, 9])
        XCTAssertEqual(s.medianMs, 5.5); XCTAssertEqual(s.p90Ms, 9); XCTAssertEqual(s.minMs, 1)
        var calls = 0
        XCTAssertEqual(LatencyStats.measure(runs: 4, warmup: 2) { calls += 1 }.runs, 4)
        XCTAssertEqual(calls, 6)
    }
}
