package com.alisnet.harness.core

import org.junit.runner.JUnitCore
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener
import kotlin.system.exitProcess

/**
 * Runs the core's JUnit classes and prints one summary line (`SUMMARY {json}`), counting assumption
 * failures (skips) separately, so a driver can refuse a run where the reference tests were skipped.
 */
fun main(args: Array<String>) {
    val classes = listOf(JsonTest::class.java, GoldenTest::class.java, PreprocessingTest::class.java, ReferenceTest::class.java)
    val core = JUnitCore()
    val skipped = ArrayList<String>()
    core.addListener(object : RunListener() {
        override fun testAssumptionFailure(failure: Failure) {
            skipped.add("${failure.description.displayName}: ${failure.message}")
        }
        override fun testFailure(failure: Failure) {
            System.err.println("FAILED ${failure.description.displayName}: ${failure.message}")
            System.err.println(failure.trace)
        }
    })
    val result = core.run(*classes.toTypedArray())
    val summary = linkedMapOf<String, Any?>(
        "run" to result.runCount, "failed" to result.failureCount, "ignored" to result.ignoreCount,
        "skipped" to skipped.size, "skipped_tests" to skipped,
        "failures" to result.failures.map { "${it.description.displayName}: ${it.message}" }
    )
    println("SUMMARY " + Json.write(summary))
    exitProcess(if (result.wasSuccessful()) 0 else 1)
}
