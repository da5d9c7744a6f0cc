import FathomRecords
import Foundation

/// Inserts into ClickHouse gathered per statement into large blocks, sent by one background
/// thread while the caller writes the next block (and at a flush by the caller too).
///
/// ClickHouse makes one part per insert and merges parts later, so small inserts cost it far
/// more: 1M requests in 10,000-row inserts took 12 s of server CPU, in 100,000-row inserts 3.8 s
/// (store-bench, single server). Sending in the caller's thread also left the client and the
/// server waiting for each other. Rows are written into the block's column buffers and laid out
/// into the request body on the sending thread; a sent block's buffers and the body are kept for
/// the next one of the same statement, whose columns keep their sizes: copying each block twice
/// into fresh memory (Data) cost the client a fifth of its time in page clearing and memmove,
/// and spares shared by all statements (a rollup's short columns reused for requests' long
/// texts, then regrown) still 11% of its samples in page clearing, 1% with spares per statement.
/// Memory stays bounded: one block per statement being filled, at most two waiting,
/// `sparePerStatement` spares per statement. A failed insert (after `execute`'s bounded retries)
/// is kept and thrown by every later `append` and `flush`: a batch is never silently missing.
final class InsertPipeline: @unchecked Sendable {
  /// One statement's rows, in ClickHouse's Native format. One thread at a time has it: the
  /// caller while filling it, the sending thread once queued.
  final class Block: @unchecked Sendable {
    var sql = ""
    var rows = NativeBlock()
  }

  /// Set once by the owner before the first `append`.
  var send: (String, UnsafeRawBufferPointer) throws -> Void = { _, _ in }
  private let rowsPerInsert: Int
  private let sparePerStatement = 2
  /// Sends blocks in order, at most two waiting; keeps the first failure.
  private let sender = OrderedWorker(name: "fathom-clickhouse-insert")
  private let lock = NSLock()
  /// Blocks being filled, by statement.
  private var filling: [String: Block] = [:]
  /// Sent blocks whose buffers are reused, by statement.
  private var spare: [String: [Block]] = [:]
  /// A request body a block is laid out into; one per thread sending at once, kept for reuse.
  final class Body: @unchecked Sendable {
    var bytes = OutputBuffer(capacity: 1 << 16)
  }
  private var bodies: [Body] = []

  init(rowsPerInsert: Int) { self.rowsPerInsert = rowsPerInsert }

  /// Adds the rows `write` writes (in the order of `columns`, the statement's list of names and
  /// ClickHouse types) to the statement's block; a full block is queued for sending, waiting
  /// while the queue is full.
  func append(sql: String, columns: [(String, String)], _ write: (inout NativeBlock) -> Void) throws {
    try sender.check()
    let block = lock.withLock {
      if let filling = filling.removeValue(forKey: sql) { return filling }
      if let reused = spare[sql]?.popLast() { return reused }
      let block = Block()
      block.sql = sql
      block.rows.configure(columns)
      return block
    }
    // Only the caller's thread touches a block being filled: written without the lock.
    write(&block.rows)
    if block.rows.rows >= rowsPerInsert {
      try enqueue(block)
    } else {
      lock.withLock { filling[sql] = block }
    }
  }

  /// Sends everything added so far and waits until it is stored; throws the first failure.
  /// The caller sends blocks too instead of waiting (the server inserts each on its own core):
  /// at the end of a store-bench run the last blocks had been sent one after another while the
  /// client was idle, 15–20% of the run.
  func flush() throws {
    let blocks = lock.withLock {
      defer { filling.removeAll() }
      return filling.values.sorted { $0.sql < $1.sql }
    }
    try sender.drain(adding: blocks.map(job))
  }

  /// Ends the sending thread once its queue is empty (the owner flushes first).
  func stop() {
    sender.stop()
    lock.withLock {
      spare.removeAll()
      bodies.removeAll()
    }
  }

  private func enqueue(_ block: Block) throws { try sender.enqueue(job(block)) }

  private func job(_ block: Block) -> OrderedWorker.Job {
    { [self] in
      let body = lock.withLock { bodies.popLast() ?? Body() }
      defer {
        block.rows.removeAll()
        lock.withLock {
          if spare[block.sql, default: []].count < sparePerStatement { spare[block.sql, default: []].append(block) }
          bodies.append(body)
        }
      }
      body.bytes.removeAll()
      block.rows.write(to: &body.bytes)
      try body.bytes.withUnsafeBytes { try send(block.sql, $0) }
    }
  }
}
