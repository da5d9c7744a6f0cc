import Foundation
import Synchronization
import Testing

@testable import FathomStore

/// ClickHouse inserts gathered into blocks and sent in the background: every row arrives, in
/// the order written per statement, and a failed block is an error on every later call.
@Suite struct InsertPipelineTests {
  struct Refused: Error {}

  @Test func blocksGatherRowsAndFlushSendsTheRest() throws {
    let sent = Mutex<[(String, String)]>([])
    let pipeline = InsertPipeline(rowsPerInsert: 3)
    pipeline.send = { sql, body in sent.withLock { $0.append((sql, String(decoding: body, as: UTF8.self))) } }
    defer { pipeline.stop() }
    for row in 1...4 { try pipeline.add(sql: "INSERT a", body: Data("a\(row)\n".utf8), rows: 1) }
    try pipeline.add(sql: "INSERT b", body: Data("b1\n".utf8), rows: 1)
    try pipeline.flush()
    let blocks = sent.withLock { $0 }
    // The first three rows of a went as one block once full; the rest at the flush.
    #expect(blocks.count == 3)
    #expect(blocks.first.map { $0.0 == "INSERT a" && $0.1 == "a1\na2\na3\n" } == true)
    #expect(blocks.filter { $0.0 == "INSERT a" }.map(\.1).joined() == "a1\na2\na3\na4\n")
    #expect(blocks.filter { $0.0 == "INSERT b" }.map(\.1) == ["b1\n"])
    try pipeline.flush()  // nothing left: returns at once
    #expect(sent.withLock { $0.count } == 3)
  }

  @Test func aFailedBlockIsAnErrorFromThenOn() throws {
    let pipeline = InsertPipeline(rowsPerInsert: 1)
    pipeline.send = { _, _ in throw Refused() }
    defer { pipeline.stop() }
    try? pipeline.add(sql: "INSERT a", body: Data("1\n".utf8), rows: 1)
    #expect(throws: Refused.self) { try pipeline.flush() }
    #expect(throws: Refused.self) { try pipeline.add(sql: "INSERT a", body: Data("2\n".utf8), rows: 1) }
    #expect(throws: Refused.self) { try pipeline.flush() }
  }
}
