package com.alisnet.harness.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * Golden vectors, layout "ALGV" version 1 (docs/bundle-contract.md section 4), little-endian:
 * magic "ALGV", u32 version, u32 count, then per tensor: u16 name length, UTF-8 name, u8 dtype
 * (0 uint8, 1 float32, 2 int32, 3 int64), u8 ndim, ndim x u32 dims, u64 payload bytes, payload.
 */
class GoldenException(message: String) : Exception(message)

class GoldenTensor(val name: String, val dtype: Int, val shape: IntArray, val payload: ByteArray) {
    val count: Int get() = shape.fold(1) { a, b -> a * b }

    fun floats(): FloatArray {
        if (dtype != Golden.FLOAT32) throw GoldenException("golden tensor \"$name\" is ${Golden.dtypeName(dtype)}, not float32")
        val out = FloatArray(count)
        ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out)
        return out
    }

    fun bytes(): ByteArray {
        if (dtype != Golden.UINT8) throw GoldenException("golden tensor \"$name\" is ${Golden.dtypeName(dtype)}, not uint8")
        return payload
    }
}

object Golden {
    const val UINT8 = 0
    const val FLOAT32 = 1
    const val INT32 = 2
    const val INT64 = 3
    const val FORMAT_VERSION = 1
    private val ITEM_SIZE = intArrayOf(1, 4, 4, 8)

    fun dtypeName(code: Int): String = when (code) {
        UINT8 -> "uint8"; FLOAT32 -> "float32"; INT32 -> "int32"; INT64 -> "int64"; else -> "dtype $code"
    }

    fun read(file: File): Map<String, GoldenTensor> {
        val data = try { file.readBytes() } catch (ex: java.io.IOException) {
            throw GoldenException("$file: cannot read golden vectors (${ex.message})")
        }
        return decode(data, file.path)
    }

    fun decode(data: ByteArray, source: String = "<bytes>"): Map<String, GoldenTensor> {
        val buf = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN)
        fun need(n: Long, what: String) {
            if (buf.position() + n > data.size) {
                throw GoldenException("$source: golden file truncated while reading $what (offset ${buf.position()}, size ${data.size})")
            }
        }
        need(12, "the header")
        val magic = String(data, 0, 4, Charsets.ISO_8859_1)
        if (magic != "ALGV") throw GoldenException("$source: not a golden-vector file (magic \"$magic\", expected \"ALGV\")")
        buf.position(4)
        val version = buf.int.toLong() and 0xffffffffL
        val count = buf.int.toLong() and 0xffffffffL
        if (version != FORMAT_VERSION.toLong()) {
            throw GoldenException("$source: golden format version $version; this harness reads version $FORMAT_VERSION")
        }
        val out = LinkedHashMap<String, GoldenTensor>()
        for (i in 0 until count) {
            need(2, "tensor $i name length")
            val nameLen = buf.short.toInt() and 0xffff
            need(nameLen + 2L, "tensor $i name")
            val nameBytes = ByteArray(nameLen)
            buf.get(nameBytes)
            val name = String(nameBytes, Charsets.UTF_8)
            val code = buf.get().toInt() and 0xff
            val ndim = buf.get().toInt() and 0xff
            if (code !in 0..3) throw GoldenException("$source: tensor \"$name\" has unknown dtype code $code")
            need(4L * ndim + 8, "tensor \"$name\" shape")
            var elements = 1L
            val shape = IntArray(ndim) {
                val d = buf.int.toLong() and 0xffffffffL
                if (d > Int.MAX_VALUE) throw GoldenException("$source: tensor \"$name\" dimension $d is too large")
                elements *= d
                d.toInt()
            }
            val nbytes = buf.long
            val expected = elements * ITEM_SIZE[code]
            if (nbytes != expected) {
                throw GoldenException("$source: tensor \"$name\" declares $nbytes bytes but shape ${shape.toList()} needs $expected")
            }
            if (expected > Int.MAX_VALUE) throw GoldenException("$source: tensor \"$name\" is too large ($expected bytes)")
            need(nbytes, "tensor \"$name\" payload")
            val payload = ByteArray(nbytes.toInt())
            buf.get(payload)
            out[name] = GoldenTensor(name, code, shape, payload)
        }
        if (buf.position() != data.size) {
            throw GoldenException("$source: ${data.size - buf.position()} unexpected trailing bytes after $count tensors")
        }
        return out
    }

    /** The ALGV v1 encoding of float32/uint8 tensors (used by tests and by apps that record new vectors). */
    fun encode(tensors: List<GoldenTensor>): ByteArray {
        var size = 12
        for (t in tensors) size += 2 + t.name.toByteArray(Charsets.UTF_8).size + 2 + 4 * t.shape.size + 8 + t.payload.size
        val buf = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN)
        buf.put("ALGV".toByteArray(Charsets.ISO_8859_1)).putInt(FORMAT_VERSION).putInt(tensors.size)
        for (t in tensors) {
            val name = t.name.toByteArray(Charsets.UTF_8)
            buf.putShort(name.size.toShort()).put(name).put(t.dtype.toByte()).put(t.shape.size.toByte())
            for (d in t.shape) buf.putInt(d)
            buf.putLong(t.payload.size.toLong()).put(t.payload)
        }
        return buf.array()
    }

    fun floatTensor(name: String, shape: IntArray, values: FloatArray): GoldenTensor {
        val buf = ByteBuffer.allocate(4 * values.size).order(ByteOrder.LITTLE_ENDIAN)
        buf.asFloatBuffer().put(values)
        return GoldenTensor(name, FLOAT32, shape, buf.array())
    }
}
