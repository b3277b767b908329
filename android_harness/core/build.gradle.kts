// The pure-Kotlin harness core: no Android dependency, so it builds and tests on any JVM.
// The same sources also compile with Debian's kotlinc 1.3.31 (tests/test_harness_kotlin.py does so).
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    // ReferenceTest needs a bundle and Python references:
    //   gradle :core:test -PalisnetBundle=/path/to/bundle -PalisnetReference=/path/to/reference.algv
    // without them those tests are skipped (JUnit assumptions), the rest run.
    providers.gradleProperty("alisnetBundle").orNull?.let { systemProperty("alisnet.bundle", it) }
    providers.gradleProperty("alisnetReference").orNull?.let { systemProperty("alisnet.reference", it) }
    testLogging { events("passed", "skipped", "failed"); showStandardStreams = true }
}
