import FathomRecords
import Testing

@testable import FathomProtocols

/// Names are decoded a run of labels at a time (copied with their length bytes, which become the
/// dots): runs split by pointers, the 255-byte bound, loops, and bytes that are not UTF-8.
@Suite struct DNSNameTests {
  private static let header = [UInt8](repeating: 0, count: 12)

  private static func labels(_ sizes: [Int], byte: UInt8 = UInt8(ascii: "a")) -> [UInt8] {
    sizes.flatMap { [UInt8($0)] + [UInt8](repeating: byte, count: $0) }
  }

  @Test func runsOfLabelsJoinAcrossPointers() throws {
    // 12: "shop.example"; 26: "www" then a pointer to 12; 32: a pointer straight to 26.
    var message = Self.header + [4] + Array("shop".utf8) + [7] + Array("example".utf8) + [0]
    message += [3] + Array("www".utf8) + [0xC0, 12] + [0xC0, 26]
    try message.withUnsafeBytes { bytes in
      #expect(DNSMessage.name(bytes, at: 12).map { [$0.0, String($0.1)] } == ["shop.example", "26"])
      let www = try #require(DNSMessage.name(bytes, at: 26))
      #expect(www.0 == "www.shop.example" && www.1 == 32)
      let pointer = try #require(DNSMessage.name(bytes, at: 32))
      #expect(pointer.0 == "www.shop.example" && pointer.1 == 34)
      #expect(DNSMessage.name(bytes, at: 25).map(\.0) == "")  // the root
    }
  }

  @Test func namesStopAt255BytesAndAtLoopsAndTruncation() {
    // Four labels of 63 bytes and their three dots: 255, the most a name may be.
    let longest = Self.header + Self.labels([63, 63, 63, 63]) + [0]
    longest.withUnsafeBytes { #expect(DNSMessage.name($0, at: 12)?.0.utf8.count == 255) }
    // One byte more, in one run or split by a pointer.
    let tooLong = Self.header + Self.labels([63, 63, 63, 62, 1]) + [0]
    tooLong.withUnsafeBytes { #expect(DNSMessage.name($0, at: 12) == nil) }
    let split = Self.header + Self.labels([63, 63]) + [0] + Self.labels([63, 62, 1]) + [0xC0, 12]
    split.withUnsafeBytes { #expect(DNSMessage.name($0, at: 141) == nil) }
    // A pointer to itself, a label past the end, a reserved label type (0x40).
    for bad in [Self.header + [0xC0, 12], Self.header + [5, 97, 97], Self.header + [0x41, 97]] {
      bad.withUnsafeBytes { #expect(DNSMessage.name($0, at: 12) == nil) }
    }
    // A run of labels much longer than any name ends at the bound, not at the message's end.
    let endless = Self.header + Self.labels([Int](repeating: 63, count: 1000))
    endless.withUnsafeBytes { #expect(DNSMessage.name($0, at: 12) == nil) }
  }

  @Test func questionNamesGoStraightIntoTheRecordsTexts() throws {
    // A query for "caf\u{E9}" in Latin-1 (not UTF-8): repaired as any wire text is.
    var query = [0, 7, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0] + [4] + Array("caf".utf8) + [0xE9]
    query += [3] + Array("com".utf8) + [0, 0, 1, 0, 1]
    let message = try #require(query.withUnsafeBytes { DNSMessage($0) })
    #expect(message.texts[.domain] == "caf\u{FFFD}.com" && message.texts[.method] == "A")
    // Next to a record's 64 KiB end the name is written aside and cut like any other field
    // (before the repaired character, which would not fit whole).
    var texts = RequestTexts()
    texts[.userAgent] = String(repeating: "u", count: RequestTexts.maximumBytes - 5)
    let message2 = try #require(query.withUnsafeBytes { DNSMessage($0, into: texts) })
    #expect(message2.texts[.domain] == "caf")
  }
}
