import org.gradle.api.GradleException

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val pytorchLiteVersion: String by project
val executorchVersion: String by project

android {
    namespace = "com.alisnet.harness.app"
    compileSdk = 34

    defaultConfig {
        applicationId = "com.alisnet.harness.app"
        minSdk = 24
        targetSdk = 34
        versionCode = 1
        versionName = "1.0"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    // One runtime per APK, as an app ships it: the PyTorch lite runtime (.ptl) or ExecuTorch (.pte).
    // Keeping them apart also avoids their clashing native fbjni/libc++ copies.
    flavorDimensions += "runtime"
    productFlavors {
        create("ptl") { dimension = "runtime"; applicationIdSuffix = ".ptl" }
        create("pte") { dimension = "runtime"; applicationIdSuffix = ".pte" }
    }

    buildTypes {
        release { isMinifyEnabled = false }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
    androidResources { noCompress += listOf("ptl", "pte", "algv") }
    sourceSets["main"].assets.srcDir(layout.buildDirectory.dir("generated/alisnet/assets"))
}

// The bundle to embed: gradle ... -PalisnetBundle=/path/to/bundle (a folder alisnet-export wrote).
val copyAlisnetBundle = tasks.register<Copy>("copyAlisnetBundle") {
    val bundle = providers.gradleProperty("alisnetBundle").orNull
    doFirst {
        if (bundle == null || !file(bundle).isDirectory) {
            throw GradleException("pass -PalisnetBundle=/path/to/bundle (a folder with manifest.json or NAME.manifest.json); got: $bundle")
        }
    }
    if (bundle != null) from(bundle)
    exclude("tests/**", "*.zip", "*.onnx", "*.mlpackage/**")
    into(layout.buildDirectory.dir("generated/alisnet/assets/bundle"))
}
tasks.named("preBuild") { dependsOn(copyAlisnetBundle) }

dependencies {
    implementation(project(":core"))

    "ptlImplementation"("org.pytorch:pytorch_android_lite:$pytorchLiteVersion")
    "pteImplementation"("org.pytorch:executorch-android:$executorchVersion")

    androidTestImplementation("androidx.test:runner:1.6.2")
    androidTestImplementation("androidx.test:rules:1.6.1")
    androidTestImplementation("androidx.test.ext:junit:1.2.1")
    androidTestImplementation("junit:junit:4.13.2")
}
