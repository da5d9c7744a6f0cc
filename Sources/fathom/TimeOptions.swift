import ArgumentParser
import FathomLab

/// Durations like `30s`, `5m`, `1h`, `2d` in seconds.
func parseDuration(_ text: String, option: String) throws -> Double {
  let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
  guard let unit = text.last.flatMap({ units[$0] }), let value = Double(text.dropLast()), value >= 0 else {
    throw ValidationError("\(option): a duration like 30s, 5m, 1h")
  }
  return value * unit
}

/// An instant given as RFC 3339 or seconds since the epoch, in µs.
func parseInstant(_ text: String, option: String) throws -> Int64 {
  guard let seconds = parseTime(text) else {
    throw ValidationError("\(option): a time like 2026-11-27T10:00:00Z or seconds since the epoch")
  }
  return Int64(seconds * 1e6)
}
