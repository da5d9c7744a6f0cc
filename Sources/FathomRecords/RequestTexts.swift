/// The variable-length texts of one request record, kept in one byte buffer.
///
/// A record used to hold fourteen Strings: every copy of a record between the parser, the sink
/// and the writer retained and released each of them, about a fifth of `fathom requests`' time.
/// Here a record has one buffer (one allocation, one reference count) and each field is a range
/// in it. Parsers set fields straight from wire bytes; writers read them back as bytes.
///
/// Every field holds valid UTF-8: invalid bytes are repaired when set (as `String(decoding:)`
/// does), so reading one back needs no check. Setting a field appends its bytes (a field set
/// again reuses the buffer's tail when it was the last one set), so the buffer is bounded by what
/// the parsers put in, each field by its own limit, and all of them by `maximumBytes` (ranges are
/// 16-bit; a field that would pass it is cut).
///
/// `@unchecked Sendable`: the buffer is written only while uniquely referenced (copy on write, as
/// Array does), so values handed to another thread never share a mutation.
public struct RequestTexts: @unchecked Sendable {
  /// The text fields of a RequestLog (docs/records.md).
  public enum Field: Int, CaseIterable, Sendable {
    case version, interface, netns, method, domain, resource, endpoint, errorMessage
    case requestID, responseRequestID, traceID, spanID, forwardedFor, userAgent
  }

  static let fieldCount = Field.allCases.count
  /// All texts of one record together, in bytes (ranges are 16-bit).
  public static let maximumBytes = Int(UInt16.max)

  /// Bytes reserved at a buffer's first use: a typical request's texts fit without growing.
  static let initialCapacity = 128

  /// The bytes of every field; the header is the number in use. Nil until a field is set, so a
  /// record without texts allocates nothing. Copy-on-write like an Array, but appends are plain
  /// copies (Array's generic append and growth were a tenth of `fathom requests`).
  private var storage: ManagedBuffer<Extent, UInt8>?
  private var starts = SIMD16<UInt16>()
  private var counts = SIMD16<UInt16>()

  private var used: Int { storage?.header.used ?? 0 }

  /// Bytes in use and allocated (ManagedBuffer's own `capacity` asks malloc every time).
  struct Extent {
    var used: Int
    var capacity: Int
  }

  public init() {}

  @inline(__always) public func isEmpty(_ field: Field) -> Bool { counts[field.rawValue] == 0 }

  @inline(__always) public func count(_ field: Field) -> Int { Int(counts[field.rawValue]) }

  /// Lends a field's UTF-8 bytes to `body`.
  @inline(__always)
  public func withUTF8<Result>(_ field: Field, _ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
    let count = Int(counts[field.rawValue])
    guard count > 0, let storage else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
    let start = Int(starts[field.rawValue])
    return try storage.withUnsafeMutablePointerToElements {
      try body(UnsafeRawBufferPointer(start: $0 + start, count: count))
    }
  }

  /// The fields without a closure, for a caller that holds this value borrowed (its buffer then
  /// stays alive and unchanged) for as long as it uses them: a writer given the record.
  @inline(__always) public var unsafeFields: Fields {
    guard let storage else {
      return Fields(bytes: UnsafeRawBufferPointer(start: nil, count: 0), starts: starts, counts: counts)
    }
    let (bytes, used) = storage.withUnsafeMutablePointers { extent, bytes in (bytes, extent.pointee.used) }
    return Fields(bytes: UnsafeRawBufferPointer(start: bytes, count: used), starts: starts, counts: counts)
  }

  /// All fields of one record as byte views (`unsafeFields`).
  public struct Fields {
    let bytes: UnsafeRawBufferPointer
    let starts: SIMD16<UInt16>
    let counts: SIMD16<UInt16>

    @inline(__always) public func isEmpty(_ field: Field) -> Bool { counts[field.rawValue] == 0 }

    /// Bytes of every field written as a JSON string, at most (each byte escaped as \u00XX, plus
    /// the quotes): fields that share bytes count once each.
    public var jsonBound: Int { 6 * Int(counts.wrappedSum()) + 2 * RequestTexts.fieldCount }

    @inline(__always) public subscript(field: Field) -> UnsafeRawBufferPointer {
      let count = Int(counts[field.rawValue])
      guard count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
      return UnsafeRawBufferPointer(
        rebasing: bytes[Int(starts[field.rawValue])..<(Int(starts[field.rawValue]) + count)])
    }
  }

  /// A field as a String (made on every read; writers use `withUTF8` or `unsafeFields`).
  public subscript(field: Field) -> String {
    get { withUTF8(field) { String(decoding: $0, as: UTF8.self) } }
    set {
      var text = newValue
      text.withUTF8 { setValid(field, UnsafeRawBufferPointer($0)) }
    }
  }

  /// Sets a field from wire bytes, cut at `limit` bytes; invalid UTF-8 is repaired.
  public mutating func set(_ field: Field, bytes: UnsafeRawBufferPointer, limit: Int = .max) {
    let cut = UnsafeRawBufferPointer(start: bytes.baseAddress, count: max(0, min(bytes.count, limit)))
    if Self.isASCII(cut) {
      setValid(field, cut)
    } else {
      self[field] = String(decoding: cut, as: UTF8.self)
    }
  }

  /// Sets a field by letting `body` write at most `capacity` bytes in place and return how many
  /// (nil: the field is left empty). Saves the copy through a buffer of the caller's for texts
  /// that are decoded, not found whole (DNS names). Invalid UTF-8 is repaired as `set` does.
  public mutating func set(
    _ field: Field, writingAtMost capacity: Int, _ body: (UnsafeMutablePointer<UInt8>) -> Int?
  ) {
    if counts[field.rawValue] > 0 { dropIfLast(field) }
    let start = used
    guard start + capacity <= Self.maximumBytes else {
      // Near the 64 KiB end: written aside, then cut like any other field.
      withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { aside in
        let written = body(aside.baseAddress!).map { min($0, capacity) } ?? 0
        set(field, bytes: UnsafeRawBufferPointer(start: aside.baseAddress!, count: written))
      }
      return
    }
    reserve(start + capacity)
    let destination = storage.unsafelyUnwrapped.withUnsafeMutablePointerToElements { $0 + start }
    guard let written = body(destination).map({ min($0, capacity) }), written > 0 else {
      setExtent(field, start: 0, count: 0)
      return
    }
    let bytes = UnsafeRawBufferPointer(start: destination, count: written)
    guard Self.isASCII(bytes) else {
      self[field] = String(decoding: bytes, as: UTF8.self)
      return
    }
    storage.unsafelyUnwrapped.header.used = start + written
    setExtent(field, start: start, count: written)
  }

  /// Sets a field from a literal (a version, a qtype name).
  @inline(__always) public mutating func set(_ field: Field, _ literal: StaticString) {
    setValid(field, UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
  }

  /// Makes `field` the same text as `source`, sharing its bytes (fields are never changed in
  /// place except at the buffer's tail, which a shared range is not once another field follows).
  public mutating func share(_ field: Field, with source: Field) {
    dropIfLast(field)
    setExtent(field, start: Int(starts[source.rawValue]), count: Int(counts[source.rawValue]))
  }

  /// Copies a field of another record's texts into this one.
  public mutating func copy(_ field: Field, from other: RequestTexts, as target: Field? = nil) {
    other.withUTF8(field) { setValid(target ?? field, $0) }
  }

  private func isLastSet(_ field: Field) -> Bool {
    let count = counts[field.rawValue]
    guard count > 0 else { return false }
    guard Int(starts[field.rawValue] &+ count) == used else { return false }
    // Shared by another field: its bytes must stay.
    for other in 0..<Self.fieldCount where other != field.rawValue && counts[other] > 0 {
      if starts[other] &+ counts[other] > starts[field.rawValue] { return false }
    }
    return true
  }

  private mutating func setValid(_ field: Field, _ bytes: UnsafeRawBufferPointer) {
    if counts[field.rawValue] > 0 { dropIfLast(field) }
    let start = used
    // Ranges are 16-bit: a record's texts stop at 64 KiB (fields are bounded far below that by
    // RequestConfig's limits; a field that would pass the end is cut).
    var length = min(bytes.count, Self.maximumBytes - start)
    // Cut before a character, not inside one (a continuation byte starts 0b10).
    if length < bytes.count { while length > 0 && bytes[length] & 0xC0 == 0x80 { length -= 1 } }
    guard let source = bytes.baseAddress, length > 0 else {
      setExtent(field, start: 0, count: 0)
      return
    }
    reserve(start + length)
    storage.unsafelyUnwrapped.withUnsafeMutablePointers { extent, elements in
      UnsafeMutableRawPointer(elements + start).copyMemory(from: source, byteCount: length)
      extent.pointee.used = start + length
    }
    setExtent(field, start: start, count: length)
  }

  /// Stores a field's range in place (assigning a SIMD lane by a run-time index copied both
  /// vectors out and back).
  @inline(__always) private mutating func setExtent(_ field: Field, start: Int, count: Int) {
    let offset = field.rawValue &* 2
    withUnsafeMutableBytes(of: &starts) {
      $0.storeBytes(of: UInt16(truncatingIfNeeded: start), toByteOffset: offset, as: UInt16.self)
    }
    withUnsafeMutableBytes(of: &counts) {
      $0.storeBytes(of: UInt16(truncatingIfNeeded: count), toByteOffset: offset, as: UInt16.self)
    }
  }

  /// A field set again gives back its bytes when nothing follows them.
  @inline(__always) private mutating func dropIfLast(_ field: Field) {
    guard counts[field.rawValue] > 0, isLastSet(field), isKnownUniquelyReferenced(&storage!) else { return }
    storage!.header.used -= count(field)
  }

  /// Makes the storage unique and able to hold `needed` bytes.
  @inline(__always) private mutating func reserve(_ needed: Int) {
    if storage != nil, isKnownUniquelyReferenced(&storage!), storage!.header.capacity >= needed { return }
    let old = storage
    let capacity = max(needed, Self.initialCapacity, (old?.header.capacity ?? 0) * 2)
    let fresh = ManagedBuffer<Extent, UInt8>.create(minimumCapacity: capacity) { _ in
      Extent(used: 0, capacity: capacity)
    }
    if let old {
      let count = old.header.used
      old.withUnsafeMutablePointerToElements { from in
        fresh.withUnsafeMutablePointerToElements { $0.update(from: from, count: count) }
      }
      fresh.header.used = count
    }
    storage = fresh
  }

  /// Gives this record's buffer to `spares` for a later record (when nothing else holds it and
  /// it is of the usual size) and leaves the texts empty.
  public mutating func recycle(into spares: inout Spares) {
    guard storage != nil, spares.buffers.count < Spares.limit, isKnownUniquelyReferenced(&storage!),
      storage!.header.capacity <= Spares.largestKept
    else { return }
    storage!.header.used = 0
    spares.buffers.append(storage.take()!)
    starts = SIMD16()
    counts = SIMD16()
  }

  /// Text buffers of records already handed on, for new records: a buffer reused is one malloc
  /// and one free less per record. At most `limit` buffers, none over `largestKept` bytes.
  public struct Spares {
    fileprivate var buffers: [ManagedBuffer<Extent, UInt8>] = []
    static let limit = 1024
    static let largestKept = 1024

    public init() {}

    /// Empty texts, on a spare buffer when there is one.
    public mutating func take() -> RequestTexts {
      var texts = RequestTexts()
      texts.storage = buffers.popLast()
      return texts
    }
  }

  /// Eight bytes at a time: wire texts are nearly always ASCII.
  @inline(__always) static func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
    var index = 0
    var high: UInt64 = 0
    while index + 8 <= bytes.count {
      high |= bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
      index += 8
    }
    while index < bytes.count {
      high |= UInt64(bytes[index])
      index += 1
    }
    return high & 0x8080_8080_8080_8080 == 0
  }
}
