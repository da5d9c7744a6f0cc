#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A growable byte buffer for writing records by hand: one allocation reused for the life of the
/// writer, appends are bounds-checked copies, no Foundation.
///
/// `JSONEncoder` costs ~3 µs per record (PERFORMANCE.md); appending into this buffer well under
/// 1 µs. Non-copyable, so two writers can never share (or double-free) the storage.
public struct OutputBuffer: ~Copyable, @unchecked Sendable {
  private var base: UnsafeMutablePointer<UInt8>
  private var capacity: Int
  public private(set) var count = 0
  private var largeNumbers = LargeNumberText()

  public init(capacity: Int = 1 << 16) {
    self.capacity = max(capacity, 64)
    base = .allocate(capacity: self.capacity)
  }

  deinit { base.deallocate() }

  /// A copy of the bytes written so far.
  public var bytes: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }
  public var string: String { String(decoding: UnsafeBufferPointer(start: base, count: count), as: UTF8.self) }

  public mutating func removeAll() { count = 0 }

  /// The bytes written so far, valid until the next append.
  public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
    try body(UnsafeRawBufferPointer(start: base, count: count))
  }

  @inline(__always) private mutating func reserve(_ extra: Int) {
    if count + extra > capacity { grow(count + extra) }
  }

  private mutating func grow(_ needed: Int) {
    var newCapacity = capacity * 2
    while newCapacity < needed { newCapacity *= 2 }
    let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
    newBase.update(from: base, count: count)
    base.deallocate()
    base = newBase
    capacity = newCapacity
  }

  public mutating func append(byte: UInt8) {
    reserve(1)
    base[count] = byte
    count += 1
  }

  /// An integer's bytes, little-endian (binary formats: ClickHouse's Native blocks). One
  /// overload per width: a generic one ran unspecialised from other modules.
  public mutating func appendLittleEndian(_ value: UInt64) {
    reserve(8)
    UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt64.self)
    count += 8
  }

  public mutating func appendLittleEndian(_ value: UInt32) {
    reserve(4)
    UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt32.self)
    count += 4
  }

  public mutating func appendLittleEndian(_ value: UInt16) {
    reserve(2)
    UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt16.self)
    count += 2
  }

  public mutating func append(bytes source: UnsafeRawBufferPointer) {
    guard let start = source.baseAddress, source.count > 0 else { return }
    reserve(source.count)
    UnsafeMutableRawPointer(base + count).copyMemory(from: start, byteCount: source.count)
    count += source.count
  }

  /// Inlined so that a literal's length is a constant where it is called: the copy becomes a
  /// few moves instead of a call to memmove (JSON keys are most of a record's appends).
  @inline(__always)
  public mutating func append(_ text: StaticString) {
    if text.hasPointerRepresentation {
      let length = text.utf8CodeUnitCount
      reserve(length)
      UnsafeMutableRawPointer(base + count).copyMemory(from: text.utf8Start, byteCount: length)
      count += length
    } else {
      text.withUTF8Buffer { append(bytes: UnsafeRawBufferPointer($0)) }
    }
  }

  /// Makes room for `room` more bytes and lends `body` a writer over it, which appends without a
  /// capacity check per value: for a record writer that bounds all it writes (literals, numbers,
  /// addresses and JSON strings) once. The bound is checked after `body`, a broken one stops the
  /// program rather than write on.
  @inline(__always)
  mutating func appendReserving(_ room: Int, _ body: (inout ReservedWriter) -> Void) {
    reserve(room)
    let start = base + count
    var writer = ReservedWriter(cursor: start, largeNumbers: largeNumbers)
    body(&writer)
    let written = writer.cursor - start
    precondition(written <= room, "a record passed the room reserved for it")
    count += written
    largeNumbers = writer.largeNumbers
  }

  /// Appends a run-time string. (Literals go to the `StaticString` overload, which copies no
  /// String; this one has a label so a literal never lands here by overload resolution.)
  public mutating func append(string text: String) {
    var text = text
    text.withUTF8 { append(bytes: UnsafeRawBufferPointer($0)) }
  }

  public mutating func append(_ value: UInt64) {
    reserve(20)
    count += largeNumbers.writeDecimal(value, to: base + count)
  }

  /// Writes `value`'s decimal digits at `destination` (room for 20) and returns how many.
  @inline(__always)
  static func writeDecimal(_ value: UInt64, to destination: UnsafeMutablePointer<UInt8>) -> Int {
    if value < 10 {
      destination[0] = UInt8(truncatingIfNeeded: value) &+ 48
      return 1
    }
    // Two digits per division, from a table, written backwards from the number's end.
    let digits = decimalDigits(value)
    var cursor = destination + digits
    var rest = value
    while rest >= 100 {
      let (quotient, pair) = rest.quotientAndRemainder(dividingBy: 100)
      cursor -= 2
      let table = Self.digitPairs.utf8Start + Int(pair) * 2
      cursor[0] = table[0]
      cursor[1] = table[1]
      rest = quotient
    }
    if rest >= 10 {
      cursor -= 2
      let table = Self.digitPairs.utf8Start + Int(rest) * 2
      cursor[0] = table[0]
      cursor[1] = table[1]
    } else {
      cursor -= 1
      cursor[0] = UInt8(truncatingIfNeeded: rest) &+ 48
    }
    return digits
  }

  static let digitPairs: StaticString =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

  /// Digits of a value ≥ 1: floor(log10) from the bit length (× log10 2 ≈ 1233 / 4096), corrected
  /// by one comparison, instead of a loop over the powers of ten.
  @inline(__always) private static func decimalDigits(_ value: UInt64) -> Int {
    let bits = 64 - (value | 1).leadingZeroBitCount
    let guess = (bits &* 1233) >> 12
    return guess + (value >= powersOfTen[guess] ? 1 : 0)
  }

  /// A literal, so the compiler initialises it statically (computed, it cost a lazy-initialisation
  /// check — a call — per number written).
  private static let powersOfTen: [UInt64] = [
    1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000, 10_000_000_000,
    100_000_000_000, 1_000_000_000_000, 10_000_000_000_000, 100_000_000_000_000, 1_000_000_000_000_000,
    10_000_000_000_000_000, 100_000_000_000_000_000, 1_000_000_000_000_000_000, 10_000_000_000_000_000_000,
  ]

  /// An IPv4 address in dotted decimal: room made once, each octet without the general formatter.
  mutating func appendIPv4(_ value: UInt32) {
    reserve(15)
    count += Self.writeIPv4(value, to: base + count)
  }

  /// Dotted decimal at `destination` (room for 15); returns its length.
  @inline(__always)
  static func writeIPv4(_ value: UInt32, to destination: UnsafeMutablePointer<UInt8>) -> Int {
    var cursor = Self.writeOctet(value >> 24, at: destination)
    cursor[0] = UInt8(ascii: ".")
    cursor = Self.writeOctet((value >> 16) & 0xFF, at: cursor + 1)
    cursor[0] = UInt8(ascii: ".")
    cursor = Self.writeOctet((value >> 8) & 0xFF, at: cursor + 1)
    cursor[0] = UInt8(ascii: ".")
    cursor = Self.writeOctet(value & 0xFF, at: cursor + 1)
    return cursor - destination
  }

  /// 0–255 at `cursor`; returns the position after it.
  @inline(__always)
  private static func writeOctet(_ value: UInt32, at cursor: UnsafeMutablePointer<UInt8>) -> UnsafeMutablePointer<UInt8>
  {
    let table = digitPairs.utf8Start
    if value >= 100 {
      let (hundreds, pair) = value.quotientAndRemainder(dividingBy: 100)
      cursor[0] = UInt8(truncatingIfNeeded: hundreds) &+ 48
      cursor[1] = table[Int(pair) * 2]
      cursor[2] = table[Int(pair) * 2 + 1]
      return cursor + 3
    }
    if value >= 10 {
      cursor[0] = table[Int(value) * 2]
      cursor[1] = table[Int(value) * 2 + 1]
      return cursor + 2
    }
    cursor[0] = UInt8(truncatingIfNeeded: value) &+ 48
    return cursor + 1
  }

  public mutating func append(_ value: Int64) {
    if value < 0 {
      append(byte: UInt8(ascii: "-"))
      append(UInt64(value.magnitude))
    } else {
      append(UInt64(value))
    }
  }

  public mutating func append(_ value: Int) { append(Int64(value)) }

  /// Appends `text` as a JSON string literal, escaping quotes, backslashes and control bytes.
  public mutating func appendJSONString(_ text: String) {
    var copy = text
    copy.withUTF8 { appendJSONString(bytes: UnsafeRawBufferPointer($0)) }
  }

  /// Appends valid UTF-8 bytes as a JSON string literal.
  public mutating func appendJSONString(bytes utf8: UnsafeRawBufferPointer) {
    reserve(Self.jsonStringBound(utf8.count))
    count += Self.writeJSONString(utf8, to: base + count)
  }

  /// Room a JSON string of `length` bytes may take: each byte escaped as \u00XX, and the quotes.
  static func jsonStringBound(_ length: Int) -> Int { 6 * length + 2 }

  /// Writes valid UTF-8 bytes as a JSON string literal at `destination` (room for
  /// `jsonStringBound`) and returns its length. Plain bytes (nearly all) are checked and copied
  /// in one pass, eight at a time; the rest of a string from its first byte that needs escaping
  /// takes the general path.
  static func writeJSONString(_ utf8: UnsafeRawBufferPointer, to destination: UnsafeMutablePointer<UInt8>) -> Int {
    destination[0] = UInt8(ascii: "\"")
    guard let source = utf8.baseAddress, utf8.count > 0 else {
      destination[1] = UInt8(ascii: "\"")
      return 2
    }
    let length = utf8.count
    let target = UnsafeMutableRawPointer(destination + 1)
    var index = 0
    // A word has a byte below 0x20, a quote or a backslash when one of these zero-byte tests
    // fires.
    while index + 8 <= length {
      let word = source.loadUnaligned(fromByteOffset: index, as: UInt64.self)
      if needsEscaping(word) { break }
      target.storeBytes(of: word, toByteOffset: index, as: UInt64.self)
      index += 8
    }
    // The last few bytes as one word that overlaps the ones already checked, when the words
    // ran out without an escape; else byte by byte.
    if index < length, length >= 8, index + 8 > length {
      let word = source.loadUnaligned(fromByteOffset: length - 8, as: UInt64.self)
      if !needsEscaping(word) {
        target.storeBytes(of: word, toByteOffset: length - 8, as: UInt64.self)
        index = length
      }
    }
    while index < length {
      let byte = source.load(fromByteOffset: index, as: UInt8.self)
      if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { break }
      target.storeBytes(of: byte, toByteOffset: index, as: UInt8.self)
      index += 1
    }
    var cursor = destination + 1 + index
    if index < length {
      cursor = writeEscapingRest(UnsafeRawBufferPointer(rebasing: utf8[index...]), to: cursor)
    }
    cursor[0] = UInt8(ascii: "\"")
    return cursor + 1 - destination
  }

  @inline(__always) private static func needsEscaping(_ word: UInt64) -> Bool {
    let ones: UInt64 = 0x0101_0101_0101_0101
    let highs: UInt64 = 0x8080_8080_8080_8080
    let control = (word &- ones &* 0x20) & ~word & highs
    let quote = ((word ^ (ones &* 0x22)) &- ones) & ~(word ^ (ones &* 0x22)) & highs
    let backslash = ((word ^ (ones &* 0x5C)) &- ones) & ~(word ^ (ones &* 0x5C)) & highs
    return control | quote | backslash != 0
  }

  /// The rest of a JSON string from a byte that needs escaping (without the closing quote);
  /// returns the position after it.
  private static func writeEscapingRest(
    _ utf8: UnsafeRawBufferPointer, to destination: UnsafeMutablePointer<UInt8>
  ) -> UnsafeMutablePointer<UInt8> {
    let hex: StaticString = "0123456789abcdef"
    var cursor = destination
    for byte in utf8 {
      switch byte {
      case UInt8(ascii: "\""), UInt8(ascii: "\\"):
        cursor[0] = UInt8(ascii: "\\")
        cursor[1] = byte
        cursor += 2
      case 0x0A, 0x0D, 0x09:
        cursor[0] = UInt8(ascii: "\\")
        cursor[1] = byte == 0x0A ? UInt8(ascii: "n") : byte == 0x0D ? UInt8(ascii: "r") : UInt8(ascii: "t")
        cursor += 2
      case 0..<0x20:
        cursor[0] = UInt8(ascii: "\\")
        cursor[1] = UInt8(ascii: "u")
        cursor[2] = UInt8(ascii: "0")
        cursor[3] = UInt8(ascii: "0")
        cursor[4] = hex.utf8Start[Int(byte >> 4)]
        cursor[5] = hex.utf8Start[Int(byte & 0xF)]
        cursor += 6
      default:
        cursor[0] = byte
        cursor += 1
      }
    }
    return cursor
  }

  /// Left-aligned text keeps one space free so columns never run together.
  /// Truncation is by byte, so a cut never splits more than the one multi-byte character at the
  /// edge of the column.
  public mutating func appendPadded(_ text: String, width: Int, alignRight: Bool = false) {
    var text = text
    text.withUTF8 { utf8 in
      let shown = min(utf8.count, alignRight ? width : max(0, width - 1))
      let padding = width - shown
      if alignRight { appendSpaces(padding) }
      append(bytes: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[0..<shown]))
      if !alignRight { appendSpaces(padding) }
    }
  }

  /// Appends "ip:port" ("[ip]:port" for IPv6) and an optional marker, padded to a left-aligned
  /// column of `width`, without building a String. Never cut: a shortened address would name
  /// another host, so a long one overflows the column, followed by one space.
  public mutating func appendPaddedEndpoint(
    _ address: IPAddress, _ port: UInt16, marker: StaticString = "", width: Int
  ) {
    let start = count
    if !address.isIPv4 { append(byte: UInt8(ascii: "[")) }
    append(address)
    if !address.isIPv4 { append(byte: UInt8(ascii: "]")) }
    append(byte: UInt8(ascii: ":"))
    append(UInt64(port))
    append(marker)
    appendSpaces(max(1, width - (count - start)))
  }

  private mutating func appendSpaces(_ count: Int) {
    guard count > 0 else { return }
    reserve(count)
    (base + self.count).initialize(repeating: 32, count: count)
    self.count += count
  }

  /// Writes everything to a file descriptor and empties the buffer; false on a write error.
  @discardableResult
  public mutating func flush(to fd: Int32) -> Bool {
    var offset = 0
    while offset < count {
      let written = write(fd, base + offset, count - offset)
      if written < 0 {
        if errno == EINTR { continue }
        count = 0
        return false
      }
      offset += written
    }
    count = 0
    return true
  }
}
