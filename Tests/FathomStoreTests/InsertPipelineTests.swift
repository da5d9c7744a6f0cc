import FathomKube
import FathomRecords
import Foundation
import Synchronization
import Testing

@testable import FathomStore

/// ClickHouse inserts gathered into Native blocks and sent in the background: every row arrives
/// (full blocks in the order written; at a flush, blocks in any order), a reused buffer carries no rows of the block it held
/// before, and a failed block is an error on every later call.
@Suite struct InsertPipelineTests {
  struct Refused: Error {}

  /// The String columns of a Native block: (rows, [(name, type, values)]).
  static func strings(_ body: [UInt8]) -> (rows: Int, columns: [(String, String, [String])]) {
    var offset = 0
    func varint() -> Int {
      var value = 0
      var shift = 0
      while true {
        let byte = body[offset]
        offset += 1
        value |= Int(byte & 0x7F) << shift
        if byte < 0x80 { return value }
        shift += 7
      }
    }
    func string() -> String {
      let count = varint()
      defer { offset += count }
      return String(decoding: body[offset..<offset + count], as: UTF8.self)
    }
    let columnCount = varint()
    let rows = varint()
    var columns: [(String, String, [String])] = []
    for _ in 0..<columnCount {
      let (name, type) = (string(), string())
      columns.append((name, type, (0..<rows).map { _ in string() }))
    }
    #expect(offset == body.count)
    return (rows, columns)
  }

  @Test func blocksGatherRowsAndFlushSendsTheRest() throws {
    let sent = Mutex<[(String, [UInt8])]>([])
    let pipeline = InsertPipeline(rowsPerInsert: 3)
    pipeline.send = { sql, body in sent.withLock { $0.append((sql, Array(body))) } }
    defer { pipeline.stop() }
    let columns = [("s", "String")]
    for row in 1...7 { try pipeline.append(sql: "INSERT a", columns: columns) { $0.field("a\(row)") } }
    try pipeline.append(sql: "INSERT b", columns: columns) { $0.field("b\t1") }
    try pipeline.flush()
    let blocks = sent.withLock { $0 }.map { ($0.0, Self.strings($0.1)) }
    // Rows of a went three to a block once full, the rest at the flush (which may send it before
    // a full block still queued); sent buffers are reused.
    #expect(blocks.count == 4)
    #expect(
      blocks.filter { $0.0 == "INSERT a" }.map { $0.1.columns[0].2 }.sorted { $0[0] < $1[0] } == [
        ["a1", "a2", "a3"], ["a4", "a5", "a6"], ["a7"],
      ])
    #expect(blocks.filter { $0.0 == "INSERT b" }.map { $0.1.columns[0].2 } == [["b\t1"]])
    #expect(blocks.allSatisfy { $0.1.columns.map { "\($0.0) \($0.1)" } == ["s String"] })
    try pipeline.flush()  // nothing left: returns at once
    #expect(sent.withLock { $0.count } == 4)
  }

  /// Every encoding against the layout ClickHouse's Native format defines: counts as varints,
  /// then per column its name, type and data — integers little-endian in the column's width,
  /// strings length-prefixed, Nullable as a NULL map before the values.
  @Test func nativeLayoutOfEveryColumnType() {
    var block = NativeBlock()
    block.configure([
      ("a", "UInt8"), ("b", "UInt16"), ("c", "UInt32"), ("d", "Int64"), ("e", "Nullable(Int32)"), ("f", "String"),
    ])
    for row in 0..<2 {
      block.field(UInt64(7 + row))
      block.field(UInt64(0x1234))
      block.field(UInt64(0xDEAD_BEEF))
      block.field(Int64(-2))
      block.optional(row == 0 ? nil : -1)
      block.field(row == 0 ? "" : String(repeating: "x", count: 200))
    }
    #expect(block.rows == 2)
    var body = OutputBuffer()
    block.write(to: &body)
    var expected: [UInt8] = [6, 2]
    func header(_ name: String, _ type: String) {
      expected += [UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(type.utf8.count)] + Array(type.utf8)
    }
    header("a", "UInt8")
    expected += [7, 8]
    header("b", "UInt16")
    expected += [0x34, 0x12, 0x34, 0x12]
    header("c", "UInt32")
    expected += [0xEF, 0xBE, 0xAD, 0xDE, 0xEF, 0xBE, 0xAD, 0xDE]
    header("d", "Int64")
    expected += Array(repeating: [0xFE] + Array(repeating: 0xFF, count: 7), count: 2).flatMap { $0 }
    header("e", "Nullable(Int32)")
    expected += [1, 0] + [0, 0, 0, 0] + [0xFF, 0xFF, 0xFF, 0xFF]
    header("f", "String")
    expected += [0] + [0xC8, 0x01] + Array(repeating: UInt8(ascii: "x"), count: 200)
    #expect(body.bytes == expected)
    block.removeAll()
    #expect(block.rows == 0)
  }

  /// Columns written in passes of any size (1, 7, 256 and 36 rows) make the same bytes as the
  /// same rows written one at a time, for every encoding: plain and Nullable integers of each
  /// width, texts, an `Enum8` and an enum kept as names in a String column, stored ids, a
  /// computed column, addresses, resource ids. (The layouts themselves: the tests above.)
  @Test func passesOfAnySizeMakeTheSameBytes() {
    let columns: [(String, String)] = [
      ("u8", "UInt8"), ("u16", "UInt16"), ("u32", "UInt32"), ("i64", "Int64"), ("nu", "Nullable(UInt64)"),
      ("opt", "Nullable(Int32)"), ("text", "String"), ("point", ObservationPoint.clickHouseType),
      ("legacy", "String"), ("status", RequestStatus.clickHouseType), ("computed", "ALIAS"), ("id", "String"),
      ("address", "String"), ("resource", "UInt64"),
    ]
    let points = ObservationPoint.allCases
    let statuses = RequestStatus.allCases
    let identifiers = ["", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "plain", "\u{1}x"]
    let addresses = [IPAddress(ipv4: 0x0a00_0001), IPAddress("fd00::1")!]
    let ids = StoreIDs([1: 11, 2: -5, 1 << 21: 99])
    let resources: [Int32] = [0, 1, 2, 7, 1 << 21]
    func value(_ row: Int) -> UInt64 { UInt64(row) &* 0x9E37_79B9_7F4A_7C15 }
    func text(_ row: Int) -> String { row % 3 == 0 ? "" : String(repeating: "t", count: row % 150) }
    func optional(_ row: Int) -> Int64? { row % 4 == 0 ? nil : Int64(row) - 50 }
    func status(_ row: Int) -> RequestStatus? { row % 5 == 0 ? nil : statuses[row % statuses.count] }
    let rowCount = 300
    // Stable bytes for `identifiers`, which takes a pointer per row.
    let identifierBytes = identifiers.map { text -> UnsafeRawBufferPointer in
      let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: text.utf8.count + 1, alignment: 1)
      bytes.copyBytes(from: text.utf8)
      return UnsafeRawBufferPointer(rebasing: bytes[0..<text.utf8.count])
    }
    defer { identifierBytes.forEach { $0.baseAddress!.deallocate() } }

    var byRow = NativeBlock()  // one row at a time
    byRow.configure(columns)
    for row in 0..<rowCount {
      byRow.field(value(row))
      byRow.field(value(row))
      byRow.field(value(row))
      byRow.field(Int64(bitPattern: value(row)))
      byRow.field(value(row))
      byRow.optional(optional(row))
      byRow.field(text(row))
      byRow.field(points[row % points.count])
      byRow.field(points[row % points.count])
      byRow.field(status(row))
      byRow.field(value(row))
      byRow.identifiers(1) { _ in identifierBytes[row % identifierBytes.count] }
      byRow.addresses(1) { _ in addresses[row % 2] }
      byRow.ids(1, ids) { _ in resources[row % resources.count] }
    }

    var byColumn = NativeBlock()
    byColumn.configure(columns)
    var start = 0
    for chunk in [1, 7, 256, 36] {
      let count = chunk
      byColumn.integers(count) { value(start + $0) }
      byColumn.integers(count) { value(start + $0) }
      byColumn.integers(count) { value(start + $0) }
      byColumn.integers(count) { value(start + $0) }
      byColumn.integers(count) { value(start + $0) }
      byColumn.optionals(count) { optional(start + $0) }
      byColumn.texts(count) { row, write in
        var text = text(start + row)
        text.withUTF8 { write(UnsafeRawBufferPointer($0)) }
      }
      byColumn.names(count) { points[(start + $0) % points.count] }
      byColumn.names(count) { points[(start + $0) % points.count] }
      byColumn.names(count) { status(start + $0) }
      byColumn.integers(count) { value(start + $0) }
      byColumn.identifiers(count) { identifierBytes[(start + $0) % identifierBytes.count] }
      byColumn.addresses(count) { addresses[(start + $0) % 2] }
      byColumn.ids(count, ids) { resources[(start + $0) % resources.count] }
      start += count
    }
    #expect(start == rowCount && byColumn.rows == rowCount)
    var expected = OutputBuffer()
    byRow.write(to: &expected)
    var got = OutputBuffer()
    byColumn.write(to: &got)
    let (gotBytes, expectedBytes) = (Array(got.bytes), Array(expected.bytes))
    let firstDifference = (0..<min(gotBytes.count, expectedBytes.count)).first { gotBytes[$0] != expectedBytes[$0] }
    #expect(
      gotBytes.count == expectedBytes.count && firstDifference == nil,
      "\(gotBytes.count) bytes against \(expectedBytes.count), first difference at \(String(describing: firstDifference))"
    )
  }

  /// Sent blocks are kept per statement: a statement's next block has its own columns, never
  /// another statement's, and no rows of the block it held before.
  @Test func spareBlocksStayWithTheirStatement() throws {
    let sent = Mutex<[(String, [UInt8])]>([])
    let pipeline = InsertPipeline(rowsPerInsert: 1)
    pipeline.send = { sql, body in sent.withLock { $0.append((sql, Array(body))) } }
    defer { pipeline.stop() }
    for row in 0..<20 {
      try pipeline.append(sql: "INSERT a", columns: [("x", "String"), ("y", "String")]) {
        $0.field("a\(row)")
        $0.field("y\(row)")
      }
      try pipeline.append(sql: "INSERT b", columns: [("z", "String")]) { $0.field("b\(row)") }
    }
    try pipeline.flush()
    let blocks = sent.withLock { $0 }.map { ($0.0, Self.strings($0.1)) }
    #expect(blocks.count == 40)
    for (sql, block) in blocks {
      #expect(block.rows == 1)
      #expect(block.columns.map(\.0) == (sql == "INSERT a" ? ["x", "y"] : ["z"]))
    }
    let rowsOfA = blocks.filter { $0.0 == "INSERT a" }.map { $0.1.columns[0].2[0] }
    #expect(Set(rowsOfA) == Set((0..<20).map { "a\($0)" }))
  }

  /// Column buffers start at 4 KiB and grow; a block configured for more columns than it has
  /// buffers gets new ones. Every value survives both.
  @Test func columnsGrowAndBlocksTakeMoreColumns() {
    var block = NativeBlock()
    block.configure([("s", "String"), ("t", "String")])
    let values = (0..<3_000).map { "value-\($0)-" + String(repeating: "x", count: $0 % 40) }
    for value in values {
      block.field(value)
      block.field(String(value.reversed()))
    }
    var body = OutputBuffer()
    block.write(to: &body)
    let narrow = Self.strings(body.bytes)
    #expect(narrow.rows == values.count)
    #expect(narrow.columns.map(\.2) == [values, values.map { String($0.reversed()) }])

    let wide = (0..<70).map { ("c\($0)", "String") }  // more than the 64 buffers a block starts with
    block.configure(wide)
    for row in 0..<3 {
      for column in 0..<70 { block.field("\(row).\(column)") }
    }
    body.removeAll()
    block.write(to: &body)
    let decoded = Self.strings(body.bytes)
    #expect(decoded.rows == 3)
    #expect(decoded.columns.map(\.0) == wide.map(\.0))
    #expect(decoded.columns[69].2 == ["0.69", "1.69", "2.69"])
  }

  /// At a flush the caller sends blocks beside the sending thread (independent inserts, a core
  /// each on the server) instead of waiting for them one after another; every row still arrives,
  /// and a block the caller failed to send is an error from then on.
  @Test func flushSendsOnTheCallersThreadToo() throws {
    let state = Mutex<(sending: Int, most: Int, rows: [String: Int])>((0, 0, [:]))
    let pipeline = InsertPipeline(rowsPerInsert: 2)
    pipeline.send = { sql, body in
      state.withLock {
        $0.sending += 1
        $0.most = max($0.most, $0.sending)
      }
      // Each send waits (bounded) until another is under way: serial sending fails the test.
      let deadline = Date().addingTimeInterval(2)
      while state.withLock({ $0.most }) < 2 && Date() < deadline { usleep(1_000) }
      state.withLock {
        $0.sending -= 1
        $0.rows[sql, default: 0] += Self.strings(Array(body)).rows
      }
      if sql == "INSERT d" { throw Refused() }
    }
    defer { pipeline.stop() }
    let columns = [("s", "String")]
    for row in 1...4 { try pipeline.append(sql: "INSERT a", columns: columns) { $0.field("a\(row)") } }
    try pipeline.append(sql: "INSERT b", columns: columns) { $0.field("b") }
    try pipeline.append(sql: "INSERT c", columns: columns) { $0.field("c") }
    try pipeline.flush()
    #expect(state.withLock { $0.most } == 2)
    #expect(state.withLock { $0.rows } == ["INSERT a": 4, "INSERT b": 1, "INSERT c": 1])
    try pipeline.append(sql: "INSERT a", columns: columns) { $0.field("a5") }
    try pipeline.append(sql: "INSERT d", columns: columns) { $0.field("d") }
    #expect(throws: Refused.self) { try pipeline.flush() }
    #expect(throws: Refused.self) { try pipeline.append(sql: "INSERT a", columns: columns) { $0.field("a6") } }
  }

  @Test func aFailedBlockIsAnErrorFromThenOn() throws {
    let pipeline = InsertPipeline(rowsPerInsert: 1)
    pipeline.send = { _, _ in throw Refused() }
    defer { pipeline.stop() }
    let columns = [("n", "UInt64")]
    try? pipeline.append(sql: "INSERT a", columns: columns) { $0.field(UInt64(1)) }
    #expect(throws: Refused.self) { try pipeline.flush() }
    #expect(throws: Refused.self) {
      try pipeline.append(sql: "INSERT a", columns: columns) { $0.field(UInt64(2)) }
    }
    #expect(throws: Refused.self) { try pipeline.flush() }
  }
}

/// Tests write a few rows value by value: each value a column of one row.
extension NativeBlock {
  mutating func field(_ value: UInt64) { integers(1) { _ in value } }
  mutating func field(_ value: Int64) { integers(1) { _ in UInt64(bitPattern: value) } }
  mutating func field(_ text: String) { strings(1) { _ in text } }
  mutating func field<Value: ClickHouseEnumValue>(_ value: Value?) { names(1) { _ in value } }
  mutating func optional(_ value: Int64?) { optionals(1) { _ in value } }
}
