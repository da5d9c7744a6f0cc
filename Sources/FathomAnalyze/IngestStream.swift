import FathomKube
import Foundation

/// The tagged records of several captures read at once, on their way to the store: linked across
/// DNAT while they are in a moving window, then handed to the writer in batches.
///
/// Memory is bounded by time, not by the length of the captures. A record is held until every
/// capture's clock has passed its emission by `windowMicros` (its partner on another capture is
/// emitted at about the same capture time, since both sides see the same connection end); a
/// capture more than `leadMicros` ahead of the slowest one waits, so one fast reader does not fill
/// memory with records that cannot be released yet; and at most `maximumQueued` released records
/// wait for the writer before the readers wait for it.
///
/// Each capture's clock is the latest record time it has delivered (its packets' clock lags by
/// at most the time since its last record). A capture that has delivered nothing yet holds the
/// window back; a finished capture no longer does.
final class IngestStream: @unchecked Sendable {
  struct Batch {
    var capture: Int
    var flows: [TaggedFlow] = []
    var requests: [TaggedRequest] = []
    var count: Int { flows.count + requests.count }
  }

  let windowMicros: Int64
  let leadMicros: Int64
  let maximumQueued: Int
  let batchSize: Int

  private let condition = NSCondition()
  private var clocks: [Int64?]
  private var ended: [Bool]
  private var flowLinker = DNATLinker<TaggedFlow>.flows()
  private var requestLinker = DNATLinker<TaggedRequest>.requests()
  /// Released records gathered per capture until a batch is full.
  private var gathering: [Batch]
  private var queue: [Batch] = []
  private var queued = 0
  private var failure: (any Error)?
  /// The most records held in the window at once, for the notes.
  private(set) var peakHeld = 0

  init(
    captures: Int, windowMicros: Int64 = 360_000_000, leadMicros: Int64 = 60_000_000,
    maximumQueued: Int = 50_000, batchSize: Int = 10_000
  ) {
    self.windowMicros = windowMicros
    self.leadMicros = leadMicros
    self.maximumQueued = maximumQueued
    self.batchSize = batchSize
    clocks = Array(repeating: nil, count: captures)
    ended = Array(repeating: false, count: captures)
    gathering = (0..<captures).map { Batch(capture: $0) }
  }

  /// Called on a capture's reading thread with records it just tagged; may wait (see the type).
  func deliver(capture: Int, flows: [TaggedFlow], requests: [TaggedRequest]) {
    condition.lock()
    defer { condition.unlock() }
    guard failure == nil else { return }
    let (queuedBefore, watermarkBefore) = (queue.count, watermark)
    var clock = clocks[capture] ?? .min
    for flow in flows { clock = max(clock, flow.flow.endMicros) }
    for request in requests { clock = max(clock, request.request.endMicros) }
    clocks[capture] = clock
    for flow in flows { flowLinker.add(flow, source: capture, stamp: clock) }
    for request in requests { requestLinker.add(request, source: capture, stamp: clock) }
    peakHeld = max(peakHeld, flowLinker.count + requestLinker.count)
    releaseReady()
    // Wake the others only for what they wait on (a batch for the writer, a moved watermark for
    // readers ahead): a wake-up per delivery cost a short analysis a quarter of its time.
    if queue.count != queuedBefore || watermark != watermarkBefore { condition.broadcast() }
    while failure == nil, queued > maximumQueued || clock > watermark.addingClamped(leadMicros) {
      condition.wait()
    }
  }

  /// A capture was read to its end (or failed): it no longer holds the window back.
  func end(capture: Int) {
    condition.withLock {
      ended[capture] = true
      releaseReady()
      condition.broadcast()
    }
  }

  /// Stops everything: readers stop waiting and drop what they deliver, the writer gets nil.
  func fail(_ error: any Error) {
    condition.withLock {
      if failure == nil { failure = error }
      condition.broadcast()
    }
  }

  /// The writer's next batch; nil once every capture ended and every record was handed out, or
  /// after a failure.
  func next() -> Batch? {
    condition.lock()
    defer { condition.unlock() }
    while failure == nil {
      if !queue.isEmpty {
        let batch = queue.removeFirst()
        queued -= batch.count
        condition.broadcast()
        return batch
      }
      if ended.allSatisfy({ $0 }) { return nil }
      condition.wait()
    }
    return nil
  }

  /// The slowest unfinished capture's clock; `.max` when all ended.
  private var watermark: Int64 {
    var lowest = Int64.max
    for (clock, done) in zip(clocks, ended) where !done { lowest = min(lowest, clock ?? .min) }
    return lowest
  }

  private func releaseReady() {
    let allEnded = ended.allSatisfy { $0 }
    let mark = watermark
    if allEnded {
      flowLinker.releaseAll { gather(capture: $0, flow: $1) }
      requestLinker.releaseAll { gather(capture: $0, request: $1) }
    } else if mark != .min {
      let before = mark.addingClamped(-windowMicros)
      flowLinker.release(before: before) { gather(capture: $0, flow: $1) }
      requestLinker.release(before: before) { gather(capture: $0, request: $1) }
    }
    if allEnded {
      for capture in gathering.indices where gathering[capture].count > 0 { enqueue(capture) }
    }
  }

  private func gather(capture: Int, flow: TaggedFlow) {
    gathering[capture].flows.append(flow)
    if gathering[capture].count >= batchSize { enqueue(capture) }
  }

  private func gather(capture: Int, request: TaggedRequest) {
    gathering[capture].requests.append(request)
    if gathering[capture].count >= batchSize { enqueue(capture) }
  }

  private func enqueue(_ capture: Int) {
    queued += gathering[capture].count
    queue.append(gathering[capture])
    gathering[capture] = Batch(capture: capture)
  }
}

extension Int64 {
  /// Addition that stops at the ends instead of trapping (clocks use .min and .max as "none").
  func addingClamped(_ other: Int64) -> Int64 {
    let (sum, overflow) = addingReportingOverflow(other)
    return overflow ? (other > 0 ? .max : .min) : sum
  }
}
