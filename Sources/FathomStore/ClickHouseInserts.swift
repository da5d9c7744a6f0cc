import FathomRecords
import Foundation

/// Inserts into ClickHouse gathered per statement into large blocks, sent by one background
/// thread while the caller writes the next block.
///
/// ClickHouse makes one part per insert and merges parts later, so small inserts cost it far
/// more: 1M requests in 10,000-row inserts took 12 s of server CPU, in 100,000-row inserts 3.8 s
/// (store-bench, single server). Sending in the caller's thread also left the client and the
/// server waiting for each other. Rows are written into the block's column buffers and laid out
/// into the request body on the sending thread; a sent block's buffers and the body are kept for
/// the next one: copying each block twice into fresh memory (Data) cost the client a fifth of its
/// time in page clearing and memmove. Memory stays
/// bounded: one block per statement being filled, at most `queueLimit` waiting, `spareLimit`
/// spare buffers. A failed insert (after `execute`'s bounded retries) is kept and thrown by
/// every later `append` and `flush`: a batch is never silently missing.
final class InsertPipeline: @unchecked Sendable {
  /// One statement's rows, in ClickHouse's Native format.
  final class Block {
    var sql = ""
    var rows = NativeBlock()
  }

  /// Set once by the owner before the first `append`.
  var send: (String, UnsafeRawBufferPointer) throws -> Void = { _, _ in }
  private let rowsPerInsert: Int
  private let queueLimit = 2
  private let spareLimit = 2
  private let condition = NSCondition()
  /// Blocks being filled, by statement.
  private var filling: [String: Block] = [:]
  private var queue: [Block] = []
  /// Sent blocks whose buffers are reused.
  private var spare: [Block] = []
  private var sending = false
  private var failure: (any Error)?
  private var stopped = false
  private var worker: Thread?
  /// The request body a block is laid out into (the sending thread's alone).
  private var body = OutputBuffer(capacity: 1 << 16)

  init(rowsPerInsert: Int) { self.rowsPerInsert = rowsPerInsert }

  /// Adds the rows `write` writes (in the order of `columns`, the statement's list of names and
  /// ClickHouse types) to the statement's block; a full block is queued for sending, waiting
  /// while the queue is full.
  func append(sql: String, columns: [(String, String)], _ write: (inout NativeBlock) -> Void) throws {
    condition.lock()
    if let failure {
      condition.unlock()
      throw failure
    }
    let block: Block
    if let filling = filling.removeValue(forKey: sql) {
      block = filling
    } else {
      block = spare.popLast() ?? Block()
      block.sql = sql
      block.rows.configure(columns)
    }
    condition.unlock()
    // Only the caller's thread touches a block being filled: written without the lock.
    write(&block.rows)
    condition.lock()
    defer { condition.unlock() }
    if block.rows.rows >= rowsPerInsert {
      try enqueueLocked(block)
    } else {
      filling[sql] = block
    }
  }

  /// Sends everything added so far and waits until it is stored; throws the first failure.
  func flush() throws {
    condition.lock()
    defer { condition.unlock() }
    for block in filling.values.sorted(by: { $0.sql < $1.sql }) { try enqueueLocked(block) }
    filling.removeAll()
    while (!queue.isEmpty || sending) && failure == nil { condition.wait() }
    if let failure { throw failure }
  }

  /// Ends the worker once its queue is empty (the owner flushes first).
  func stop() {
    condition.lock()
    stopped = true
    spare.removeAll()
    condition.broadcast()
    condition.unlock()
  }

  private func enqueueLocked(_ block: Block) throws {
    while queue.count >= queueLimit && failure == nil { condition.wait() }
    if let failure { throw failure }
    queue.append(block)
    if worker == nil {
      let thread = Thread { [self] in run() }
      thread.name = "fathom-clickhouse-insert"
      worker = thread
      thread.start()
    }
    condition.broadcast()
  }

  private func run() {
    condition.lock()
    while true {
      while queue.isEmpty && !stopped { condition.wait() }
      if queue.isEmpty && stopped { break }
      let block = queue.removeFirst()
      sending = true
      condition.broadcast()
      condition.unlock()
      var error: (any Error)?
      body.removeAll()
      block.rows.write(to: &body)
      do {
        try body.withUnsafeBytes { try send(block.sql, $0) }
      } catch let failed { error = failed }
      block.rows.removeAll()
      condition.lock()
      sending = false
      if !stopped && spare.count < spareLimit { spare.append(block) }
      if let error, failure == nil { failure = error }
      if failure != nil { queue.removeAll() }
      condition.broadcast()
    }
    condition.unlock()
  }
}
