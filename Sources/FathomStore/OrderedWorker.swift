import Foundation

/// Runs jobs in the order given on one background thread, so a store's writing overlaps the
/// caller's next batch: the ClickHouse store's sending and the SQLite store's inserts. Bounded:
/// `enqueue` waits while `limit` jobs wait. A failed job's error is kept, the jobs after it are
/// dropped, and every later `enqueue`, `check` and `flush` throws it: a batch is never silently
/// missing.
final class OrderedWorker: @unchecked Sendable {
  typealias Job = @Sendable () throws -> Void
  private let name: String
  private let limit: Int
  private let condition = NSCondition()
  private var jobs: [Job] = []
  /// Jobs being run, by the worker or by a caller in `drain`.
  private var busy = 0
  private var stopped = false
  private var failure: (any Error)?
  private var thread: Thread?

  init(name: String, limit: Int = 2) {
    self.name = name
    self.limit = limit
  }

  func enqueue(_ job: @escaping Job) throws {
    condition.lock()
    defer { condition.unlock() }
    while jobs.count >= limit && failure == nil { condition.wait() }
    if let failure { throw failure }
    jobs.append(job)
    startIfNeeded()
    condition.broadcast()
  }

  /// Adds `extra` past the limit, then runs waiting jobs on the caller's thread beside the
  /// worker's until every job is done; throws the first failure. Out of order: only for jobs
  /// that commute (independent ClickHouse inserts, each a core's work on the server), where the
  /// caller would otherwise wait for the last few one after another.
  func drain(adding extra: [Job]) throws {
    condition.lock()
    defer { condition.unlock() }
    if failure == nil {
      jobs.append(contentsOf: extra)
      startIfNeeded()
      condition.broadcast()
    }
    while failure == nil {
      if !jobs.isEmpty {
        perform(jobs.removeFirst())
      } else if busy > 0 {
        condition.wait()
      } else {
        break
      }
    }
    if let failure {
      jobs.removeAll()
      throw failure
    }
  }

  /// Called with the lock held.
  private func startIfNeeded() {
    if thread == nil {
      let thread = Thread { [self] in run() }
      thread.name = name
      self.thread = thread
      thread.start()
    }
  }

  /// Throws the first failure so far, if any, without waiting.
  func check() throws {
    condition.lock()
    defer { condition.unlock() }
    if let failure { throw failure }
  }

  /// Waits until every job so far is done; throws the first failure.
  func flush() throws {
    condition.lock()
    defer { condition.unlock() }
    while (!jobs.isEmpty || busy > 0) && failure == nil { condition.wait() }
    if let failure { throw failure }
  }

  /// Ends the thread once its jobs are done (the owner flushes first).
  func stop() {
    condition.lock()
    stopped = true
    condition.broadcast()
    condition.unlock()
  }

  private func run() {
    condition.lock()
    while true {
      while jobs.isEmpty && !stopped { condition.wait() }
      if jobs.isEmpty && stopped { break }
      perform(jobs.removeFirst())
      if failure != nil { jobs.removeAll() }
    }
    condition.unlock()
  }

  /// Runs `job` (just taken out of `jobs`) with the lock released (called with it held), counted
  /// in `busy`; keeps the first failure.
  private func perform(_ job: Job) {
    busy += 1
    condition.broadcast()  // a job taken out: room for `enqueue`
    condition.unlock()
    var error: (any Error)?
    do { try job() } catch let failed { error = failed }
    condition.lock()
    busy -= 1
    if let error, failure == nil { failure = error }
    condition.broadcast()
  }
}
