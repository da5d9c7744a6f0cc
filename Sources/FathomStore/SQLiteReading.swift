import Foundation
import GRDB
import GRDBSQLite

/// The resources dictionary in memory: records hold ids, readers want names.
struct ResourceNames {
  let names: [Int64: String]

  init(_ db: Database) throws {
    var names: [Int64: String] = [:]
    for row in try Row.fetchAll(db, sql: "SELECT id, namespace, name FROM resources") {
      let namespace: String = row[1]
      let name: String = row[2]
      names[row[0]] = namespace.isEmpty ? name : "\(namespace)/\(name)"
    }
    self.names = names
  }

  /// `namespace/name`; empty for 0 (no such end) and unknown ids.
  func name(_ id: Int64) -> String { id == 0 ? "" : names[id] ?? "" }
  /// An id given as text (from `textRows`).
  func name(text: String) -> String { Int64(text).map(name) ?? "" }
  /// A node's name (nodes have no namespace).
  func node(_ id: Int64) -> String {
    let full = name(id)
    return full.split(separator: "/").last.map(String.init) ?? full
  }
}

/// Columns of the current row of a stepped statement.
struct SQLiteColumns {
  let statement: OpaquePointer
  init(_ statement: OpaquePointer) { self.statement = statement }
  func int64(_ index: Int32) -> Int64 { sqlite3_column_int64(statement, index) }
  func int(_ index: Int32) -> Int { Int(sqlite3_column_int64(statement, index)) }
  func optionalInt(_ index: Int32) -> Int? {
    sqlite3_column_type(statement, index) == SQLITE_NULL ? nil : Int(sqlite3_column_int64(statement, index))
  }
  /// FNV-1a of a text column's bytes, without making a string: a key for matching values that
  /// never need to be read back (addresses).
  func textHash(_ index: Int32) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    guard let bytes = sqlite3_column_text(statement, index) else { return hash }
    for offset in 0..<Int(sqlite3_column_bytes(statement, index)) {
      hash = (hash ^ UInt64(bytes[offset])) &* 0x100_0000_01b3
    }
    return hash
  }
  /// Whether a text column holds exactly `value`'s bytes.
  func textEquals(_ index: Int32, _ value: StaticString) -> Bool {
    guard let bytes = sqlite3_column_text(statement, index) else { return value.utf8CodeUnitCount == 0 }
    let count = Int(sqlite3_column_bytes(statement, index))
    return count == value.utf8CodeUnitCount && memcmp(bytes, value.utf8Start, count) == 0
  }
  func text(_ index: Int32) -> String {
    guard let bytes = sqlite3_column_text(statement, index) else { return "" }
    return String(
      decoding: UnsafeBufferPointer(start: bytes, count: Int(sqlite3_column_bytes(statement, index))), as: UTF8.self)
  }
}

extension SQLiteStore {
  /// Steps a query with sqlite3's column API, one value per row: windows of long recordings
  /// hold hundreds of thousands of rows, and GRDB's per-row values (and its lookup of columns by
  /// name, which lowercases the name per row) cost more than the query (measured on a 10-minute
  /// lab recording).
  func read<Value>(
    _ sql: String, _ arguments: StatementArguments, _ make: (SQLiteColumns, ResourceNames) -> Value
  ) throws -> [Value] {
    var values: [Value] = []
    try scan(sql, arguments) { columns, names in values.append(make(columns, names)) }
    return values
  }

  /// Steps a query, handing each row's columns to `visit`; returns the resources dictionary it
  /// read for them.
  @discardableResult
  func scan(_ sql: String, _ arguments: StatementArguments, _ visit: (SQLiteColumns, ResourceNames) -> Void) throws
    -> ResourceNames
  {
    try pool.read { db in
      let names = try ResourceNames(db)
      let statement = try db.makeStatement(sql: sql)
      try statement.setArguments(arguments)
      defer { sqlite3_reset(statement.sqliteStatement) }
      let columns = SQLiteColumns(statement.sqliteStatement)
      while true {
        let step = sqlite3_step(statement.sqliteStatement)
        if step == SQLITE_DONE { return names }
        guard step == SQLITE_ROW else {
          throw DatabaseError(
            resultCode: ResultCode(rawValue: step), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
        }
        visit(columns, names)
      }
    }
  }
}
