package com.alisnet.harness.app

import com.alisnet.harness.core.ArtifactEntry
import com.alisnet.harness.core.ArtifactRunner
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File

/** The "pte" flavor: ExecuTorch (org.pytorch:executorch-android, XNNPACK and portable/optimized kernels linked). */
object Runtimes {
    val FORMATS = setOf("pte")
    const val DESCRIPTION = "ExecuTorch (executorch-android ${BuildConfigVersions.EXECUTORCH})"

    /** Delegates the executorch-android AAR links; a .pte needing another one cannot load here. */
    private val LINKED_DELEGATES = setOf("XnnpackBackend")

    fun compatibility(entry: ArtifactEntry): String? {
        val delegates = (entry.runtime["delegates"] as? List<*>)?.map { it.toString() } ?: emptyList()
        val missing = delegates.filter { it !in LINKED_DELEGATES }
        return if (missing.isEmpty()) null
        else "${entry.file} needs delegate(s) $missing; executorch-android links only $LINKED_DELEGATES: use a custom AAR build"
    }

    fun open(entry: ArtifactEntry, file: File): ArtifactRunner = ExecuTorchRunner(Module.load(file.absolutePath))

    private class ExecuTorchRunner(private val module: Module) : ArtifactRunner {
        override fun run(input: FloatArray, shape: IntArray, outputShape: IntArray): FloatArray {
            val x = Tensor.fromBlob(input, LongArray(shape.size) { shape[it].toLong() })
            val out = module.forward(EValue.from(x))[0].toTensor()
            val s = out.shape()
            for (i in s.indices) outputShape[i] = s[i].toInt()
            return out.dataAsFloatArray
        }

        override fun close() = module.destroy()
    }
}

internal object BuildConfigVersions {
    const val EXECUTORCH = "1.5.1"
}
