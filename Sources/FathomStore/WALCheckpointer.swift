import Foundation
import GRDBSQLite

/// Copies the WAL's frames back into the database file on a thread of its own, so the writer
/// goes on inserting meanwhile. SQLite's automatic checkpoint runs inside the writer's commit:
/// store-bench's writer thread is the ingest's bottleneck, and without checkpoints it stored
/// 18–26% more records a second (docs/storage.md).
///
/// SQLite starts the WAL over only at a write transaction that finds every frame copied. A
/// background checkpoint never gets there against a writer that never pauses (tried: the WAL
/// grew to the database's size), so the writer, once the WAL holds `limitFrames`, copies what
/// the background passes left (the frames of the last pass's length) itself, and its next
/// transaction starts the WAL over. The writer's connection reports its commits through the
/// WAL hook (`install(on:)`), which replaces SQLite's automatic checkpoint.
final class WALCheckpointer: @unchecked Sendable {
  /// A background pass starts once this many frames wait to be copied.
  let passFrames: Int32
  /// The writer copies the rest itself at this many frames in the WAL.
  let limitFrames: Int32
  private let path: String
  private let condition = NSCondition()
  /// Frames in the WAL at the writer's last commit (fewer at the next: the WAL started over).
  private var pending: Int32 = 0
  /// Frames copied by the last completed pass, of the WAL as it was then.
  private var copied: Int32 = 0
  private var running = false
  /// The background's connection could not be opened: the writer's share alone bounds the WAL.
  private var unopenable = false
  private var passes = 0
  private var writerCheckpoints = 0
  private var requested = false
  private var stopped = false
  private var finished = false
  private var thread: Thread?
  /// The writer connection reporting its commits.
  private var installedOn: OpaquePointer?
  /// The background's own connection, opened at its first pass.
  private var connection: OpaquePointer?

  /// Thresholds in WAL frames; SQLiteStore's, 1,024 and 8,192 frames of 32 KiB pages: a pass
  /// per 32 MiB of new WAL, the writer's share at 256 MiB.
  init(path: String, passFrames: Int32, limitFrames: Int32) {
    self.path = path
    self.passFrames = passFrames
    self.limitFrames = limitFrames
  }

  /// Reports the writer connection's commits to this checkpointer (instead of SQLite's
  /// automatic checkpoint, which the WAL hook replaces). The connection holds a reference
  /// until `uninstall(from:)`.
  func install(on db: OpaquePointer) {
    condition.lock()
    installedOn = db
    condition.unlock()
    sqlite3_wal_hook(
      db,
      { context, db, _, frames in
        Unmanaged<WALCheckpointer>.fromOpaque(context!).takeUnretainedValue().committed(frames: frames, db: db!)
        return SQLITE_OK
      }, Unmanaged.passRetained(self).toOpaque())
  }

  /// Stops the reports of `install(on:)`, if it was called for this connection.
  func uninstall(from db: OpaquePointer) {
    condition.lock()
    let installed = installedOn == db
    if installed { installedOn = nil }
    condition.unlock()
    guard installed else { return }
    sqlite3_wal_hook(db, nil, nil)
    Unmanaged.passUnretained(self).release()
  }

  /// The writer's thread, after a commit (its write lock released), with the WAL's frame count.
  private func committed(frames: Int32, db: OpaquePointer) {
    condition.lock()
    // A smaller count than before: the WAL started over.
    if frames < pending { copied = 0 }
    pending = frames
    if frames >= limitFrames {
      while running { condition.wait() }
      writerCheckpoints += 1
      condition.unlock()
      // Every frame copied (unless a reader holds an older snapshot; the ingest has none), so the
      // next write transaction starts the WAL over.
      _ = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
      return
    }
    if !running && !unopenable && frames - copied >= passFrames {
      requested = true
      startIfNeeded()
      condition.broadcast()
    }
    condition.unlock()
  }

  private func startIfNeeded() {
    guard thread == nil else { return }
    let thread = Thread { [self] in run() }
    thread.name = "fathom-sqlite-checkpoint"
    self.thread = thread
    thread.start()
  }

  private func run() {
    condition.lock()
    while true {
      while !requested && !stopped { condition.wait() }
      if stopped { break }
      requested = false
      running = true
      condition.unlock()
      let done = pass()
      condition.lock()
      running = false
      if let done {
        copied = done
        passes += 1
      }
      condition.broadcast()
    }
    if let connection { sqlite3_close_v2(connection) }
    connection = nil
    finished = true
    condition.broadcast()
    condition.unlock()
  }

  /// One passive checkpoint on the background's connection: the frames it copied, or nil
  /// when it could not run (another checkpoint, or the file not openable).
  private func pass() -> Int32? {
    if connection == nil {
      var opened: OpaquePointer?
      // A connection finds the WAL when it first reads; until then a checkpoint does nothing.
      guard sqlite3_open_v2(path, &opened, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK,
        sqlite3_exec(opened, "PRAGMA schema_version", nil, nil, nil) == SQLITE_OK
      else {
        sqlite3_close_v2(opened)
        condition.lock()
        unopenable = true
        condition.unlock()
        return nil
      }
      connection = opened
    }
    var log: Int32 = 0
    var done: Int32 = 0
    guard sqlite3_wal_checkpoint_v2(connection, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &done) == SQLITE_OK else {
      return nil
    }
    return done
  }

  /// Background passes completed, and checkpoints the writer made at the limit.
  var counts: (passes: Int, writer: Int) {
    condition.lock()
    defer { condition.unlock() }
    return (passes, writerCheckpoints)
  }

  /// Ends the thread after its pass in progress and closes its connection; the store calls it
  /// when its writes are done.
  func stop() {
    condition.lock()
    stopped = true
    condition.broadcast()
    while thread != nil && !finished { condition.wait() }
    condition.unlock()
  }
}
