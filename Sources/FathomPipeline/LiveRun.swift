import FathomCapture
import FathomFlows
import FathomWire

#if canImport(Glibc)
  import Glibc
#endif

/// Runs a live capture and its flow stage on a dedicated POSIX thread.
final class LiveRunBox: @unchecked Sendable {
  var stage: FlowStage
  let live: LiveCapture
  var counters = (WireCounters(), FlowCounters())
  var error: Error?

  init(stage: FlowStage, live: LiveCapture) {
    self.stage = stage
    self.live = live
  }

  func runOnDedicatedThread() throws {
    var thread = pthread_t()
    let unmanaged = Unmanaged.passRetained(self)
    let created = pthread_create(
      &thread, nil,
      { raw in
        let box = Unmanaged<LiveRunBox>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
      }, unmanaged.toOpaque())
    guard created == 0 else {
      unmanaged.release()
      throw CaptureError.live("cannot start the capture thread: \(String(cString: strerror(created)))")
    }
    pthread_join(thread, nil)
    if let error { throw error }
  }

  private func body() {
    do {
      try live.run(into: &stage)
    } catch {
      self.error = error
    }
    counters = stage.finish()
  }
}
