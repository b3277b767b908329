package com.alisnet.harness.core

import java.io.File
import java.io.FileInputStream
import java.security.MessageDigest

/**
 * A bundle on disk: a folder with `manifest.json` (from `alisnet-export bundle`) or one
 * `NAME.manifest.json` (from a single-format export), its artifacts and its golden vectors.
 */
class Bundle(val manifestFile: File, val manifest: Manifest, val golden: Map<String, GoldenTensor>?) {
    val folder: File get() = manifestFile.absoluteFile.parentFile

    fun artifactFile(entry: ArtifactEntry): File = File(folder, entry.file)

    fun goldenFile(): File? = manifest.golden?.let { File(folder, it.file) }

    fun tensor(name: String): GoldenTensor =
        golden?.get(name) ?: throw GoldenException("${goldenFile() ?: manifestFile}: golden vectors lack \"$name\"")

    companion object {
        /** [path] is a manifest file or a bundle folder. */
        fun open(path: File): Bundle {
            val manifestFile = findManifest(path)
            val manifest = Manifest.read(manifestFile)
            val golden = manifest.golden?.let { Golden.read(File(manifestFile.absoluteFile.parentFile, it.file)) }
            return Bundle(manifestFile, manifest, golden)
        }

        fun findManifest(path: File): File {
            if (path.isFile) return path
            if (!path.isDirectory) throw ManifestException("$path: no such bundle folder or manifest file")
            val main = File(path, "manifest.json")
            if (main.isFile) return main
            val singles = (path.listFiles() ?: emptyArray()).filter { it.isFile && it.name.endsWith(".manifest.json") }.sortedBy { it.name }
            if (singles.size == 1) return singles[0]
            if (singles.isEmpty()) throw ManifestException("$path: no manifest.json or NAME.manifest.json; pass the bundle folder alisnet-export wrote")
            throw ManifestException("$path: several manifests (${singles.joinToString { it.name }}); pass the one to check")
        }

        fun sha256File(file: File): String {
            val digest = MessageDigest.getInstance("SHA-256")
            FileInputStream(file).use { input ->
                val buffer = ByteArray(1 shl 16)
                while (true) {
                    val n = input.read(buffer)
                    if (n < 0) break
                    digest.update(buffer, 0, n)
                }
            }
            return hex(digest.digest())
        }

        /**
         * sha256 of an artifact: of the file, or for a package folder (.mlpackage) of its files' relative
         * paths and hashes in path order (the same as alisnet_export.pipeline.artifact_sha256).
         */
        fun artifactSha256(path: File): String {
            if (!path.isDirectory) return sha256File(path)
            val files = path.walkTopDown().filter { it.isFile }.map { it.relativeTo(path).invariantSeparatorsPath }.toList()
            // Python sorts Path objects part by part, which differs from plain string order ("a/b" < "a.b")
            val sorted = files.sortedWith(Comparator { a, b -> comparePathParts(a.split('/'), b.split('/')) })
            val digest = MessageDigest.getInstance("SHA-256")
            for (rel in sorted) {
                digest.update((rel + "\u0000" + sha256File(File(path, rel)) + "\n").toByteArray(Charsets.UTF_8))
            }
            return hex(digest.digest())
        }

        fun artifactSize(path: File): Long =
            if (path.isDirectory) path.walkTopDown().filter { it.isFile }.map { it.length() }.sum() else path.length()

        private fun comparePathParts(a: List<String>, b: List<String>): Int {
            for (i in 0 until Math.min(a.size, b.size)) {
                val c = a[i].compareTo(b[i])
                if (c != 0) return c
            }
            return a.size - b.size
        }

        private fun hex(bytes: ByteArray): String {
            val sb = StringBuilder(bytes.size * 2)
            for (b in bytes) {
                val v = b.toInt() and 0xff
                sb.append("0123456789abcdef"[v shr 4]).append("0123456789abcdef"[v and 15])
            }
            return sb.toString()
        }
    }
}
