import FathomKube
import FathomRecords

/// Rows for one ClickHouse insert in ClickHouse's Native format: a column-major block, each
/// column's values contiguous in the column's own binary type, which the server takes without
/// parsing text. 18.16 spent a fifth of an insert's CPU reading TabSeparated (numbers and escaped
/// strings); RowBinary, read value by value, cost it more than text.
///
/// Values are written a column of several rows at a time, each call filling the next column of
/// the statement's list; the column's declared type decides the encoding, so a call site cannot
/// put a value in the wrong width. Layout sent (ClickHouse's `NativeBlockInputStream` over HTTP, no block info):
/// the column and row counts as varints, then per column its name, its type and its data —
/// integers little-endian, strings as a varint length and bytes, `Nullable(T)` as one byte per
/// row (1 = NULL) followed by the `T` column, `Enum8` as one byte a row (the code).
struct NativeBlock: ~Copyable {
  /// `computed`: a column the table computes itself (`ALIAS`), in the writers' order but not
  /// sent; its values are dropped.
  enum Encoding { case uint8, uint16, uint32, uint64, int32, int64, string, enum8, computed }

  /// Where a column's values go: plain POD, read per value without touching the names.
  struct Slot {
    var encoding: Encoding
    var values: Int
    /// The buffer of its NULL map, or -1 for a column that is not Nullable.
    var nulls: Int
  }

  private var names: [String] = []
  private var types: [String] = []
  /// Per column, read per value: a pointer, so a value costs no bounds check or array retain.
  private var slots: UnsafeMutablePointer<Slot>
  private var slotCount = 0
  /// One buffer per column's values and one per NULL map, reused from block to block.
  private var buffers: UnsafeMutablePointer<ColumnBytes>
  private var bufferCount = 0
  private var bufferCapacity: Int
  /// The column the next values go to.
  private var next = 0
  /// Rows of each column of the row being written (every column gets the same count).
  private var columnRows = 0
  private(set) var rows = 0
  /// A text written before its length is known (an address, a histogram). In a class: read
  /// while the block's own buffers are written.
  private final class Scratch { var buffer = OutputBuffer(capacity: 256) }
  private let scratch = Scratch()

  init() {
    bufferCapacity = 64
    buffers = .allocate(capacity: bufferCapacity)
    slots = .allocate(capacity: bufferCapacity)
  }

  deinit {
    for index in 0..<bufferCount { buffers[index].deallocate() }
    buffers.deallocate()
    slots.deallocate()
  }

  /// Sets the statement's columns (name, ClickHouse type) and empties the block.
  mutating func configure(_ columns: [(String, String)]) {
    names = columns.map(\.0)
    types = columns.map(\.1)
    var needed = 0
    var configured: [Slot] = []
    for (_, type) in columns {
      let nullable = type.hasPrefix("Nullable(") && type.hasSuffix(")")
      let inner = nullable ? String(type.dropFirst(9).dropLast()) : type
      guard let encoding = Self.encoding(inner) else {
        preconditionFailure("NativeBlock: no encoding for the ClickHouse type \(type)")
      }
      configured.append(Slot(encoding: encoding, values: needed, nulls: nullable ? needed + 1 : -1))
      needed += nullable ? 2 : 1
    }
    if needed > bufferCapacity {
      for index in 0..<bufferCount { buffers[index].deallocate() }
      buffers.deallocate()
      slots.deallocate()
      bufferCapacity = needed
      buffers = .allocate(capacity: bufferCapacity)
      slots = .allocate(capacity: bufferCapacity)
      bufferCount = 0
    }
    while bufferCount < needed {
      (buffers + bufferCount).initialize(to: ColumnBytes(capacity: 1 << 12))
      bufferCount += 1
    }
    for (index, slot) in configured.enumerated() { (slots + index).initialize(to: slot) }
    slotCount = configured.count
    removeAll()
  }

  /// Empties the block, keeping its columns and its buffers' memory.
  mutating func removeAll() {
    for index in 0..<bufferCount { buffers[index].count = 0 }
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
    case _ where type.hasPrefix("Enum8("): .enum8
    case "ALIAS": .computed
    default: nil
    }
  }

  // MARK: Columns
  //
  // Rows are written a column at a time, `count` rows per call, the columns in the statement's
  // order: the column's encoding is looked at once per call instead of once per value, and each
  // loop keeps its buffer in registers (~14 instructions an integer). Written value by value
  // (until 2026-11-28), a value cost 70–90 instructions under callgrind. The writers pass a few
  // hundred records at a time (`ClickHouseStore.inPasses`), which stay in cache across their
  // columns.

  /// The next column's values for `count` rows: `value(row)` for each.
  @inline(__always) mutating func integers(_ count: Int, _ value: (Int) -> UInt64) {
    let slot = slots[next]
    if slot.nulls >= 0 { buffers[slot.nulls].appendZeros(count) }
    storeIntegers(slot, count, value)
    nextColumn(count)
  }

  /// The next column's values for `count` rows, NULL where `value(row)` is nil (the column
  /// must be Nullable).
  @inline(__always) mutating func optionals(_ count: Int, _ value: (Int) -> Int64?) {
    let slot = slots[next]
    precondition(slot.nulls >= 0, "NativeBlock: NULL for \(names[next]), which is not Nullable")
    var nulls = buffers[slot.nulls]
    nulls.reserve(count)
    for row in 0..<count { nulls.storeUnchecked(UInt8(value(row) == nil ? 1 : 0)) }
    buffers[slot.nulls] = nulls
    storeIntegers(slot, count) { UInt64(bitPattern: value($0) ?? 0) }
    nextColumn(count)
  }

  /// `count` integers into the column's values, each in the column's width (the low bytes,
  /// little-endian).
  @inline(__always) private mutating func storeIntegers(_ slot: Slot, _ count: Int, _ value: (Int) -> UInt64) {
    var column = buffers[slot.values]
    switch slot.encoding {
    case .uint8:
      column.reserve(count)
      for row in 0..<count { column.storeUnchecked(UInt8(truncatingIfNeeded: value(row))) }
    case .uint16:
      column.reserve(count * 2)
      for row in 0..<count { column.storeUnchecked(UInt16(truncatingIfNeeded: value(row)).littleEndian) }
    case .uint32, .int32:
      column.reserve(count * 4)
      for row in 0..<count { column.storeUnchecked(UInt32(truncatingIfNeeded: value(row)).littleEndian) }
    case .uint64, .int64:
      column.reserve(count * 8)
      for row in 0..<count { column.storeUnchecked(value(row).littleEndian) }
    case .computed: break
    case .string, .enum8: preconditionFailure("NativeBlock: numbers for the column \(names[next]) (\(types[next]))")
    }
    buffers[slot.values] = column
  }

  /// The next column's texts for `count` rows: `value(row, write)` passes its bytes to `write`.
  @inline(__always) mutating func texts(
    _ count: Int, _ value: (Int, (UnsafeRawBufferPointer) -> Void) -> Void
  ) {
    let slot = slots[next]
    guard slot.encoding != .computed else { return nextColumn(count) }
    precondition(slot.encoding == .string, "NativeBlock: texts for the non-String column \(names[next])")
    if slot.nulls >= 0 { buffers[slot.nulls].appendZeros(count) }
    var column = buffers[slot.values]
    for row in 0..<count { value(row) { column.append(lengthPrefixed: $0) } }
    buffers[slot.values] = column
    nextColumn(count)
  }

  /// The next column's Strings for `count` rows.
  @inline(__always) mutating func strings(_ count: Int, _ value: (Int) -> String) {
    texts(count) { row, write in
      // Native and small Strings lend their bytes in place; `withUTF8` on a copy retained and
      // released the String's storage for every value.
      let written: Void? = value(row).utf8.withContiguousStorageIfAvailable { write(UnsafeRawBufferPointer($0)) }
      if written == nil {
        var text = value(row)
        text.withUTF8 { write(UnsafeRawBufferPointer($0)) }
      }
    }
  }

  /// The next column's ids (`StoredIdentifier`'s stored form) for `count` rows.
  @inline(__always) mutating func identifiers(_ count: Int, _ value: (Int) -> UnsafeRawBufferPointer) {
    texts(count) { row, write in StoredIdentifier.withEncoded(value(row), write) }
  }

  /// The next column's texts for `count` rows, each written by `write(row, &buffer)` (a text
  /// whose length is known once written: an address, a histogram).
  @inline(__always) mutating func texts(_ count: Int, writing write: (Int, inout OutputBuffer) -> Void) {
    let scratch = scratch
    texts(count) { row, take in
      scratch.buffer.removeAll()
      write(row, &scratch.buffer)
      scratch.buffer.withUnsafeBytes { take($0) }
    }
  }

  /// The next column's addresses, as text, for `count` rows.
  @inline(__always) mutating func addresses(_ count: Int, _ value: (Int) -> IPAddress) {
    texts(count) { row, buffer in buffer.append(value(row)) }
  }

  /// The next column's resource ids for `count` rows, through the store's map.
  @inline(__always) mutating func ids(_ count: Int, _ ids: StoreIDs, _ value: (Int) -> Int32) {
    integers(count) { UInt64(bitPattern: ids[value($0)]) }
  }

  /// The next column's names of a fixed set for `count` rows: codes in an `Enum8` column, names
  /// in a String column (a sorting-key column of a table made before enums, which 18.16 cannot
  /// convert); nil is the empty name (code 0).
  @inline(__always) mutating func names<Value: ClickHouseEnumValue>(_ count: Int, _ value: (Int) -> Value?) {
    let slot = slots[next]
    if slot.encoding == .enum8 {
      if slot.nulls >= 0 { buffers[slot.nulls].appendZeros(count) }
      var column = buffers[slot.values]
      column.reserve(count)
      for row in 0..<count { column.storeUnchecked(value(row)?.storedCode ?? 0) }
      buffers[slot.values] = column
      nextColumn(count)
    } else {
      texts(count) { row, write in
        if let name = value(row) {
          name.storedName.withUTF8Buffer { write(UnsafeRawBufferPointer($0)) }
        } else {
          write(UnsafeRawBufferPointer(start: nil, count: 0))
        }
      }
    }
  }

  /// The connection columns every record table has (`ClickHouseStore.connectionColumns`) of
  /// `count` rows: both addresses and ports, where it was captured, and both ends' identities; `tags(row)` points at
  /// a row's tags (read in place: a copy would retain its interface name).
  @inline(__always) mutating func connections(
    _ count: Int, _ ids: StoreIDs, client: (Int) -> IPAddress, clientPort: (Int) -> UInt16,
    server: (Int) -> IPAddress, serverPort: (Int) -> UInt16, tags: (Int) -> UnsafePointer<RecordTags>
  ) {
    addresses(count, client)
    integers(count) { UInt64(clientPort($0)) }
    addresses(count, server)
    integers(count) { UInt64(serverPort($0)) }
    self.ids(count, ids) { tags($0).pointee.captureNode }
    strings(count) { tags($0).pointee.interface }
    names(count) { tags($0).pointee.observationPoint }
    endpoints(count, ids) { tags($0).pointee.client }
    endpoints(count, ids) { tags($0).pointee.server }
  }

  /// One end's identity columns of `count` rows.
  @inline(__always) private mutating func endpoints(
    _ count: Int, _ ids: StoreIDs, _ identity: (Int) -> EndpointIdentity
  ) {
    names(count) { identity($0).kind }
    self.ids(count, ids) { identity($0).pod }
    self.ids(count, ids) { identity($0).workload }
    self.ids(count, ids) { identity($0).node }
    self.ids(count, ids) { identity($0).service }
    self.ids(count, ids) { identity($0).namespace }
  }

  /// After a column of `count` rows; the last column of the row completes them.
  @inline(__always) private mutating func nextColumn(_ count: Int) {
    precondition(next == 0 || count == columnRows, "NativeBlock: \(names[next]) got \(count) rows, not \(columnRows)")
    columnRows = count
    next += 1
    if next == slotCount {
      next = 0
      rows += count
    }
  }

  // MARK: Sending

  /// The block in Native format, appended to `body`.
  func write(to body: inout OutputBuffer) {
    precondition(next == 0, "NativeBlock: a row of \(names.first ?? "?")... is incomplete")
    Self.appendVarUInt(UInt64((0..<slotCount).count { slots[$0].encoding != .computed }), to: &body)
    Self.appendVarUInt(UInt64(rows), to: &body)
    for index in 0..<slotCount where slots[index].encoding != .computed {
      let slot = slots[index]
      Self.appendString(names[index], to: &body)
      Self.appendString(types[index], to: &body)
      if slot.nulls >= 0 { body.append(bytes: buffers[slot.nulls].bytes) }
      body.append(bytes: buffers[slot.values].bytes)
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

/// One column's bytes in a NativeBlock. Module-internal so a value's store is inlined where it
/// is written: through `OutputBuffer` (another module) every value of a 47-column request row
/// was a call (store-bench under callgrind: 4% fewer instructions per record without them).
struct ColumnBytes {
  private var base: UnsafeMutableRawPointer
  private var capacity: Int
  var count = 0

  init(capacity: Int) {
    self.capacity = capacity
    base = .allocate(byteCount: capacity, alignment: 16)
  }

  /// Frees the memory; the owner calls it once.
  func deallocate() { base.deallocate() }

  var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

  /// Room for `extra` more bytes (before `storeUnchecked`).
  @inline(__always) mutating func reserve(_ extra: Int) {
    if count + extra > capacity { grow(count + extra) }
  }

  private mutating func grow(_ needed: Int) {
    var newCapacity = capacity * 2
    while newCapacity < needed { newCapacity *= 2 }
    let newBase = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
    newBase.copyMemory(from: base, byteCount: count)
    base.deallocate()
    base = newBase
    capacity = newCapacity
  }

  /// A fixed-width value stored without a capacity check: after `reserve` for it.
  @inline(__always) mutating func storeUnchecked<Value: FixedWidthInteger>(_ value: Value) {
    base.storeBytes(of: value, toByteOffset: count, as: Value.self)
    count += MemoryLayout<Value>.size
  }

  /// `count` zero bytes (NULL maps of rows that are not NULL).
  mutating func appendZeros(_ extra: Int) {
    reserve(extra)
    (base + count).initializeMemory(as: UInt8.self, repeating: 0, count: extra)
    count += extra
  }

  /// A String value: its length as a varint (LEB128), then its bytes.
  @inline(__always) mutating func append(lengthPrefixed text: UnsafeRawBufferPointer) {
    reserve(10 + text.count)
    var rest = UInt64(text.count)
    while rest >= 0x80 {
      base.storeBytes(of: UInt8(truncatingIfNeeded: rest) | 0x80, toByteOffset: count, as: UInt8.self)
      count += 1
      rest >>= 7
    }
    base.storeBytes(of: UInt8(truncatingIfNeeded: rest), toByteOffset: count, as: UInt8.self)
    count += 1
    if let start = text.baseAddress, text.count > 0 {
      (base + count).copyMemory(from: start, byteCount: text.count)
      count += text.count
    }
  }
}
