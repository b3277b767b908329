import Foundation

// Golden vectors, layout "ALGV" version 1 (docs/bundle-contract.md section 4); mirrors Golden.kt.

public struct GoldenError: Error, CustomStringConvertible { public let description: String }

public struct GoldenTensor {
    public let name: String
    public let dtype: Int
    public let shape: [Int]
    public let payload: Data
    public var count: Int { shape.reduce(1, *) }

    public func floats() throws -> [Float] {
        guard dtype == Golden.float32 else { throw GoldenError(description: "golden tensor \"\(name)\" is \(Golden.dtypeName(dtype)), not float32") }
        var out = [Float](repeating: 0, count: count)
        payload.withUnsafeBytes { raw in
            for i in 0..<count { out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        }
        return out
    }

    public func bytes() throws -> [UInt8] {
        guard dtype == Golden.uint8 else { throw GoldenError(description: "golden tensor \"\(name)\" is \(Golden.dtypeName(dtype)), not uint8") }
        return [UInt8](payload)
    }

    public init(name: String, dtype: Int, shape: [Int], payload: Data) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.payload = payload
    }
}

public enum Golden {
    public static let uint8 = 0, float32 = 1, int32 = 2, int64 = 3
    public static let formatVersion: UInt32 = 1
    static let itemSize = [1, 4, 4, 8]

    public static func dtypeName(_ code: Int) -> String {
        ["uint8", "float32", "int32", "int64"].indices.contains(code) ? ["uint8", "float32", "int32", "int64"][code] : "dtype \(code)"
    }

    public static func read(_ url: URL) throws -> [String: GoldenTensor] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw GoldenError(description: "\(url.path): cannot read golden vectors (\(error.localizedDescription))")
        }
        return try decode(data, source: url.path).tensors
    }

    /// Tensors by name, and their order in the file.
    public static func decode(_ data: Data, source: String = "<bytes>") throws -> (tensors: [String: GoldenTensor], order: [String]) {
        let bytes = [UInt8](data)
        var pos = 0
        func need(_ n: Int, _ what: String) throws {
            if pos + n > bytes.count { throw GoldenError(description: "\(source): golden file truncated while reading \(what) (offset \(pos), size \(bytes.count))") }
        }
        func u16() -> Int { defer { pos += 2 }; return Int(bytes[pos]) | Int(bytes[pos + 1]) << 8 }
        func u32() -> UInt32 { defer { pos += 4 }; return (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[pos + $1]) << (8 * UInt32($1)) } }
        func u64() -> UInt64 { defer { pos += 8 }; return (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[pos + $1]) << (8 * UInt64($1)) } }

        try need(12, "the header")
        let magic = String(decoding: bytes[0..<4], as: UTF8.self)
        guard magic == "ALGV" else { throw GoldenError(description: "\(source): not a golden-vector file (magic \"\(magic)\", expected \"ALGV\")") }
        pos = 4
        let version = u32()
        let count = u32()
        guard version == formatVersion else { throw GoldenError(description: "\(source): golden format version \(version); this harness reads version \(formatVersion)") }
        var out: [String: GoldenTensor] = [:]
        var order: [String] = []
        for i in 0..<Int(count) {
            try need(2, "tensor \(i) name length")
            let nameLen = u16()
            try need(nameLen + 2, "tensor \(i) name")
            let name = String(decoding: bytes[pos..<(pos + nameLen)], as: UTF8.self)
            pos += nameLen
            let code = Int(bytes[pos]); let ndim = Int(bytes[pos + 1]); pos += 2
            guard (0...3).contains(code) else { throw GoldenError(description: "\(source): tensor \"\(name)\" has unknown dtype code \(code)") }
            try need(4 * ndim + 8, "tensor \"\(name)\" shape")
            let shape = (0..<ndim).map { _ in Int(u32()) }
            let nbytes = u64()
            let expected = UInt64(shape.reduce(1, *) * itemSize[code])
            guard nbytes == expected else { throw GoldenError(description: "\(source): tensor \"\(name)\" declares \(nbytes) bytes but shape \(shape) needs \(expected)") }
            try need(Int(nbytes), "tensor \"\(name)\" payload")
            out[name] = GoldenTensor(name: name, dtype: code, shape: shape, payload: Data(bytes[pos..<(pos + Int(nbytes))]))
            order.append(name)
            pos += Int(nbytes)
        }
        guard pos == bytes.count else { throw GoldenError(description: "\(source): \(bytes.count - pos) unexpected trailing bytes after \(count) tensors") }
        return (out, order)
    }

    public static func encode(_ tensors: [GoldenTensor]) -> Data {
        var d = Data("ALGV".utf8)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        put(formatVersion); put(UInt32(tensors.count))
        for t in tensors {
            let name = Data(t.name.utf8)
            put(UInt16(name.count)); d.append(name); put(UInt8(t.dtype)); put(UInt8(t.shape.count))
            for dim in t.shape { put(UInt32(dim)) }
            put(UInt64(t.payload.count)); d.append(t.payload)
        }
        return d
    }

    public static func floatTensor(_ name: String, shape: [Int], values: [Float]) -> GoldenTensor {
        var d = Data(capacity: 4 * values.count)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { d.append(contentsOf: $0) } }
        return GoldenTensor(name: name, dtype: float32, shape: shape, payload: d)
    }
}
