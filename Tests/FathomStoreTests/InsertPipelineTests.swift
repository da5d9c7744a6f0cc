import Foundation
import Synchronization
import Testing

@testable import FathomStore

/// ClickHouse inserts gathered into blocks and sent in the background: every row arrives, in
/// the order written per statement, a reused buffer carries no rows of the block it held before,
/// and a failed block is an error on every later call.
@Suite struct InsertPipelineTests {
  struct Refused: Error {}

  @Test func blocksGatherRowsAndFlushSendsTheRest() throws {
    let sent = Mutex<[(String, String)]>([])
    let pipeline = InsertPipeline(rowsPerInsert: 3)
    pipeline.send = { sql, body in sent.withLock { $0.append((sql, String(decoding: body, as: UTF8.self))) } }
    defer { pipeline.stop() }
    for row in 1...7 { try pipeline.append(sql: "INSERT a", rows: 1) { $0.field("a\(row)", last: true) } }
    try pipeline.append(sql: "INSERT b", rows: 1) { $0.field("b\t1", last: true) }
    try pipeline.flush()
    let blocks = sent.withLock { $0 }
    // Rows of a went three to a block once full, the rest at the flush; sent buffers are reused.
    #expect(blocks.count == 4)
    #expect(blocks.first.map { $0.0 == "INSERT a" && $0.1 == "a1\na2\na3\n" } == true)
    #expect(blocks.filter { $0.0 == "INSERT a" }.map(\.1) == ["a1\na2\na3\n", "a4\na5\na6\n", "a7\n"])
    #expect(blocks.filter { $0.0 == "INSERT b" }.map(\.1) == ["b\\t1\n"])
    try pipeline.flush()  // nothing left: returns at once
    #expect(sent.withLock { $0.count } == 4)
  }

  @Test func aFailedBlockIsAnErrorFromThenOn() throws {
    let pipeline = InsertPipeline(rowsPerInsert: 1)
    pipeline.send = { _, _ in throw Refused() }
    defer { pipeline.stop() }
    try? pipeline.append(sql: "INSERT a", rows: 1) { $0.field(UInt64(1), last: true) }
    #expect(throws: Refused.self) { try pipeline.flush() }
    #expect(throws: Refused.self) {
      try pipeline.append(sql: "INSERT a", rows: 1) { $0.field(UInt64(2), last: true) }
    }
    #expect(throws: Refused.self) { try pipeline.flush() }
  }
}
