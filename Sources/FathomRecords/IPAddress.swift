/// An IPv4 or IPv6 address as a fixed-size value: 128 bits, IPv4 stored as `::ffff:a.b.c.d`.
///
/// Fixed size and trivially hashable so flow keys need no allocation; formatted only when a record
/// is written.
public struct IPAddress: Hashable, Sendable, Comparable {
  /// The high and low 64 bits of the address in network order.
  public var high: UInt64
  public var low: UInt64

  @inlinable public init(high: UInt64, low: UInt64) {
    self.high = high
    self.low = low
  }

  /// An IPv4 address from its 32-bit value in host order (`0x0A000001` is 10.0.0.1).
  @inlinable public init(ipv4 value: UInt32) {
    self.high = 0
    self.low = 0x0000_FFFF_0000_0000 | UInt64(value)
  }

  public static let zero = IPAddress(high: 0, low: 0)

  @inlinable public var isIPv4: Bool { high == 0 && (low >> 32) == 0x0000_FFFF }

  /// The IPv4 value in host order; meaningful only when `isIPv4`.
  @inlinable public var ipv4Value: UInt32 { UInt32(truncatingIfNeeded: low) }

  @inlinable public static func < (a: IPAddress, b: IPAddress) -> Bool {
    a.high != b.high ? a.high < b.high : a.low < b.low
  }

  /// Parses dotted IPv4 or RFC 4291 IPv6 text; nil when the text is not an address.
  public init?(_ text: String) {
    if text.contains(":") {
      guard let parsed = IPAddress.parseIPv6(Array(text.utf8)) else { return nil }
      self = parsed
    } else {
      var value: UInt32 = 0
      var parts = 0
      for part in text.split(separator: ".", omittingEmptySubsequences: false) {
        guard let octet = UInt8(part), parts < 4 else { return nil }
        value = value << 8 | UInt32(octet)
        parts += 1
      }
      guard parts == 4 else { return nil }
      self.init(ipv4: value)
    }
  }

  private static func parseIPv6(_ bytes: [UInt8]) -> IPAddress? {
    // A dotted IPv4 tail ("::ffff:10.0.0.1") stands for the last two groups.
    if let lastColon = bytes.lastIndex(of: UInt8(ascii: ":")), bytes[(lastColon + 1)...].contains(UInt8(ascii: ".")) {
      guard let v4 = IPAddress(String(decoding: bytes[(lastColon + 1)...], as: UTF8.self)), v4.isIPv4 else {
        return nil
      }
      let value = v4.ipv4Value
      let head = Array(bytes[...lastColon])
      let tail = String(value >> 16, radix: 16) + ":" + String(value & 0xFFFF, radix: 16)
      return parseIPv6(head + Array(tail.utf8))
    }
    var groups: [UInt16] = []
    var gapIndex: Int?
    var index = 0
    if bytes.starts(with: [UInt8(ascii: ":"), UInt8(ascii: ":")]) {
      gapIndex = 0
      index = 2
    }
    while index < bytes.count {
      var value: UInt32 = 0
      var digits = 0
      while index < bytes.count, let digit = hexValue(bytes[index]) {
        value = value << 4 | UInt32(digit)
        digits += 1
        index += 1
      }
      guard digits > 0, digits <= 4 else { return nil }
      groups.append(UInt16(value))
      if index == bytes.count { break }
      guard bytes[index] == UInt8(ascii: ":") else { return nil }
      index += 1
      if index < bytes.count, bytes[index] == UInt8(ascii: ":") {
        guard gapIndex == nil else { return nil }
        gapIndex = groups.count
        index += 1
      }
    }
    if let gap = gapIndex {
      guard groups.count < 8 else { return nil }
      groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gap)
    }
    guard groups.count == 8 else { return nil }
    var high: UInt64 = 0
    var low: UInt64 = 0
    for i in 0..<4 { high = high << 16 | UInt64(groups[i]) }
    for i in 4..<8 { low = low << 16 | UInt64(groups[i]) }
    return IPAddress(high: high, low: low)
  }

  private static func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
  }
}

extension IPAddress: CustomStringConvertible {
  public var description: String {
    var buffer = OutputBuffer(capacity: 48)
    buffer.append(self)
    return buffer.string
  }
}

extension OutputBuffer {
  /// Appends dotted IPv4 or compressed IPv6 (RFC 5952) text.
  public mutating func append(_ address: IPAddress) {
    if address.isIPv4 {
      appendIPv4(address.ipv4Value)
    } else {
      appendReserving(39) { $0.address(address) }
    }
  }

  /// Compressed IPv6 text (RFC 5952) at `destination` (room for 39); returns its length.
  static func writeIPv6(_ address: IPAddress, to destination: UnsafeMutablePointer<UInt8>) -> Int {
    var groups = SIMD8<UInt16>()
    for i in 0..<4 {
      groups[i] = UInt16(truncatingIfNeeded: address.high >> (48 - 16 * UInt64(i)))
      groups[i + 4] = UInt16(truncatingIfNeeded: address.low >> (48 - 16 * UInt64(i)))
    }
    // The longest run of two or more zero groups is written as "::".
    var bestStart = -1
    var bestLength = 1
    var runStart = -1
    for i in 0...8 {
      if i < 8, groups[i] == 0 {
        if runStart < 0 { runStart = i }
      } else if runStart >= 0 {
        if i - runStart > bestLength {
          bestStart = runStart
          bestLength = i - runStart
        }
        runStart = -1
      }
    }
    let digits: StaticString = "0123456789abcdef"
    var cursor = destination
    var i = 0
    while i < 8 {
      if i == bestStart {
        cursor[0] = UInt8(ascii: ":")
        cursor += 1
        if i == 0 {
          cursor[0] = UInt8(ascii: ":")
          cursor += 1
        }
        i += bestLength
        continue
      }
      // The group in hex without leading zeros.
      let value = groups[i]
      var started = false
      for shift in stride(from: 12, through: 0, by: -4) {
        let digit = Int((value >> UInt16(shift)) & 0xF)
        if digit != 0 || started || shift == 0 {
          cursor[0] = digits.utf8Start[digit]
          cursor += 1
          started = true
        }
      }
      if i < 7 {
        cursor[0] = UInt8(ascii: ":")
        cursor += 1
      }
      i += 1
    }
    return cursor - destination
  }
}
