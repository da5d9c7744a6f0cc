import FathomKube
import FathomRecords

/// Rows for one ClickHouse insert in ClickHouse's Native format: a column-major block, each
/// column's values contiguous in the column's own binary type, which the server takes without
/// parsing text. 18.16 spent a fifth of an insert's CPU reading TabSeparated (numbers and escaped
/// strings); RowBinary, read value by value, cost it more than text.
///
/// Values are written in row order: each goes to the next column of the statement's list, and
/// that column's declared type decides its encoding, so a call site cannot put a value in the
/// wrong width. Layout sent (ClickHouse's `NativeBlockInputStream` over HTTP, no block info):
/// the column and row counts as varints, then per column its name, its type and its data —
/// integers little-endian, strings as a varint length and bytes, `Nullable(T)` as one byte per
/// row (1 = NULL) followed by the `T` column.
struct NativeBlock: ~Copyable {
  enum Encoding { case uint8, uint16, uint32, uint64, int32, int64, string }

  /// Where a column's values go: plain POD, read per value without touching the names.
  struct Slot {
    var encoding: Encoding
    var values: Int
    /// The buffer of its NULL map, or -1 for a column that is not Nullable.
    var nulls: Int
  }

  private var names: [String] = []
  private var types: [String] = []
  private var slots: [Slot] = []
  /// One buffer per column's values and one per NULL map, reused from block to block.
  private var buffers: UnsafeMutablePointer<OutputBuffer>
  private var bufferCount = 0
  private var bufferCapacity: Int
  /// The column the next value goes to.
  private var next = 0
  private(set) var rows = 0
  /// A text written before its length is known (an address, a histogram). In a class: read
  /// while the block's own buffers are written.
  private final class Scratch { var buffer = OutputBuffer(capacity: 256) }
  private let scratch = Scratch()

  init() {
    bufferCapacity = 64
    buffers = .allocate(capacity: bufferCapacity)
  }

  deinit {
    buffers.deinitialize(count: bufferCount)
    buffers.deallocate()
  }

  /// Sets the statement's columns (name, ClickHouse type) and empties the block.
  mutating func configure(_ columns: [(String, String)]) {
    names = columns.map(\.0)
    types = columns.map(\.1)
    slots = []
    var needed = 0
    for (_, type) in columns {
      let nullable = type.hasPrefix("Nullable(") && type.hasSuffix(")")
      let inner = nullable ? String(type.dropFirst(9).dropLast()) : type
      guard let encoding = Self.encoding(inner) else {
        preconditionFailure("NativeBlock: no encoding for the ClickHouse type \(type)")
      }
      slots.append(Slot(encoding: encoding, values: needed, nulls: nullable ? needed + 1 : -1))
      needed += nullable ? 2 : 1
    }
    if needed > bufferCapacity {
      buffers.deinitialize(count: bufferCount)
      buffers.deallocate()
      bufferCapacity = needed
      buffers = .allocate(capacity: bufferCapacity)
      bufferCount = 0
    }
    while bufferCount < needed {
      (buffers + bufferCount).initialize(to: OutputBuffer(capacity: 1 << 12))
      bufferCount += 1
    }
    removeAll()
  }

  /// Empties the block, keeping its columns and its buffers' memory.
  mutating func removeAll() {
    for index in 0..<bufferCount { buffers[index].removeAll() }
    next = 0
    rows = 0
  }

  static func encoding(_ type: String) -> Encoding? {
    switch type {
    case "UInt8": .uint8
    case "UInt16": .uint16
    case "UInt32": .uint32
    case "UInt64": .uint64
    case "Int32": .int32
    case "Int64": .int64
    case "String": .string
    default: nil
    }
  }

  // MARK: Values, in row order

  mutating func field(_ value: UInt64) { integer(value) }

  mutating func field(_ value: Int64) { integer(UInt64(bitPattern: value)) }

  mutating func field(_ text: StaticString) {
    text.withUTF8Buffer { string(UnsafeRawBufferPointer($0)) }
  }

  mutating func field(_ text: String) {
    var text = text
    text.withUTF8 { string(UnsafeRawBufferPointer($0)) }
  }

  /// A text field of a request record, from its buffer without making a String.
  mutating func field(_ texts: RequestTexts, _ field: RequestTexts.Field) {
    texts.withUTF8(field) { string($0) }
  }

  mutating func field(_ address: IPAddress) {
    let scratch = scratch
    scratch.buffer.removeAll()
    scratch.buffer.append(address)
    scratch.buffer.withUnsafeBytes { string($0) }
  }

  /// A text column written by `write` (its length is known once written).
  mutating func text(writing write: (inout OutputBuffer) -> Void) {
    let scratch = scratch
    scratch.buffer.removeAll()
    write(&scratch.buffer)
    scratch.buffer.withUnsafeBytes { string($0) }
  }

  /// NULL when nil (the column must be Nullable).
  mutating func optional(_ value: Int64?) {
    let slot = slots[next]
    precondition(slot.nulls >= 0, "NativeBlock: NULL for \(names[next]), which is not Nullable")
    buffers[slot.nulls].append(byte: value == nil ? 1 : 0)
    put(UInt64(bitPattern: value ?? 0), slot)
  }

  mutating func id(_ value: Int32, _ ids: StoreIDs) { field(UInt64(bitPattern: ids[value])) }

  /// The connection columns every record has (`ClickHouseStore.connectionColumns`): both
  /// addresses and ports, where it was captured, and both ends' identities.
  mutating func connection(
    client: IPAddress, _ clientPort: UInt16, server: IPAddress, _ serverPort: UInt16, _ tags: RecordTags,
    _ ids: StoreIDs
  ) {
    field(client)
    field(UInt64(clientPort))
    field(server)
    field(UInt64(serverPort))
    id(tags.captureNode, ids)
    field(tags.interface)
    field(tags.observationPoint.rawValue)
    endpoint(tags.client, ids)
    endpoint(tags.server, ids)
  }

  private mutating func endpoint(_ identity: EndpointIdentity, _ ids: StoreIDs) {
    field(identity.kind.rawValue)
    id(identity.pod, ids)
    id(identity.workload, ids)
    id(identity.node, ids)
    id(identity.service, ids)
    id(identity.namespace, ids)
  }

  private mutating func integer(_ bits: UInt64) {
    let slot = slots[next]
    if slot.nulls >= 0 { buffers[slot.nulls].append(byte: 0) }
    put(bits, slot)
  }

  /// Stores an integer in the column's width (the low bytes, little-endian) and moves on.
  private mutating func put(_ bits: UInt64, _ slot: Slot) {
    switch slot.encoding {
    case .uint8: buffers[slot.values].append(byte: UInt8(truncatingIfNeeded: bits))
    case .uint16: buffers[slot.values].appendLittleEndian(UInt16(truncatingIfNeeded: bits))
    case .uint32, .int32: buffers[slot.values].appendLittleEndian(UInt32(truncatingIfNeeded: bits))
    case .uint64, .int64: buffers[slot.values].appendLittleEndian(bits)
    case .string: preconditionFailure("NativeBlock: a number for the String column \(names[next])")
    }
    advance()
  }

  private mutating func string(_ bytes: UnsafeRawBufferPointer) {
    let slot = slots[next]
    precondition(slot.encoding == .string, "NativeBlock: a text for the non-String column \(names[next])")
    if slot.nulls >= 0 { buffers[slot.nulls].append(byte: 0) }
    Self.appendVarUInt(UInt64(bytes.count), to: &buffers[slot.values])
    buffers[slot.values].append(bytes: bytes)
    advance()
  }

  @inline(__always) private mutating func advance() {
    next += 1
    if next == slots.count {
      next = 0
      rows += 1
    }
  }

  // MARK: Sending

  /// The block in Native format, appended to `body`.
  func write(to body: inout OutputBuffer) {
    precondition(next == 0, "NativeBlock: a row of \(names.first ?? "?")... is incomplete")
    Self.appendVarUInt(UInt64(slots.count), to: &body)
    Self.appendVarUInt(UInt64(rows), to: &body)
    for (index, slot) in slots.enumerated() {
      Self.appendString(names[index], to: &body)
      Self.appendString(types[index], to: &body)
      if slot.nulls >= 0 { buffers[slot.nulls].withUnsafeBytes { body.append(bytes: $0) } }
      buffers[slot.values].withUnsafeBytes { body.append(bytes: $0) }
    }
  }

  static func appendVarUInt(_ value: UInt64, to buffer: inout OutputBuffer) {
    var rest = value
    while rest >= 0x80 {
      buffer.append(byte: UInt8(truncatingIfNeeded: rest) | 0x80)
      rest >>= 7
    }
    buffer.append(byte: UInt8(truncatingIfNeeded: rest))
  }

  static func appendString(_ text: String, to buffer: inout OutputBuffer) {
    appendVarUInt(UInt64(text.utf8.count), to: &buffer)
    buffer.append(string: text)
  }
}
