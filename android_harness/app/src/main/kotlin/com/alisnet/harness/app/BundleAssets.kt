package com.alisnet.harness.app

import android.content.Context
import com.alisnet.harness.core.Bundle
import java.io.File

/**
 * The bundle ships in the APK's assets (assets/bundle/, copied there at build time from
 * -PalisnetBundle). Both runtimes load models from a file path, so it is copied to internal storage
 * once per install (re-copied when the APK changes).
 */
object BundleAssets {
    private const val ASSET_DIR = "bundle"

    fun open(context: Context): Bundle {
        val target = File(context.filesDir, ASSET_DIR)
        val stamp = File(target, ".copied-from-apk")
        val apkTime = context.packageManager.getPackageInfo(context.packageName, 0).lastUpdateTime.toString()
        if (!stamp.isFile || stamp.readText() != apkTime) {
            target.deleteRecursively()
            val copied = copy(context, ASSET_DIR, target)
            check(copied > 0) { "the APK has no assets/$ASSET_DIR: build it with -PalisnetBundle=/path/to/bundle" }
            stamp.writeText(apkTime)
        }
        return Bundle.open(target)
    }

    private fun copy(context: Context, assetPath: String, dest: File): Int {
        val children = context.assets.list(assetPath) ?: emptyArray()
        if (children.isEmpty()) {
            // a file (asset folders always list children)
            dest.parentFile?.mkdirs()
            context.assets.open(assetPath).use { input -> dest.outputStream().use { input.copyTo(it, 1 shl 16) } }
            return 1
        }
        dest.mkdirs()
        var n = 0
        for (child in children) n += copy(context, "$assetPath/$child", File(dest, child))
        return n
    }
}
