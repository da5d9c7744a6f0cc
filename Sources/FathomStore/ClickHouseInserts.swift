import Foundation

/// Inserts into ClickHouse gathered per statement into large blocks, sent by one background
/// thread while the caller builds the next block.
///
/// ClickHouse makes one part per insert and merges parts later, so small inserts cost it far
/// more: 1M requests in 10,000-row inserts took 12 s of server CPU, in 100,000-row inserts 3.8 s
/// (store-bench, single server). Sending in the caller's thread also left the client and the
/// server waiting for each other. Memory stays bounded: one block per statement being filled,
/// at most `queueLimit` blocks waiting. A failed insert (after `execute`'s bounded retries) is
/// kept and thrown by every later `add` and `flush`: a batch is never silently missing.
final class InsertPipeline: @unchecked Sendable {
  private struct Block {
    var sql: String
    var body = Data()
    var rows = 0
  }

  /// Set once by the owner before the first `add`.
  var send: (String, Data) throws -> Void = { _, _ in }
  private let rowsPerInsert: Int
  private let queueLimit = 2
  private let condition = NSCondition()
  /// Blocks being filled, by statement.
  private var filling: [String: Block] = [:]
  private var queue: [Block] = []
  private var sending = false
  private var failure: (any Error)?
  private var stopped = false
  private var worker: Thread?

  init(rowsPerInsert: Int) { self.rowsPerInsert = rowsPerInsert }

  /// Adds `rows` rows (`body`, in the statement's format) to the statement's block; a full
  /// block is queued for sending, waiting while the queue is full.
  func add(sql: String, body: Data, rows: Int) throws {
    condition.lock()
    defer { condition.unlock() }
    if let failure { throw failure }
    var block = filling.removeValue(forKey: sql) ?? Block(sql: sql)
    block.body.append(body)
    block.rows += rows
    if block.rows >= rowsPerInsert {
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
      do { try send(block.sql, block.body) } catch let failed { error = failed }
      condition.lock()
      sending = false
      if let error, failure == nil { failure = error }
      if failure != nil { queue.removeAll() }
      condition.broadcast()
    }
    condition.unlock()
  }
}
