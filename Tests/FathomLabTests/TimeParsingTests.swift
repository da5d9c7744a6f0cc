import Foundation
import Testing

@testable import FathomLab

/// The formatter-free RFC 3339 parser agrees with Foundation's, and declines other shapes.
@Suite struct TimeParsingTests {
  @Test(arguments: [
    "2026-11-27T04:00:09.759983Z", "2026-11-27T04:00:09Z", "1970-01-01T00:00:00Z", "2000-02-29T23:59:59.5Z",
    "2038-01-19T03:14:08.000001Z", "1999-12-31T23:59:59.999Z",
  ])
  func agreesWithFoundation(_ text: String) throws {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions =
      text.contains(".") ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
    let expected = try #require(formatter.date(from: text)).timeIntervalSince1970
    let parsed = try #require(parseUTCTime(text))
    // Foundation rounds fractions to milliseconds on some platforms.
    #expect(abs(parsed - expected) < 0.001)
    #expect(parseTime(text).map { abs($0 - parsed) < 1e-9 } == true)
  }

  @Test func otherShapesFallBackOrFail() {
    #expect(parseUTCTime("2026-11-27T04:00:09+01:00") == nil)
    #expect(parseUTCTime("2026-13-27T04:00:09Z") == nil)
    #expect(parseUTCTime("2026-11-27 04:00:09Z") == nil)
    #expect(parseUTCTime("2026-11-27T04:00:09Zx") == nil)
    #expect(
      parseTime("2026-11-27T05:00:09+01:00").map { abs($0 - parseUTCTime("2026-11-27T04:00:09Z")!) < 1e-6 } == true)
    #expect(parseTime("1795751676.5") == 1795751676.5)
  }
}
