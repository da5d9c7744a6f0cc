import FathomCapture

#if canImport(Glibc)
  import Glibc
#endif

/// Writes a live capture to a pcap file on a dedicated thread (so `--netns` stays on that thread).
final class CaptureToFile: @unchecked Sendable {
  let live: LiveCapture
  let path: String
  let snapLength: Int
  var error: Error?

  init(live: LiveCapture, path: String, snapLength: Int) {
    self.live = live
    self.path = path
    self.snapLength = snapLength
  }

  struct WriterSink: PacketSink {
    let path: String
    let snapLength: Int
    var writer: PcapWriter?
    var error: Error?

    mutating func receive(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer, interfaces: [CaptureInterface]) {
      if writer == nil && error == nil {
        do {
          writer = try PcapWriter(path: path, linkType: header.linkType, snapLength: snapLength)
        } catch {
          self.error = error
          return
        }
      }
      writer?.write(header, bytes)
    }
  }

  func run() throws {
    var thread = pthread_t()
    let unmanaged = Unmanaged.passRetained(self)
    let created = pthread_create(
      &thread, nil,
      { raw in
        let box = Unmanaged<CaptureToFile>.fromOpaque(raw!).takeRetainedValue()
        var sink = WriterSink(path: box.path, snapLength: box.snapLength)
        do {
          try box.live.run(into: &sink)
        } catch {
          box.error = error
        }
        if let error = sink.error { box.error = error }
        if sink.writer == nil && box.error == nil {
          // No packet arrived: still leave a valid, empty capture behind.
          sink.writer = try? PcapWriter(path: box.path, linkType: 1, snapLength: box.snapLength)
        }
        sink.writer?.close()
        return nil
      }, unmanaged.toOpaque())
    guard created == 0 else {
      unmanaged.release()
      throw CaptureError.live("cannot start the capture thread")
    }
    pthread_join(thread, nil)
    if let error { throw error }
  }
}
