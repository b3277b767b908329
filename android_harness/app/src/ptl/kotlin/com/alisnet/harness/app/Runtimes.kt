package com.alisnet.harness.app

import com.alisnet.harness.core.ArtifactEntry
import com.alisnet.harness.core.ArtifactRunner
import org.pytorch.IValue
import org.pytorch.LiteModuleLoader
import org.pytorch.Module
import org.pytorch.Tensor
import java.io.File

/** The "ptl" flavor: the PyTorch lite interpreter (org.pytorch:pytorch_android_lite). */
object Runtimes {
    val FORMATS = setOf("ptl")
    const val DESCRIPTION = "PyTorch lite interpreter (pytorch_android_lite ${BuildConfigVersions.PYTORCH_LITE})"

    /** The lite runtime 1.13.x reads bytecode versions up to 8. */
    private const val MAX_BYTECODE = 8

    fun compatibility(entry: ArtifactEntry): String? {
        val version = (entry.runtime["bytecode_version"] as? Double)?.toInt()
            ?: return "manifest artifact ${entry.id} has no runtime.bytecode_version"
        return if (version > MAX_BYTECODE) "${entry.file} is bytecode v$version; pytorch_android_lite ${BuildConfigVersions.PYTORCH_LITE} reads up to v$MAX_BYTECODE: re-export with --bytecode-version 8" else null
    }

    fun open(entry: ArtifactEntry, file: File): ArtifactRunner = LiteRunner(LiteModuleLoader.load(file.absolutePath))

    private class LiteRunner(private val module: Module) : ArtifactRunner {
        override fun run(input: FloatArray, shape: IntArray, outputShape: IntArray): FloatArray {
            val x = Tensor.fromBlob(input, LongArray(shape.size) { shape[it].toLong() })
            val out = module.forward(IValue.from(x)).toTensor()
            val s = out.shape()
            for (i in s.indices) outputShape[i] = s[i].toInt()
            return out.dataAsFloatArray
        }

        override fun close() = module.destroy()
    }
}

internal object BuildConfigVersions {
    const val PYTORCH_LITE = "1.13.1"
}
