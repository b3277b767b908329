package com.alisnet.harness.core

/**
 * A small, strict JSON reader and writer (RFC 8259), so the core needs nothing but the Kotlin stdlib
 * (Android's org.json is not on the JVM, and the core must test there).
 *
 * Values map to: JSON object -> Map<String, Any?> (insertion order kept), array -> List<Any?>,
 * string -> String, number -> Double, true/false -> Boolean, null -> null.
 */
class JsonException(message: String) : Exception(message)

object Json {
    fun parse(text: String): Any? {
        val parser = Parser(text)
        parser.skipWhitespace()
        val value = parser.readValue()
        parser.skipWhitespace()
        if (parser.pos != text.length) parser.fail("unexpected trailing characters")
        return value
    }

    /** Serialise maps, lists, strings, numbers, booleans and null; NaN and infinities become null. */
    fun write(value: Any?): String {
        val sb = StringBuilder()
        writeTo(sb, value)
        return sb.toString()
    }

    private fun writeTo(sb: StringBuilder, value: Any?) {
        when (value) {
            null -> sb.append("null")
            is String -> writeString(sb, value)
            is Boolean -> sb.append(if (value) "true" else "false")
            is Int, is Long, is Short, is Byte -> sb.append(value.toString())
            is Number -> {
                val d = value.toDouble()
                if (d.isNaN() || d.isInfinite()) sb.append("null")
                else if (d == Math.rint(d) && Math.abs(d) < 1e15) sb.append(d.toLong().toString())
                else sb.append(d.toString())
            }
            is Map<*, *> -> {
                sb.append('{')
                var first = true
                for ((k, v) in value) {
                    if (!first) sb.append(',')
                    first = false
                    writeString(sb, k.toString())
                    sb.append(':')
                    writeTo(sb, v)
                }
                sb.append('}')
            }
            is Iterable<*> -> {
                sb.append('[')
                var first = true
                for (v in value) {
                    if (!first) sb.append(',')
                    first = false
                    writeTo(sb, v)
                }
                sb.append(']')
            }
            else -> writeString(sb, value.toString())
        }
    }

    private fun writeString(sb: StringBuilder, s: String) {
        sb.append('"')
        for (c in s) {
            when {
                c == '"' -> sb.append("\\\"")
                c == '\\' -> sb.append("\\\\")
                c == '\n' -> sb.append("\\n")
                c == '\r' -> sb.append("\\r")
                c == '\t' -> sb.append("\\t")
                c.toInt() < 0x20 -> sb.append(String.format("\\u%04x", c.toInt()))
                else -> sb.append(c)
            }
        }
        sb.append('"')
    }

    private class Parser(val text: String) {
        var pos = 0

        fun fail(message: String): Nothing = throw JsonException("JSON error at offset $pos: $message")

        fun skipWhitespace() {
            while (pos < text.length) {
                val c = text[pos]
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r') pos++ else return
            }
        }

        fun readValue(): Any? {
            if (pos >= text.length) fail("unexpected end of input")
            return when (val c = text[pos]) {
                '{' -> readObject()
                '[' -> readArray()
                '"' -> readString()
                't' -> readLiteral("true", true)
                'f' -> readLiteral("false", false)
                'n' -> readLiteral("null", null)
                else -> if (c == '-' || (c in '0'..'9')) readNumber() else fail("unexpected character '$c'")
            }
        }

        private fun readLiteral(word: String, value: Any?): Any? {
            if (!text.startsWith(word, pos)) fail("expected $word")
            pos += word.length
            return value
        }

        private fun readObject(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            pos++ // {
            skipWhitespace()
            if (pos < text.length && text[pos] == '}') { pos++; return out }
            while (true) {
                skipWhitespace()
                if (pos >= text.length || text[pos] != '"') fail("expected a string key")
                val key = readString()
                skipWhitespace()
                if (pos >= text.length || text[pos] != ':') fail("expected ':' after key \"$key\"")
                pos++
                skipWhitespace()
                if (out.containsKey(key)) fail("duplicate key \"$key\"")
                out[key] = readValue()
                skipWhitespace()
                if (pos >= text.length) fail("unterminated object")
                when (text[pos]) {
                    ',' -> pos++
                    '}' -> { pos++; return out }
                    else -> fail("expected ',' or '}' in object")
                }
            }
        }

        private fun readArray(): List<Any?> {
            val out = ArrayList<Any?>()
            pos++ // [
            skipWhitespace()
            if (pos < text.length && text[pos] == ']') { pos++; return out }
            while (true) {
                skipWhitespace()
                out.add(readValue())
                skipWhitespace()
                if (pos >= text.length) fail("unterminated array")
                when (text[pos]) {
                    ',' -> pos++
                    ']' -> { pos++; return out }
                    else -> fail("expected ',' or ']' in array")
                }
            }
        }

        private fun readString(): String {
            pos++ // opening quote
            val sb = StringBuilder()
            while (true) {
                if (pos >= text.length) fail("unterminated string")
                val c = text[pos++]
                when {
                    c == '"' -> return sb.toString()
                    c == '\\' -> {
                        if (pos >= text.length) fail("unterminated escape")
                        when (val e = text[pos++]) {
                            '"' -> sb.append('"')
                            '\\' -> sb.append('\\')
                            '/' -> sb.append('/')
                            'b' -> sb.append('\b')
                            'f' -> sb.append('\u000C')
                            'n' -> sb.append('\n')
                            'r' -> sb.append('\r')
                            't' -> sb.append('\t')
                            'u' -> {
                                if (pos + 4 > text.length) fail("short \\u escape")
                                val hex = text.substring(pos, pos + 4)
                                val code = try { Integer.parseInt(hex, 16) } catch (ex: NumberFormatException) { fail("bad \\u escape \"$hex\"") }
                                sb.append(code.toChar())
                                pos += 4
                            }
                            else -> fail("bad escape '\\$e'")
                        }
                    }
                    c.toInt() < 0x20 -> fail("control character in string")
                    else -> sb.append(c)
                }
            }
        }

        private fun readNumber(): Double {
            val start = pos
            if (text[pos] == '-') pos++
            if (pos >= text.length) fail("bad number")
            if (text[pos] == '0') pos++
            else if (text[pos] in '1'..'9') { while (pos < text.length && text[pos] in '0'..'9') pos++ }
            else fail("bad number")
            if (pos < text.length && text[pos] == '.') {
                pos++
                val digits = pos
                while (pos < text.length && text[pos] in '0'..'9') pos++
                if (pos == digits) fail("bad fraction")
            }
            if (pos < text.length && (text[pos] == 'e' || text[pos] == 'E')) {
                pos++
                if (pos < text.length && (text[pos] == '+' || text[pos] == '-')) pos++
                val digits = pos
                while (pos < text.length && text[pos] in '0'..'9') pos++
                if (pos == digits) fail("bad exponent")
            }
            return text.substring(start, pos).toDouble()
        }
    }
}
