import CryptoKit
import Foundation

/// A bundle on disk (manifest.json or one NAME.manifest.json, its artifacts, its golden vectors); mirrors Bundle.kt.
public struct ALiSNetBundle {
    public let manifestURL: URL
    public let manifest: Manifest
    public let golden: [String: GoldenTensor]?
    public var folder: URL { manifestURL.deletingLastPathComponent() }

    public func artifactURL(_ entry: ArtifactEntry) -> URL { folder.appendingPathComponent(entry.file) }
    public func goldenURL() -> URL? { manifest.golden.map { folder.appendingPathComponent($0.file) } }

    public func tensor(_ name: String) throws -> GoldenTensor {
        guard let t = golden?[name] else { throw GoldenError(description: "\((goldenURL() ?? manifestURL).path): golden vectors lack \"\(name)\"") }
        return t
    }

    /// `url` is a manifest file or a bundle folder.
    public static func open(_ url: URL) throws -> ALiSNetBundle {
        let manifestURL = try findManifest(url)
        let manifest = try Manifest.read(manifestURL)
        let golden = try manifest.golden.map { try Golden.read(manifestURL.deletingLastPathComponent().appendingPathComponent($0.file)) }
        return ALiSNetBundle(manifestURL: manifestURL, manifest: manifest, golden: golden)
    }

    public static func findManifest(_ url: URL) throws -> URL {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw ManifestError(description: "\(url.path): no such bundle folder or manifest file")
        }
        if !isDir.boolValue { return url }
        let main = url.appendingPathComponent("manifest.json")
        if FileManager.default.fileExists(atPath: main.path) { return main }
        let singles = (try FileManager.default.contentsOfDirectory(atPath: url.path)).filter { $0.hasSuffix(".manifest.json") }.sorted()
        if singles.count == 1 { return url.appendingPathComponent(singles[0]) }
        if singles.isEmpty { throw ManifestError(description: "\(url.path): no manifest.json or NAME.manifest.json; pass the bundle folder alisnet-export wrote") }
        throw ManifestError(description: "\(url.path): several manifests (\(singles.joined(separator: ", "))); pass the one to check")
    }

    public static func sha256File(_ url: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk = handle.readData(ofLength: 1 << 16)
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Relative paths of a package folder's files, in Python's Path order (part by part).
    static func packageFiles(_ url: URL) -> [String] {
        let base = url.standardizedFileURL.path
        var files: [String] = []
        if let e = FileManager.default.enumerator(atPath: base) {
            for case let rel as String in e {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: base + "/" + rel, isDirectory: &isDir), !isDir.boolValue { files.append(rel) }
            }
        }
        return files.sorted { a, b in
            let pa = a.split(separator: "/", omittingEmptySubsequences: false), pb = b.split(separator: "/", omittingEmptySubsequences: false)
            for (x, y) in zip(pa, pb) where x != y { return x < y }
            return pa.count < pb.count
        }
    }

    /// sha256 of a file, or of a package folder (.mlpackage), as alisnet_export.pipeline.artifact_sha256.
    public static func artifactSha256(_ url: URL) throws -> String {
        var isDir: ObjCBool = false
        FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir)
        if !isDir.boolValue { return try sha256File(url) }
        var hasher = SHA256()
        for rel in packageFiles(url) {
            hasher.update(data: Data((rel + "\u{0}" + (try sha256File(url.appendingPathComponent(rel))) + "\n").utf8))
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    public static func artifactSize(_ url: URL) throws -> Int64 {
        var isDir: ObjCBool = false
        FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir)
        if !isDir.boolValue { return (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.int64Value ?? 0 }
        return try packageFiles(url).reduce(Int64(0)) {
            $0 + ((try FileManager.default.attributesOfItem(atPath: url.appendingPathComponent($1).path)[.size] as? NSNumber)?.int64Value ?? 0)
        }
    }
}
