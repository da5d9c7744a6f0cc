/// Writes live packets to a pcap file, opened with the link type of the first packet.
public struct PcapFileSink: PacketSink {
  let path: String
  let snapLength: Int
  var writer: PcapWriter?
  var error: Error?

  public init(path: String, snapLength: Int) {
    self.path = path
    self.snapLength = snapLength
  }

  public mutating func receive(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer, interfaces: [CaptureInterface])
  {
    if writer == nil && error == nil {
      do {
        writer = try PcapWriter(path: path, linkType: header.linkType, snapLength: snapLength)
      } catch {
        self.error = error
      }
    }
    writer?.write(header, bytes)
  }

  /// Closes the file; a capture without packets still leaves a valid, empty pcap behind.
  public mutating func finish(linkType: UInt32) throws {
    if let error { throw error }
    if writer == nil { writer = try PcapWriter(path: path, linkType: linkType, snapLength: snapLength) }
    writer?.close()
  }
}
