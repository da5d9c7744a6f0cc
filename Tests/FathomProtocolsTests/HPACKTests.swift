import Testing

@testable import FathomProtocols

/// RFC 7541 Appendix C examples.
@Suite struct HPACKTests {
  static func bytes(_ hex: String) -> [UInt8] {
    var result: [UInt8] = []
    var digits = Array(hex.filter { !$0.isWhitespace })
    while digits.count >= 2 {
      result.append(UInt8(String(digits[0..<2]), radix: 16)!)
      digits.removeFirst(2)
    }
    return result
  }

  @Test func huffmanStrings() throws {
    for (hex, text) in [
      ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"), ("a8eb 1064 9cbf", "no-cache"),
      ("25a8 49e9 5ba9 7d7f", "custom-key"), ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
    ] {
      let decoded = try Self.bytes(hex).withUnsafeBytes { try HuffmanCode.decode($0) }
      #expect(String(decoding: decoded, as: UTF8.self) == text)
    }
    // Padding longer than 7 bits, or not all ones, is an error.
    #expect(throws: (any Error).self) { try [0xff, 0xff, 0xff, 0xff].withUnsafeBytes { try HuffmanCode.decode($0) } }
  }

  /// C.4: three requests with Huffman coding sharing one dynamic table.
  @Test func requestsWithDynamicTable() throws {
    var decoder = HPACKDecoder()
    let blocks = [
      "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
      "8286 84be 5886 a8eb 1064 9cbf",
      "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]
    var results: [[String]] = []
    for block in blocks {
      var fields: [String] = []
      try Self.bytes(block).withUnsafeBytes { raw in
        try decoder.decode(raw) { name, value in
          fields.append(String(decoding: name, as: UTF8.self) + ": " + String(decoding: value, as: UTF8.self))
        }
      }
      results.append(fields)
    }
    #expect(results[0] == [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com"])
    #expect(results[1].last == "cache-control: no-cache")
    #expect(results[2].last == "custom-key: custom-value")
    #expect(decoder.dynamic.count == 3)
  }

  @Test func malformedBlocksFailCleanly() {
    var decoder = HPACKDecoder()
    for block in ["80", "bf", "7f", "41ff", "3fe1ffffff0f", "4185ff"] {
      #expect(throws: (any Error).self) { try Self.bytes(block).withUnsafeBytes { try decoder.decode($0) { _, _ in } } }
    }
  }
}
