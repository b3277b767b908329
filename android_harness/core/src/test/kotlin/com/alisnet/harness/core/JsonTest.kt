package com.alisnet.harness.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class JsonTest {
    @Test
    fun parsesNestedValuesNumbersAndEscapes() {
        val v = Json.parse(""" { "a": [1, -2.5e2, 0.125, true, false, null], "s": "x\"\\\/\n\u00e9\u0041", "o": {} } """)
        val m = v as Map<*, *>
        assertEquals(listOf(1.0, -250.0, 0.125, true, false, null), m["a"])
        assertEquals("x\"\\/\n\u00e9A", m["s"])
        assertEquals(emptyMap<String, Any?>(), m["o"])
        assertEquals(listOf("a", "s", "o"), m.keys.toList())
    }

    @Test
    fun refusesMalformedJsonWithTheOffset() {
        for (bad in listOf("{\"a\": 1,}", "[1 2]", "{\"a\": 1} x", "\"open", "01", "{\"a\":1, \"a\":2}", "tru", "1.", "-")) {
            try {
                Json.parse(bad)
                fail("accepted malformed JSON: $bad")
            } catch (ex: JsonException) {
                val msg = ex.message ?: ""
                assertTrue(msg, msg.contains("offset"))
            }
        }
    }

    @Test
    fun writesWhatItReads() {
        val value = linkedMapOf("n" to 3, "f" to 0.5, "s" to "q\"\n", "l" to listOf(true, null), "nan" to Double.NaN)
        val text = Json.write(value)
        assertEquals("{\"n\":3,\"f\":0.5,\"s\":\"q\\\"\\n\",\"l\":[true,null],\"nan\":null}", text)
        val back = Json.parse(text) as Map<*, *>
        assertEquals(3.0, back["n"])
        assertNull(back["nan"])
    }
}
