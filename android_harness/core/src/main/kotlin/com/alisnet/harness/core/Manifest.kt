package com.alisnet.harness.core

import java.io.File

/**
 * The parts of manifest.json (schema 1.0, docs/bundle-contract.md section 3) an app relies on.
 * The Python tool validates the full JSON Schema before writing; this reader re-checks every field
 * it uses and refuses what it does not understand (other major versions, other layouts or specs)
 * rather than guess.
 */
class ManifestException(message: String) : Exception(message)

class Normalization(val mean: FloatArray, val std: FloatArray)

class ResizePolicy(val policy: String, val height: Int, val multiple: Int, val interpolation: String, val cropMargin: Double)

class SizeConstraints(
    val multipleOf: Int, val minHeight: Int, val maxHeight: Int,
    val minWidth: Int, val maxWidth: Int, val minPixels: Long
)

class InputSpec(
    val name: String, val layout: String, val dtype: String, val colorOrder: String,
    val normalization: Normalization, val resize: ResizePolicy, val sizeConstraints: SizeConstraints,
    val preprocessingSpecVersion: String
)

class OutputSpec(
    val name: String, val classes: List<String>, val foregroundChannel: Int,
    val maskRule: String, val maskThreshold: Double
)

class GoldenTolerances(val selfMaxAbs: Double, val referenceMaxAbs: Double?, val referenceMinMaskIou: Double)

class ArtifactEntry(
    val id: String, val format: String, val file: String, val sizeBytes: Long, val sha256: String,
    val precision: String, val runtimeKind: String, val runtime: Map<String, Any?>,
    val parityStatus: String, val tolerances: GoldenTolerances?
)

class GoldenRef(val file: String, val sha256: String, val format: String, val source: String)

class Manifest(
    val schemaVersion: String, val variant: String, val input: InputSpec, val output: OutputSpec,
    val artifacts: List<ArtifactEntry>, val golden: GoldenRef?, val raw: Map<String, Any?>
) {
    fun artifact(id: String): ArtifactEntry =
        artifacts.firstOrNull { it.id == id }
            ?: throw ManifestException("manifest has no artifact \"$id\" (it lists ${artifacts.joinToString { it.id }})")

    companion object {
        const val SUPPORTED_MAJOR = "1"
        val FORMATS = setOf("ptl", "pte", "onnx", "coreml")
        val RUNTIME_KINDS = mapOf("ptl" to "pytorch-lite", "pte" to "executorch", "onnx" to "onnxruntime", "coreml" to "coreml")

        fun read(file: File): Manifest {
            val text = try { file.readText(Charsets.UTF_8) } catch (ex: java.io.IOException) {
                throw ManifestException("$file: cannot read the manifest (${ex.message})")
            }
            return parse(text, file.path)
        }

        fun parse(text: String, source: String = "manifest"): Manifest {
            val root = try { Json.parse(text) } catch (ex: JsonException) {
                throw ManifestException("$source: not a JSON manifest: ${ex.message}")
            }
            return Reader(source).manifest(root)
        }
    }

    /** Field access with errors that name the file, the field, what was expected and what was found. */
    private class Reader(val source: String) {
        fun fail(path: String, message: String): Nothing =
            throw ManifestException("$source: $path $message; re-export the bundle with alisnet-export or fix the manifest")

        fun obj(v: Any?, path: String): Map<String, Any?> {
            if (v !is Map<*, *>) fail(path, "must be an object, found ${describe(v)}")
            @Suppress("UNCHECKED_CAST")
            return v as Map<String, Any?>
        }

        fun field(o: Map<String, Any?>, key: String, path: String): Any? {
            if (!o.containsKey(key)) fail("$path/$key", "is missing")
            return o[key]
        }

        fun str(o: Map<String, Any?>, key: String, path: String): String {
            val v = field(o, key, path)
            if (v !is String) fail("$path/$key", "must be a string, found ${describe(v)}")
            return v
        }

        fun const(o: Map<String, Any?>, key: String, path: String, expected: String): String {
            val v = str(o, key, path)
            if (v != expected) fail("$path/$key", "must be \"$expected\" (this harness implements only that), found \"$v\"")
            return v
        }

        fun num(o: Map<String, Any?>, key: String, path: String): Double {
            val v = field(o, key, path)
            if (v !is Double) fail("$path/$key", "must be a number, found ${describe(v)}")
            return v
        }

        fun int(o: Map<String, Any?>, key: String, path: String): Long {
            val d = num(o, key, path)
            if (d != Math.rint(d) || Math.abs(d) > 9.0e15) fail("$path/$key", "must be an integer, found $d")
            return d.toLong()
        }

        fun rgb(o: Map<String, Any?>, key: String, path: String, positive: Boolean): FloatArray {
            val v = field(o, key, path)
            if (v !is List<*> || v.size != 3 || v.any { it !is Double }) fail("$path/$key", "must be 3 numbers (R, G, B), found ${describe(v)}")
            val out = FloatArray(3) { (v[it] as Double).toFloat() }
            if (positive && out.any { it <= 0f }) fail("$path/$key", "must be > 0, found ${out.joinToString()}")
            return out
        }

        fun manifest(root: Any?): Manifest {
            val m = obj(root, "(root)")
            val version = str(m, "schema_version", "")
            if (version.substringBefore('.') != SUPPORTED_MAJOR) {
                fail("/schema_version", "is \"$version\"; this harness reads schema $SUPPORTED_MAJOR.x: update the app's harness core")
            }
            val model = obj(field(m, "model", ""), "/model")
            val input = input(obj(field(m, "input", ""), "/input"))
            val output = output(obj(field(m, "output", ""), "/output"))
            val arts = field(m, "artifacts", "")
            if (arts !is List<*> || arts.isEmpty()) fail("/artifacts", "must be a non-empty list, found ${describe(arts)}")
            val artifacts = arts.mapIndexed { i, a -> artifact(obj(a, "/artifacts/$i"), "/artifacts/$i") }
            val golden = m["golden"]?.let { g ->
                val o = obj(g, "/golden")
                GoldenRef(str(o, "file", "/golden"), str(o, "sha256", "/golden"), const(o, "format", "/golden", "ALGV1"),
                    str(o, "source", "/golden"))
            }
            return Manifest(version, str(model, "variant", "/model"), input, output, artifacts, golden, m)
        }

        fun input(o: Map<String, Any?>): InputSpec {
            val p = "/input"
            val norm = obj(field(o, "normalization", p), "$p/normalization")
            val resize = obj(field(o, "resize", p), "$p/resize")
            val size = obj(field(o, "size_constraints", p), "$p/size_constraints")
            val spec = str(o, "preprocessing_spec_version", p)
            if (spec.substringBefore('.') != SPEC_VERSION.substringBefore('.')) {
                fail("$p/preprocessing_spec_version", "is \"$spec\"; this harness implements preprocessing spec $SPEC_VERSION")
            }
            const(norm, "formula", "$p/normalization", "x = (v / 255 - mean[c]) / std[c]")
            val height = int(resize, "height", "$p/resize")
            val multiple = int(resize, "multiple", "$p/resize")
            if (multiple != 32L) fail("$p/resize/multiple", "must be 32, found $multiple")
            if (height < 32 || height % multiple != 0L) fail("$p/resize/height", "must be a multiple of $multiple, found $height")
            return InputSpec(
                str(o, "name", p), const(o, "layout", p, "NCHW"), const(o, "dtype", p, "float32"),
                const(o, "color_order", p, "RGB"),
                Normalization(rgb(norm, "mean", "$p/normalization", false), rgb(norm, "std", "$p/normalization", true)),
                ResizePolicy(
                    const(resize, "policy", "$p/resize", "fixed_height_keep_aspect_round_width"), height.toInt(), multiple.toInt(),
                    const(resize, "interpolation", "$p/resize", "bilinear_half_pixel_no_antialias"),
                    num(resize, "crop_margin", "$p/resize")
                ),
                SizeConstraints(
                    int(size, "multiple_of", "$p/size_constraints").toInt(),
                    int(size, "min_height", "$p/size_constraints").toInt(), int(size, "max_height", "$p/size_constraints").toInt(),
                    int(size, "min_width", "$p/size_constraints").toInt(), int(size, "max_width", "$p/size_constraints").toInt(),
                    int(size, "min_pixels", "$p/size_constraints")
                ),
                spec
            )
        }

        fun output(o: Map<String, Any?>): OutputSpec {
            val p = "/output"
            const(o, "dtype", p, "float32")
            const(o, "meaning", p, "logits")
            val classes = field(o, "classes", p)
            if (classes !is List<*> || classes.size < 2 || classes.any { it !is String }) {
                fail("$p/classes", "must list at least 2 class names, found ${describe(classes)}")
            }
            val fg = int(o, "foreground_channel", p)
            if (fg < 1 || fg >= classes.size) fail("$p/foreground_channel", "must index a non-background class (1..${classes.size - 1}), found $fg")
            val threshold = num(o, "mask_threshold", p)
            if (threshold != 0.5) fail("$p/mask_threshold", "must be 0.5 (the rule logits[fg] > logits[0]), found $threshold")
            return OutputSpec(str(o, "name", p), classes.map { it as String }, fg.toInt(),
                const(o, "mask_rule", p, "logits[foreground_channel] > logits[0]"), threshold)
        }

        fun artifact(o: Map<String, Any?>, p: String): ArtifactEntry {
            val format = str(o, "format", p)
            if (format !in FORMATS) fail("$p/format", "must be one of ${FORMATS.sorted()}, found \"$format\"")
            val runtime = obj(field(o, "runtime", p), "$p/runtime")
            val kind = str(runtime, "kind", "$p/runtime")
            if (kind != RUNTIME_KINDS[format]) fail("$p/runtime/kind", "must be \"${RUNTIME_KINDS[format]}\" for format $format, found \"$kind\"")
            val parity = obj(field(o, "parity", p), "$p/parity")
            val tol = o["golden_tolerances"]?.let { t ->
                val to = obj(t, "$p/golden_tolerances")
                val ref = to["reference_max_abs"]
                if (ref != null && ref !is Double) fail("$p/golden_tolerances/reference_max_abs", "must be a number or null, found ${describe(ref)}")
                GoldenTolerances(num(to, "self_max_abs", "$p/golden_tolerances"), ref as Double?,
                    num(to, "reference_min_mask_iou", "$p/golden_tolerances"))
            }
            val sha = str(o, "sha256", p)
            if (!Regex("^[0-9a-f]{64}$").matches(sha)) fail("$p/sha256", "must be 64 lowercase hex digits, found \"$sha\"")
            return ArtifactEntry(str(o, "id", p), format, str(o, "file", p), int(o, "size_bytes", p), sha,
                str(o, "precision", p), kind, runtime, str(parity, "status", "$p/parity"), tol)
        }

        fun describe(v: Any?): String = when (v) {
            null -> "null"
            is String -> "\"$v\""
            is Map<*, *> -> "an object"
            is List<*> -> "a list of ${v.size}"
            else -> v.toString()
        }
    }
}
