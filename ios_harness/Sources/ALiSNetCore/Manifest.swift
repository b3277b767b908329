import Foundation

// The parts of manifest.json (schema 1.0) an app relies on; mirrors android_harness/core Manifest.kt.
// JSON comes from Foundation's JSONSerialization (the Kotlin core carries its own parser instead).

public struct ManifestError: Error, CustomStringConvertible {
    public let description: String
}

public struct Normalization { public let mean: [Float]; public let std: [Float] }
public struct ResizePolicy { public let policy: String; public let height: Int; public let multiple: Int; public let interpolation: String; public let cropMargin: Double }
public struct SizeConstraints { public let multipleOf, minHeight, maxHeight, minWidth, maxWidth: Int; public let minPixels: Int64 }
public struct InputSpec { public let name, layout, dtype, colorOrder: String; public let normalization: Normalization; public let resize: ResizePolicy; public let sizeConstraints: SizeConstraints; public let preprocessingSpecVersion: String }
public struct OutputSpec { public let name: String; public let classes: [String]; public let foregroundChannel: Int; public let maskRule: String; public let maskThreshold: Double }
public struct GoldenTolerances { public let selfMaxAbs: Double; public let referenceMaxAbs: Double?; public let referenceMinMaskIou: Double }
public struct ArtifactEntry { public let id, format, file: String; public let sizeBytes: Int64; public let sha256, precision, runtimeKind: String; public let runtime: [String: Any]; public let parityStatus: String; public let tolerances: GoldenTolerances? }
public struct GoldenRef { public let file, sha256, format, source: String }

public struct Manifest {
    public static let supportedMajor = "1"
    public static let formats: Set<String> = ["ptl", "pte", "onnx", "coreml"]
    public static let runtimeKinds = ["ptl": "pytorch-lite", "pte": "executorch", "onnx": "onnxruntime", "coreml": "coreml"]

    public let schemaVersion: String
    public let variant: String
    public let input: InputSpec
    public let output: OutputSpec
    public let artifacts: [ArtifactEntry]
    public let golden: GoldenRef?

    public func artifact(_ id: String) throws -> ArtifactEntry {
        guard let a = artifacts.first(where: { $0.id == id }) else {
            throw ManifestError(description: "manifest has no artifact \"\(id)\" (it lists \(artifacts.map { $0.id }.joined(separator: ", ")))")
        }
        return a
    }

    public static func read(_ url: URL) throws -> Manifest {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ManifestError(description: "\(url.path): cannot read the manifest (\(error.localizedDescription))")
        }
        return try parse(data, source: url.path)
    }

    public static func parse(_ data: Data, source: String = "manifest") throws -> Manifest {
        let root: Any
        do { root = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            throw ManifestError(description: "\(source): not a JSON manifest: \(error.localizedDescription)")
        }
        return try Reader(source: source).manifest(root)
    }

    private struct Reader {
        let source: String

        func fail(_ path: String, _ message: String) -> ManifestError {
            ManifestError(description: "\(source): \(path) \(message); re-export the bundle with alisnet-export or fix the manifest")
        }
        func obj(_ v: Any?, _ path: String) throws -> [String: Any] {
            guard let o = v as? [String: Any] else { throw fail(path, "must be an object, found \(describe(v))") }
            return o
        }
        func field(_ o: [String: Any], _ key: String, _ path: String) throws -> Any {
            guard let v = o[key] else { throw fail("\(path)/\(key)", "is missing") }
            return v
        }
        func str(_ o: [String: Any], _ key: String, _ path: String) throws -> String {
            let v = try field(o, key, path)
            guard let s = v as? String else { throw fail("\(path)/\(key)", "must be a string, found \(describe(v))") }
            return s
        }
        @discardableResult
        func const(_ o: [String: Any], _ key: String, _ path: String, _ expected: String) throws -> String {
            let v = try str(o, key, path)
            guard v == expected else { throw fail("\(path)/\(key)", "must be \"\(expected)\" (this harness implements only that), found \"\(v)\"") }
            return v
        }
        func num(_ o: [String: Any], _ key: String, _ path: String) throws -> Double {
            let v = try field(o, key, path)
            guard let n = v as? NSNumber, CFGetTypeID(n) != CFBooleanGetTypeID() else { throw fail("\(path)/\(key)", "must be a number, found \(describe(v))") }
            return n.doubleValue
        }
        func int(_ o: [String: Any], _ key: String, _ path: String) throws -> Int64 {
            let d = try num(o, key, path)
            guard d == d.rounded(), abs(d) < 9.0e15 else { throw fail("\(path)/\(key)", "must be an integer, found \(d)") }
            return Int64(d)
        }
        func rgb(_ o: [String: Any], _ key: String, _ path: String, positive: Bool) throws -> [Float] {
            let v = try field(o, key, path)
            guard let list = v as? [NSNumber], list.count == 3 else { throw fail("\(path)/\(key)", "must be 3 numbers (R, G, B), found \(describe(v))") }
            let out = list.map { Float($0.doubleValue) }
            if positive && out.contains(where: { $0 <= 0 }) { throw fail("\(path)/\(key)", "must be > 0, found \(out)") }
            return out
        }

        func manifest(_ root: Any) throws -> Manifest {
            let m = try obj(root, "(root)")
            let version = try str(m, "schema_version", "")
            guard version.split(separator: ".").first.map(String.init) == Manifest.supportedMajor else {
                throw fail("/schema_version", "is \"\(version)\"; this harness reads schema \(Manifest.supportedMajor).x: update the app's harness core")
            }
            let model = try obj(try field(m, "model", ""), "/model")
            let input = try self.input(try obj(try field(m, "input", ""), "/input"))
            let output = try self.output(try obj(try field(m, "output", ""), "/output"))
            guard let arts = m["artifacts"] as? [Any], !arts.isEmpty else { throw fail("/artifacts", "must be a non-empty list, found \(describe(m["artifacts"]))") }
            let artifacts = try arts.enumerated().map { try artifact(try obj($0.element, "/artifacts/\($0.offset)"), "/artifacts/\($0.offset)") }
            var golden: GoldenRef? = nil
            if let g = m["golden"], !(g is NSNull) {
                let o = try obj(g, "/golden")
                golden = GoldenRef(file: try str(o, "file", "/golden"), sha256: try str(o, "sha256", "/golden"),
                                   format: try const(o, "format", "/golden", "ALGV1"), source: try str(o, "source", "/golden"))
            }
            return Manifest(schemaVersion: version, variant: try str(model, "variant", "/model"), input: input, output: output,
                            artifacts: artifacts, golden: golden)
        }

        func input(_ o: [String: Any]) throws -> InputSpec {
            let p = "/input"
            let norm = try obj(try field(o, "normalization", p), "\(p)/normalization")
            let resize = try obj(try field(o, "resize", p), "\(p)/resize")
            let size = try obj(try field(o, "size_constraints", p), "\(p)/size_constraints")
            let spec = try str(o, "preprocessing_spec_version", p)
            guard spec.split(separator: ".").first == preprocessingSpecVersion.split(separator: ".").first else {
                throw fail("\(p)/preprocessing_spec_version", "is \"\(spec)\"; this harness implements preprocessing spec \(preprocessingSpecVersion)")
            }
            try const(norm, "formula", "\(p)/normalization", "x = (v / 255 - mean[c]) / std[c]")
            let height = try int(resize, "height", "\(p)/resize")
            let multiple = try int(resize, "multiple", "\(p)/resize")
            guard multiple == 32 else { throw fail("\(p)/resize/multiple", "must be 32, found \(multiple)") }
            guard height >= 32, height % multiple == 0 else { throw fail("\(p)/resize/height", "must be a multiple of \(multiple), found \(height)") }
            let sp = "\(p)/size_constraints"
            return InputSpec(
                name: try str(o, "name", p), layout: try const(o, "layout", p, "NCHW"), dtype: try const(o, "dtype", p, "float32"),
                colorOrder: try const(o, "color_order", p, "RGB"),
                normalization: Normalization(mean: try rgb(norm, "mean", "\(p)/normalization", positive: false),
                                             std: try rgb(norm, "std", "\(p)/normalization", positive: true)),
                resize: ResizePolicy(policy: try const(resize, "policy", "\(p)/resize", "fixed_height_keep_aspect_round_width"),
                                     height: Int(height), multiple: Int(multiple),
                                     interpolation: try const(resize, "interpolation", "\(p)/resize", "bilinear_half_pixel_no_antialias"),
                                     cropMargin: try num(resize, "crop_margin", "\(p)/resize")),
                sizeConstraints: SizeConstraints(multipleOf: Int(try int(size, "multiple_of", sp)),
                                                 minHeight: Int(try int(size, "min_height", sp)), maxHeight: Int(try int(size, "max_height", sp)),
                                                 minWidth: Int(try int(size, "min_width", sp)), maxWidth: Int(try int(size, "max_width", sp)),
                                                 minPixels: try int(size, "min_pixels", sp)),
                preprocessingSpecVersion: spec)
        }

        func output(_ o: [String: Any]) throws -> OutputSpec {
            let p = "/output"
            try const(o, "dtype", p, "float32")
            try const(o, "meaning", p, "logits")
            guard let classes = o["classes"] as? [String], classes.count >= 2 else { throw fail("\(p)/classes", "must list at least 2 class names, found \(describe(o["classes"]))") }
            let fg = try int(o, "foreground_channel", p)
            guard fg >= 1, fg < classes.count else { throw fail("\(p)/foreground_channel", "must index a non-background class (1..\(classes.count - 1)), found \(fg)") }
            let threshold = try num(o, "mask_threshold", p)
            guard threshold == 0.5 else { throw fail("\(p)/mask_threshold", "must be 0.5 (the rule logits[fg] > logits[0]), found \(threshold)") }
            return OutputSpec(name: try str(o, "name", p), classes: classes, foregroundChannel: Int(fg),
                              maskRule: try const(o, "mask_rule", p, "logits[foreground_channel] > logits[0]"), maskThreshold: threshold)
        }

        func artifact(_ o: [String: Any], _ p: String) throws -> ArtifactEntry {
            let format = try str(o, "format", p)
            guard Manifest.formats.contains(format) else { throw fail("\(p)/format", "must be one of \(Manifest.formats.sorted()), found \"\(format)\"") }
            let runtime = try obj(try field(o, "runtime", p), "\(p)/runtime")
            let kind = try str(runtime, "kind", "\(p)/runtime")
            guard kind == Manifest.runtimeKinds[format] else { throw fail("\(p)/runtime/kind", "must be \"\(Manifest.runtimeKinds[format]!)\" for format \(format), found \"\(kind)\"") }
            let parity = try obj(try field(o, "parity", p), "\(p)/parity")
            var tol: GoldenTolerances? = nil
            if let t = o["golden_tolerances"], !(t is NSNull) {
                let to = try obj(t, "\(p)/golden_tolerances")
                var ref: Double? = nil
                if let r = to["reference_max_abs"], !(r is NSNull) {
                    guard let n = r as? NSNumber else { throw fail("\(p)/golden_tolerances/reference_max_abs", "must be a number or null, found \(describe(r))") }
                    ref = n.doubleValue
                }
                tol = GoldenTolerances(selfMaxAbs: try num(to, "self_max_abs", "\(p)/golden_tolerances"), referenceMaxAbs: ref,
                                       referenceMinMaskIou: try num(to, "reference_min_mask_iou", "\(p)/golden_tolerances"))
            }
            let sha = try str(o, "sha256", p)
            guard sha.count == 64, sha.allSatisfy({ "0123456789abcdef".contains($0) }) else { throw fail("\(p)/sha256", "must be 64 lowercase hex digits, found \"\(sha)\"") }
            return ArtifactEntry(id: try str(o, "id", p), format: format, file: try str(o, "file", p), sizeBytes: try int(o, "size_bytes", p),
                                 sha256: sha, precision: try str(o, "precision", p), runtimeKind: kind, runtime: runtime,
                                 parityStatus: try str(parity, "status", "\(p)/parity"), tolerances: tol)
        }

        func describe(_ v: Any?) -> String {
            switch v {
            case nil, is NSNull: return "null"
            case let s as String: return "\"\(s)\""
            case is [String: Any]: return "an object"
            case let l as [Any]: return "a list of \(l.count)"
            default: return String(describing: v!)
            }
        }
    }
}
