import FathomKube
import FathomRecords
import Foundation
import Testing

@testable import FathomAnalyze

/// The stream between the capture readers and the writer: a reader far ahead of the slowest one
/// waits; one that has ended no longer holds anyone back; a failure releases everyone.
@Suite struct IngestStreamTests {
  func flow(endSeconds: Int64) -> TaggedFlow {
    let micros = endSeconds * 1_000_000
    let flow = FlowLog(
      startMicros: micros, endMicros: micros, l4Protocol: .tcp, clientIP: IPAddress("10.0.0.1")!, clientPort: 1,
      serverIP: IPAddress("10.0.0.2")!, serverPort: 80)
    return TaggedFlow(flow: flow, tags: RecordTags())
  }

  /// Runs `body` on its own thread; true when it returned within `seconds`.
  func finishes(within seconds: Double, _ body: @escaping @Sendable () -> Void) -> Bool {
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      body()
      done.signal()
    }
    return done.wait(timeout: .now() + seconds) == .success
  }

  @Test func aReaderFarAheadWaitsForTheSlowestAndEndedOnesDoNotCount() {
    let stream = IngestStream(captures: 2, windowMicros: 10_000_000, leadMicros: 60_000_000, batchSize: 1)
    #expect(finishes(within: 2) { stream.deliver(capture: 0, flows: [flow(endSeconds: 100)], requests: []) } == false)
    // Capture 0 waits for capture 1 (no clock yet); once capture 1 is close behind, it goes on.
    let resumed = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      stream.deliver(capture: 1, flows: [flow(endSeconds: 90)], requests: [])
      resumed.signal()
    }
    #expect(resumed.wait(timeout: .now() + 2) == .success)
    // Capture 1 ends: capture 0 may run on alone, and far ahead.
    stream.end(capture: 1)
    #expect(finishes(within: 2) { stream.deliver(capture: 0, flows: [self.flow(endSeconds: 10_000)], requests: []) })
    stream.end(capture: 0)
    var records = 0
    while let batch = stream.next() { records += batch.count }
    #expect(records == 3)
  }

  @Test func aFailureReleasesReadersAndTheWriter() {
    let stream = IngestStream(captures: 2)
    let waiting = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      stream.deliver(capture: 0, flows: [self.flow(endSeconds: 100)], requests: [])
      waiting.signal()
    }
    #expect(waiting.wait(timeout: .now() + 0.5) == .timedOut)
    stream.fail(CocoaError(.fileReadUnknown))
    #expect(waiting.wait(timeout: .now() + 2) == .success)
    #expect(stream.next() == nil)
  }
}

extension IngestStream.Batch: Equatable {
  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.capture == rhs.capture && lhs.count == rhs.count }
}
