package com.alisnet.harness.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class GoldenTest {
    private fun sample(): ByteArray = Golden.encode(listOf(
        Golden.floatTensor("x", intArrayOf(2), floatArrayOf(1.5f, -2f)),
        GoldenTensor("m", Golden.UINT8, intArrayOf(2, 2), byteArrayOf(0, 1, 1, 0))
    ))

    @Test
    fun layoutIsTheDocumentedOne() {
        val data = Golden.encode(listOf(Golden.floatTensor("x", intArrayOf(2), floatArrayOf(1.5f, -2f))))
        // magic, version 1, count 1, name length 1, "x", dtype 1, ndim 1, dim 2, 8 payload bytes, 1.5f, -2f
        val expected = byteArrayOf(65, 76, 71, 86, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 120, 1, 1, 2, 0, 0, 0,
            8, 0, 0, 0, 0, 0, 0, 0, 0, 0, -64, 63, 0, 0, 0, -64)
        assertArrayEquals(expected, data)
    }

    @Test
    fun roundTripsNamesShapesAndValues() {
        val back = Golden.decode(sample())
        assertEquals(listOf("x", "m"), back.keys.toList())
        assertArrayEquals(floatArrayOf(1.5f, -2f), back.getValue("x").floats(), 0f)
        assertArrayEquals(intArrayOf(2, 2), back.getValue("m").shape)
        assertArrayEquals(byteArrayOf(0, 1, 1, 0), back.getValue("m").bytes())
    }

    @Test
    fun refusesMalformedFiles() {
        val good = sample()
        val cases = listOf(
            byteArrayOf(88, 88, 88, 88) + good.copyOfRange(4, good.size) to "not a golden-vector file",
            good.copyOfRange(0, good.size - 3) to "truncated",
            good + byteArrayOf(0) to "trailing bytes",
            good.copyOf().also { it[4] = 9 } to "version 9"
        )
        for ((data, message) in cases) {
            try {
                Golden.decode(data, "g.algv")
                fail("accepted a malformed golden file ($message)")
            } catch (ex: GoldenException) {
                val msg = ex.message ?: ""
                assertTrue(msg, msg.contains(message) && msg.contains("g.algv"))
            }
        }
    }

    @Test
    fun refusesTheWrongDtype() {
        try {
            Golden.decode(sample()).getValue("m").floats()
            fail("read uint8 as float32")
        } catch (ex: GoldenException) {
            assertTrue((ex.message ?: "").contains("uint8"))
        }
    }
}
