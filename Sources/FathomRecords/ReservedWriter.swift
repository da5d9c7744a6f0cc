/// Appends into room an `OutputBuffer` made beforehand (`OutputBuffer.appendReserving(_:_:)`).
///
/// A record writer bounds everything a record can take once; each literal, number, address and
/// string then goes in without a capacity check, and the buffer's count is stored once at the end
/// rather than after every value (through the buffer's own appends, about a third of writing a
/// request's JSON line was those loads, checks and stores).
struct ReservedWriter {
  var cursor: UnsafeMutablePointer<UInt8>
  var largeNumbers: LargeNumberText

  /// Inlined so that the literal's length is a constant: the copy becomes a few moves.
  @inline(__always) mutating func literal(_ text: StaticString) {
    precondition(text.hasPointerRepresentation, "a one-scalar literal")
    let length = text.utf8CodeUnitCount
    UnsafeMutableRawPointer(cursor).copyMemory(from: text.utf8Start, byteCount: length)
    cursor += length
  }

  /// Up to 20 bytes.
  @inline(__always) mutating func decimal(_ value: UInt64) {
    cursor += largeNumbers.writeDecimal(value, to: cursor)
  }

  /// Up to 20 bytes.
  @inline(__always) mutating func decimal(_ value: Int64) {
    if value < 0 {
      cursor[0] = UInt8(ascii: "-")
      cursor += 1
    }
    decimal(value.magnitude)
  }

  /// Up to 39 bytes.
  @inline(__always) mutating func address(_ address: IPAddress) {
    if address.isIPv4 {
      cursor += OutputBuffer.writeIPv4(address.ipv4Value, to: cursor)
    } else {
      cursor += OutputBuffer.writeIPv6(address, to: cursor)
    }
  }

  /// A key (its literal carries the comma, quotes and colon) and a JSON string.
  @inline(__always) mutating func field(_ key: StaticString, _ utf8: UnsafeRawBufferPointer) {
    literal(key)
    jsonString(utf8)
  }

  /// A key and a number, or `null` when there is none.
  @inline(__always) mutating func field(_ key: StaticString, _ value: UInt64?) {
    literal(key)
    if let value { decimal(value) } else { literal("null") }
  }

  /// A key and a signed number, or `null` when there is none.
  @inline(__always) mutating func field(_ key: StaticString, _ value: Int64?) {
    literal(key)
    if let value { decimal(value) } else { literal("null") }
  }

  /// Up to `OutputBuffer.jsonStringBound(utf8.count)` bytes.
  @inline(__always) mutating func jsonString(_ utf8: UnsafeRawBufferPointer) {
    cursor += OutputBuffer.writeJSONString(utf8, to: cursor)
  }
}

/// Decimal text of numbers of thirteen digits or more, keeping the digits above the last eight
/// of the last one written: records come in time order, so consecutive timestamps (16 digits)
/// share them.
struct LargeNumberText {
  /// Smaller numbers take the general formatter; sequence numbers and the like would only evict
  /// the timestamps' digits.
  private static let threshold: UInt64 = 1_000_000_000_000

  private var high: UInt64 = .max

  /// Up to twelve digits, as sixteen bytes.
  private var highText: (UInt64, UInt64) = (0, 0)
  private var highCount = 0

  /// Writes any `value` at `destination` (room for 20) and returns its length: timestamps
  /// (microseconds since 1970: 16 digits) take the cached path; smaller numbers, which would only
  /// evict their digits, the general formatter.
  @inline(__always) mutating func writeDecimal(_ value: UInt64, to destination: UnsafeMutablePointer<UInt8>) -> Int {
    value < Self.threshold ? OutputBuffer.writeDecimal(value, to: destination) : write(value, to: destination)
  }

  /// Writes `value` (≥ `threshold`) at `destination` (room for 20) and returns its length: the
  /// upper digits as text from the last such number when they are the same, then exactly eight
  /// more, whose four pairs are computed independently of each other.
  private mutating func write(_ value: UInt64, to destination: UnsafeMutablePointer<UInt8>) -> Int {
    let (upperDigits, low) = value.quotientAndRemainder(dividingBy: 100_000_000)
    if upperDigits != high {
      // Room for 20 as `writeDecimal` wants.
      var text: (UInt64, UInt64, UInt64) = (0, 0, 0)
      highCount = withUnsafeMutableBytes(of: &text) {
        OutputBuffer.writeDecimal(upperDigits, to: $0.baseAddress!.assumingMemoryBound(to: UInt8.self))
      }
      high = upperDigits
      highText = (text.0, text.1)
    }
    let cursor = UnsafeMutableRawPointer(destination)
    cursor.storeBytes(of: highText.0, as: UInt64.self)
    cursor.storeBytes(of: highText.1, toByteOffset: 8, as: UInt64.self)
    let table = UnsafeRawPointer(OutputBuffer.digitPairs.utf8Start)
    let (upper, lower) = low.quotientAndRemainder(dividingBy: 10_000)
    let pairs = (upper / 100, upper % 100, lower / 100, lower % 100)
    let lowStart = cursor + highCount
    lowStart.storeBytes(of: table.loadUnaligned(fromByteOffset: Int(pairs.0) * 2, as: UInt16.self), as: UInt16.self)
    lowStart.storeBytes(
      of: table.loadUnaligned(fromByteOffset: Int(pairs.1) * 2, as: UInt16.self), toByteOffset: 2, as: UInt16.self)
    lowStart.storeBytes(
      of: table.loadUnaligned(fromByteOffset: Int(pairs.2) * 2, as: UInt16.self), toByteOffset: 4, as: UInt16.self)
    lowStart.storeBytes(
      of: table.loadUnaligned(fromByteOffset: Int(pairs.3) * 2, as: UInt16.self), toByteOffset: 6, as: UInt16.self)
    return highCount + 8
  }
}
