@file:JvmName("SelfCheckCli")
package com.alisnet.harness.core

import java.io.File
import kotlin.system.exitProcess

/**
 * `java -cp alisnet-harness-core.jar:kotlin-stdlib.jar com.alisnet.harness.core.SelfCheckCli BUNDLE`
 *
 * The offline self-check on the JVM (no mobile runtime): artifact and golden integrity, preprocessing
 * (step 1) and each artifact's recorded golden outputs against its tolerances. Prints one JSON report
 * on stdout; exit 0 when every check passes, 1 when one fails, 3 when the bundle cannot be read.
 */
fun main(args: Array<String>) {
    if (args.size != 1 || args[0].startsWith("-")) {
        System.err.println("usage: SelfCheckCli BUNDLE_FOLDER_OR_MANIFEST")
        exitProcess(2)
    }
    val bundle = try {
        Bundle.open(File(args[0]))
    } catch (ex: Exception) {
        if (ex !is ManifestException && ex !is GoldenException && ex !is JsonException) throw ex
        System.err.println("error: ${ex.message}")
        exitProcess(3)
    }
    val report = SelfCheck.offline(bundle)
    println(report.toJson())
    for (c in report.checks) System.err.println("${if (c.passed) "PASS" else "FAIL"} ${c.name}: ${c.detail}" + (c.value?.let { " (value $it, limit ${c.limit})" } ?: ""))
    System.err.println(if (report.passed) "self-check passed" else "SELF-CHECK FAILED")
    exitProcess(if (report.passed) 0 else 1)
}
