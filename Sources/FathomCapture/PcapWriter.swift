#if canImport(Glibc)
  import Glibc
#endif

/// Writes a classic nanosecond pcap file, buffered; one link type per file as the format requires.
public final class PcapWriter {
  private let fd: Int32
  private var buffer: [UInt8] = []
  public let path: String

  public init(path: String, linkType: UInt32, snapLength: Int) throws {
    self.path = path
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw CaptureError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
    buffer.reserveCapacity(1 << 20)
    append32(0xA1B2_3C4D)
    append16(2)
    append16(4)
    append32(0)
    append32(0)
    append32(UInt32(snapLength))
    append32(linkType)
  }

  deinit { close() }

  public func write(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer) {
    append32(UInt32(truncatingIfNeeded: header.timestampNanos / 1_000_000_000))
    append32(UInt32(truncatingIfNeeded: header.timestampNanos % 1_000_000_000))
    append32(UInt32(bytes.count))
    append32(UInt32(header.wireLength))
    buffer.append(contentsOf: bytes)
    if buffer.count >= 1 << 20 { flush() }
  }

  public func flush() {
    buffer.withUnsafeBytes { raw in
      var offset = 0
      while offset < raw.count {
        let written = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
        if written <= 0 { return }
        offset += written
      }
    }
    buffer.removeAll(keepingCapacity: true)
  }

  private var closed = false
  public func close() {
    guard !closed else { return }
    closed = true
    flush()
    _ = Glibc.close(fd)
  }

  private func append32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) } }
  private func append16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) } }
}
