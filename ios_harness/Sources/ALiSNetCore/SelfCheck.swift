import Foundation

// The on-device self-check of docs/bundle-contract.md section 4; mirrors SelfCheck.kt.

public struct Check {
    public let name: String, passed: Bool, value: Double?, limit: Double?, detail: String
    /// The contract says to skip this step here (e.g. no recorded output to compare with); it does not fail.
    public var skipped: Bool = false
    public func toDict() -> [String: Any] {
        var d: [String: Any] = ["name": name, "passed": passed, "value": value.map { $0 as Any } ?? NSNull(), "limit": limit.map { $0 as Any } ?? NSNull(), "detail": detail]
        if skipped { d["skipped"] = true }
        return d
    }
}

public struct SelfCheckReport {
    public let bundle: String
    public let checks: [Check]
    public var extra: [String: Any] = [:]
    public var passed: Bool { !checks.isEmpty && checks.allSatisfy { $0.passed } }

    public func toDict() -> [String: Any] {
        var d: [String: Any] = ["bundle": bundle, "passed": passed, "checks": checks.map { $0.toDict() }]
        for (k, v) in extra { d[k] = v }
        return d
    }

    public func toJSON() -> String {
        let data = (try? JSONSerialization.data(withJSONObject: toDict(), options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// What the app plugs in per runtime: run the artifact on an NCHW float32 input, return float32 logits and their shape.
public protocol ArtifactRunner {
    func run(_ input: [Float], shape: [Int]) throws -> (logits: [Float], shape: [Int])
}

public enum SelfCheck {
    /// Step 1 tolerance: float rounding only (contract section 4).
    public static let preprocessingMaxAbs = 1e-4

    public static func integrity(_ bundle: ALiSNetBundle) throws -> [Check] {
        var checks: [Check] = []
        for entry in bundle.manifest.artifacts {
            let url = bundle.artifactURL(entry)
            guard FileManager.default.fileExists(atPath: url.path) else {
                checks.append(Check(name: "integrity.\(entry.id)", passed: false, value: nil, limit: nil, detail: "\(url.path) is missing (manifest artifact \"\(entry.id)\")"))
                continue
            }
            let size = try ALiSNetBundle.artifactSize(url), sha = try ALiSNetBundle.artifactSha256(url)
            let ok = size == entry.sizeBytes && sha == entry.sha256
            checks.append(Check(name: "integrity.\(entry.id)", passed: ok, value: Double(size), limit: Double(entry.sizeBytes),
                                detail: ok ? "\(entry.file): size and sha256 match"
                                    : "\(entry.file): \(size) bytes sha256 \(sha), manifest says \(entry.sizeBytes) bytes sha256 \(entry.sha256): a corrupted or replaced file"))
        }
        if let ref = bundle.manifest.golden, let url = bundle.goldenURL() {
            let sha = try ALiSNetBundle.sha256File(url)
            checks.append(Check(name: "integrity.golden", passed: sha == ref.sha256, value: nil, limit: nil,
                                detail: sha == ref.sha256 ? "\(ref.file): sha256 matches" : "\(ref.file): sha256 \(sha), manifest says \(ref.sha256)"))
        }
        return checks
    }

    /// Step 1: preprocess `source_rgb` per the manifest and compare with the golden `input`.
    public static func preprocessing(_ bundle: ALiSNetBundle) throws -> Check {
        let src = try bundle.tensor("source_rgb"), expected = try bundle.tensor("input")
        guard src.shape.count == 3, src.shape[2] == 3, expected.shape.count == 4, expected.shape[1] == 3 else {
            return Check(name: "preprocessing", passed: false, value: nil, limit: preprocessingMaxAbs,
                         detail: "golden shapes source_rgb \(src.shape) / input \(expected.shape) are not (h, w, 3) / (1, 3, H, W)")
        }
        let h = expected.shape[2], w = expected.shape[3]
        let image = try RgbImage(height: src.shape[0], width: src.shape[1], pixels: try src.bytes())
        let got = normalize(resizeRgb(image, outH: h, outW: w), plane: h * w, bundle.manifest.input.normalization)
        let diff = try maxAbsDiff(got, try expected.floats())
        let ok = diff <= preprocessingMaxAbs
        return Check(name: "preprocessing", passed: ok, value: diff, limit: preprocessingMaxAbs,
                     detail: ok ? "source_rgb preprocessed per the manifest matches the golden input (\(h)x\(w))"
                         : "preprocessing per the manifest differs from the golden input by up to \(String(format: "%.4g", diff)): the manifest's normalisation/resize or this app's preprocessing no longer matches what the model was exported with")
    }

    /// Contract step 2 is skipped for an artifact that could not run on the exporting machine (Core ML exported
    /// on Linux: parity not_run, no `logits.<id>`); step 3 still compares with the float reference.
    static func notRecorded(_ name: String, _ entry: ArtifactEntry, limit: Double?) -> Check {
        Check(name: name, passed: true, value: nil, limit: limit,
              detail: "skipped: no logits.\(entry.id) to compare with; the artifact could not run on the exporting machine (parity not_run). Its output is checked against the float reference only",
              skipped: true)
    }

    /// Steps 2-3 for one artifact's output on the golden input.
    public static func output(_ bundle: ALiSNetBundle, _ entry: ArtifactEntry, logits: [Float], shape: [Int]) throws -> [Check] {
        guard let tol = entry.tolerances else {
            return [Check(name: "output.\(entry.id)", passed: false, value: nil, limit: nil, detail: "artifact \"\(entry.id)\" has no golden_tolerances in the manifest; re-export it")]
        }
        let ref = try bundle.tensor("logits.float")
        guard shape == ref.shape else {
            return [Check(name: "output.\(entry.id).shape", passed: false, value: nil, limit: nil, detail: "output shape \(shape) differs from the golden logits \(ref.shape)")]
        }
        var checks: [Check] = []
        if let recorded = bundle.golden?["logits.\(entry.id)"] {
            let d = try maxAbsDiff(logits, try recorded.floats())
            checks.append(Check(name: "output.\(entry.id).self_max_abs", passed: d <= tol.selfMaxAbs, value: d, limit: tol.selfMaxAbs,
                                detail: "max |logits - logits.\(entry.id)| (its output on the exporting machine)"))
        } else if entry.parityStatus == "not_run" {
            checks.append(notRecorded("output.\(entry.id).self_max_abs", entry, limit: tol.selfMaxAbs))
        } else {
            checks.append(Check(name: "output.\(entry.id).self_max_abs", passed: false, value: nil, limit: tol.selfMaxAbs,
                                detail: "golden vectors lack logits.\(entry.id), yet its parity ran (\(entry.parityStatus)): a broken bundle; re-export it"))
        }
        let mask = try logitsToMask(logits, classes: shape[1], height: shape[2], width: shape[3], foreground: bundle.manifest.output.foregroundChannel)
        let iou = try maskIou(mask, try bundle.tensor("mask.float").bytes())
        checks.append(Check(name: "output.\(entry.id).reference_mask_iou", passed: iou >= tol.referenceMinMaskIou, value: iou,
                            limit: tol.referenceMinMaskIou, detail: "IoU of its mask with mask.float (the float model's)"))
        if let refMax = tol.referenceMaxAbs {
            let d = try maxAbsDiff(logits, try ref.floats())
            checks.append(Check(name: "output.\(entry.id).reference_max_abs", passed: d <= refMax, value: d, limit: refMax, detail: "max |logits - logits.float|"))
        }
        return checks
    }

    /// Without a runtime: integrity, step 1, and steps 2-3 on each artifact's recorded `logits.<id>`.
    public static func offline(_ bundle: ALiSNetBundle) throws -> SelfCheckReport {
        var checks = try integrity(bundle)
        guard let golden = bundle.golden else {
            checks.append(Check(name: "golden", passed: false, value: nil, limit: nil, detail: "\(bundle.manifestURL.path): the manifest names no golden vectors; re-export the bundle"))
            return SelfCheckReport(bundle: bundle.manifestURL.path, checks: checks)
        }
        checks.append(try preprocessing(bundle))
        for entry in bundle.manifest.artifacts {
            guard let recorded = golden["logits.\(entry.id)"] else {
                checks.append(entry.parityStatus == "not_run" ? notRecorded("output.\(entry.id)", entry, limit: nil)
                    : Check(name: "output.\(entry.id)", passed: false, value: nil, limit: nil,
                            detail: "golden vectors lack logits.\(entry.id), yet its parity ran (\(entry.parityStatus)): a broken bundle; re-export it"))
                continue
            }
            checks += try output(bundle, entry, logits: try recorded.floats(), shape: recorded.shape).filter { !$0.name.hasSuffix("self_max_abs") }
        }
        return SelfCheckReport(bundle: bundle.manifestURL.path, checks: checks, extra: ["mode": "offline (recorded outputs; no runtime)"])
    }

    /// Steps 1-3 with a real runtime: the app's self-check for one artifact.
    public static func run(_ bundle: ALiSNetBundle, _ entry: ArtifactEntry, runner: ArtifactRunner) throws -> SelfCheckReport {
        var checks = [try preprocessing(bundle)]
        let input = try bundle.tensor("input")
        let out = try runner.run(try input.floats(), shape: input.shape)
        checks += try output(bundle, entry, logits: out.logits, shape: out.shape)
        return SelfCheckReport(bundle: bundle.manifestURL.path, checks: checks, extra: ["artifact": entry.id, "format": entry.format])
    }
}
