/// Metadata of one captured frame; the bytes themselves stay in the source's buffer.
public struct PacketHeader: Sendable {
  /// Capture time in nanoseconds since the Unix epoch.
  public var timestampNanos: Int64
  /// Bytes present in the capture (may be fewer than on the wire when cut by the snap length).
  public var capturedLength: Int
  /// Length of the frame on the wire.
  public var wireLength: Int
  /// Index of the interface in `CaptureSource.interfaces`.
  public var interfaceIndex: Int
  /// LINKTYPE_* value of the frame's first header.
  public var linkType: UInt32

  public init(timestampNanos: Int64, capturedLength: Int, wireLength: Int, interfaceIndex: Int, linkType: UInt32) {
    self.timestampNanos = timestampNanos
    self.capturedLength = capturedLength
    self.wireLength = wireLength
    self.interfaceIndex = interfaceIndex
    self.linkType = linkType
  }
}

/// An interface a capture was taken on.
public struct CaptureInterface: Sendable, Equatable {
  /// Interface name ("" when the source does not record one).
  public var name: String
  public var linkType: UInt32
  public var snapLength: Int
  /// Network namespace the capture ran in ("" for the current one or unknown).
  public var netns: String
  /// A live capture on this machine (interface indexes can be named), not a file.
  public var live: Bool

  public init(name: String, linkType: UInt32, snapLength: Int, netns: String = "", live: Bool = false) {
    self.name = name
    self.linkType = linkType
    self.snapLength = snapLength
    self.netns = netns
    self.live = live
  }
}

/// Receives packets from a capture source. Generic rather than a closure so the per-packet call is
/// specialised and inlined, with no allocation.
public protocol PacketSink {
  /// Called once per frame; `bytes` is valid only during the call.
  mutating func receive(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer, interfaces: [CaptureInterface])
}

/// Errors that stop a capture source, each with a message a user can act on.
public enum CaptureError: Error, CustomStringConvertible, Equatable {
  case cannotOpen(path: String, reason: String)
  case emptyFile(path: String)
  case unknownFormat(path: String, magic: UInt32)
  case truncatedHeader(path: String)
  case corrupt(path: String, offset: Int, reason: String)
  case tooLarge(path: String, limit: Int)
  case live(String)
  case filter(expression: String, reason: String)

  public var description: String {
    switch self {
    case .cannotOpen(let path, let reason): "\(path): cannot open: \(reason)"
    case .emptyFile(let path): "\(path): empty file, not a capture"
    case .unknownFormat(let path, let magic):
      "\(path): not a pcap or pcapng capture (magic 0x\(String(magic, radix: 16)))"
    case .truncatedHeader(let path): "\(path): file ends inside the capture's header"
    case .corrupt(let path, let offset, let reason): "\(path): corrupt at byte \(offset): \(reason)"
    case .tooLarge(let path, let limit): "\(path): decompressed capture exceeds \(limit) bytes"
    case .live(let message): message
    case .filter(let expression, let reason): "filter \"\(expression)\": \(reason)"
    }
  }
}

/// What a capture source noticed about its own input, reported with the summary.
public struct CaptureCounters: Sendable, Equatable {
  public var packets: UInt64 = 0
  public var bytes: UInt64 = 0
  /// The file ended in the middle of a record.
  public var truncatedRecords: UInt64 = 0
  /// Blocks of a pcapng file that were skipped (unknown types, bad lengths in a known block).
  public var skippedBlocks: UInt64 = 0
  /// Packets dropped by the kernel or interface during a live capture.
  public var kernelDrops: UInt64 = 0
  /// Packets rejected by the BPF filter.
  public var filteredOut: UInt64 = 0

  public init() {}
}
