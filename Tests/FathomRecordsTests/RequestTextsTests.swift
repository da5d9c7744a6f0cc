import Foundation
import Testing

@testable import FathomRecords

@Suite struct RequestTextsTests {
  private func set(_ texts: inout RequestTexts, _ field: RequestTexts.Field, _ bytes: [UInt8], limit: Int = .max) {
    bytes.withUnsafeBytes { texts.set(field, bytes: $0, limit: limit) }
  }

  @Test func fieldsKeepTheirOwnTextsThroughSetsSharesAndCopies() {
    var texts = RequestTexts()
    #expect(texts.isEmpty(.method) && texts[.domain] == "")
    set(&texts, .method, Array("GET".utf8))
    set(&texts, .resource, Array("/api/items?id=7".utf8))
    texts.share(.endpoint, with: .resource)
    texts[.domain] = "shop.example"
    #expect(texts[.method] == "GET" && texts[.endpoint] == "/api/items?id=7" && texts[.domain] == "shop.example")
    // Set again: the last-set field reuses the tail; a shared one keeps its bytes for the other.
    texts[.domain] = "cart.example.internal"
    set(&texts, .resource, Array("/other".utf8))
    #expect(texts[.domain] == "cart.example.internal")
    #expect(texts[.resource] == "/other" && texts[.endpoint] == "/api/items?id=7")
    texts[.domain] = ""
    #expect(texts.isEmpty(.domain) && texts.count(.method) == 3)
    // Copy on write: a copy changed later does not change the original.
    var copy = texts
    copy[.method] = "POST"
    copy.copy(.method, from: texts, as: .errorMessage)
    #expect(texts[.method] == "GET" && copy[.method] == "POST" && copy[.errorMessage] == "GET")
    #expect(texts.isEmpty(.errorMessage))
  }

  @Test func wireBytesAreCutAtTheLimitAndRepairedToUTF8() {
    var texts = RequestTexts()
    set(&texts, .userAgent, Array("curl/8.0".utf8), limit: 4)
    #expect(texts[.userAgent] == "curl")
    // Invalid UTF-8 and a character cut by the limit both become U+FFFD, as String(decoding:) does.
    set(&texts, .resource, [0x2F, 0xFF, 0x61])
    #expect(texts[.resource] == "/\u{FFFD}a")
    set(&texts, .domain, Array("é".utf8), limit: 1)
    #expect(texts[.domain] == "\u{FFFD}")
    texts.withUTF8(.resource) { #expect(String(validating: $0, as: UTF8.self) != nil) }
  }

  @Test func aRecordsTextsStopAt64KiB() {
    var texts = RequestTexts()
    let long = [UInt8](repeating: UInt8(ascii: "a"), count: 40_000)
    set(&texts, .resource, long)
    set(&texts, .userAgent, long)
    #expect(texts.count(.resource) == 40_000)
    #expect(texts.count(.userAgent) == RequestTexts.maximumBytes - 40_000)
    set(&texts, .traceID, Array("abc".utf8))
    #expect(texts.isEmpty(.traceID))
    // A character that would straddle the end is left out whole, not cut into invalid UTF-8.
    var nearEnd = RequestTexts()
    set(&nearEnd, .resource, [UInt8](repeating: UInt8(ascii: "a"), count: RequestTexts.maximumBytes - 5))
    set(&nearEnd, .userAgent, Array("abcd\u{E9}".utf8))
    #expect(nearEnd[.userAgent] == "abcd")
    nearEnd.withUTF8(.userAgent) { #expect($0.count == 4) }
  }

  @Test func jsonStringsEscapeAtEveryPosition() throws {
    // Escapes before, inside and after the eight-byte words scanned at once.
    for length in 0..<20 {
      for position in 0..<max(length, 1) {
        for special: UInt8 in [0x22, 0x5C, 0x0A, 0x01, 0x1F] {
          var bytes = [UInt8](repeating: UInt8(ascii: "x"), count: length)
          if length > 0 { bytes[position] = special }
          var buffer = OutputBuffer(capacity: 8)
          bytes.withUnsafeBytes { buffer.appendJSONString(bytes: $0) }
          let parsed = try JSONSerialization.jsonObject(with: Data(buffer.bytes), options: .fragmentsAllowed)
          #expect(parsed as? String == String(decoding: bytes, as: UTF8.self))
        }
      }
    }
    var buffer = OutputBuffer(capacity: 8)
    let text = Array("naïve — 東京 \u{7F}".utf8)
    text.withUnsafeBytes { buffer.appendJSONString(bytes: $0) }
    #expect(buffer.string == "\"naïve — 東京 \u{7F}\"")
  }
}
