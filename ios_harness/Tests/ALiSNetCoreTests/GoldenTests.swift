import XCTest
@testable import ALiSNetCore

// Mirrors android_harness/core/src/test/.../GoldenTest.kt.
final class GoldenTests: XCTestCase {
    private func sample() -> Data {
        Golden.encode([Golden.floatTensor("x", shape: [2], values: [1.5, -2]),
                       GoldenTensor(name: "m", dtype: Golden.uint8, shape: [2, 2], payload: Data([0, 1, 1, 0]))])
    }

    func testLayoutIsTheDocumentedOne() {
        let data = Golden.encode([Golden.floatTensor("x", shape: [2], values: [1.5, -2])])
        let expected: [UInt8] = [65, 76, 71, 86, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 120, 1, 1, 2, 0, 0, 0,
                                 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 192, 63, 0, 0, 0, 192]
        XCTAssertEqual([UInt8](data), expected)
    }

    func testRoundTripsNamesShapesAndValues() throws {
        let back = try Golden.decode(sample())
        XCTAssertEqual(back.order, ["x", "m"])
        XCTAssertEqual(try back.tensors["x"]!.floats(), [1.5, -2])
        XCTAssertEqual(back.tensors["m"]!.shape, [2, 2])
        XCTAssertEqual(try back.tensors["m"]!.bytes(), [0, 1, 1, 0])
    }

    func testRefusesMalformedFiles() {
        let good = sample()
        var badVersion = good; badVersion[4] = 9
        let cases: [(Data, String)] = [
            (Data("XXXX".utf8) + good.dropFirst(4), "not a golden-vector file"),
            (good.dropLast(3), "truncated"),
            (good + Data([0]), "trailing bytes"),
            (badVersion, "version 9"),
        ]
        for (data, message) in cases {
            XCTAssertThrowsError(try Golden.decode(Data(data), source: "g.algv")) { error in
                let text = String(describing: error)
                XCTAssertTrue(text.contains(message) && text.contains("g.algv"), text)
            }
        }
    }

    func testRefusesTheWrongDtype() throws {
        XCTAssertThrowsError(try Golden.decode(sample()).tensors["m"]!.floats()) { XCTAssertTrue(String(describing: $0).contains("uint8")) }
    }
}
