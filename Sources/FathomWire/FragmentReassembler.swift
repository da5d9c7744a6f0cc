import FathomRecords

/// Reassembles IPv4 and IPv6 fragments into whole datagrams, with explicit bounds: at most
/// `maxDatagrams` in progress, each at most 65,535 bytes, each given up after `timeoutNanos`.
/// Fragments of abandoned datagrams are counted as dropped, never silently lost.
final class FragmentReassembler {
  struct Key: Hashable {
    var source: IPAddress
    var destination: IPAddress
    var identification: UInt32
    var ipProtocol: UInt8
  }

  private struct Datagram {
    var bytes: [UInt8]
    /// Received byte ranges, sorted and merged.
    var ranges: [Range<Int>] = []
    var totalLength: Int?
    var l3Bytes = 0
    var frameBytes = 0
    var frames = 0
    var firstSeen: Int64
  }

  enum Outcome {
    case held
    /// The datagram is whole: `length` bytes of transport header and payload are in `output`.
    case complete(length: Int, l3Bytes: Int, frames: Int, frameBytes: Int)
    case invalid
  }

  static let maxDatagramBytes = 65_535
  var maxDatagrams = 256
  var timeoutNanos: Int64 = 30_000_000_000
  private var pending: [Key: Datagram] = [:]
  private(set) var droppedFragments: UInt64 = 0
  /// Holds the last completed datagram; reused, so valid until the next completion.
  let output = UnsafeMutableRawBufferPointer.allocate(byteCount: maxDatagramBytes, alignment: 16)

  deinit { output.deallocate() }

  func add(
    _ key: Key, offset: Int, more: Bool, data: UnsafeRawBufferPointer, l3Bytes: Int, frameBytes: Int, now: Int64
  ) -> Outcome {
    let end = offset + data.count
    guard end <= Self.maxDatagramBytes, data.count > 0 || !more else { return .invalid }
    if pending[key] == nil {
      expire(now: now)
      if pending.count >= maxDatagrams, let oldest = pending.min(by: { $0.value.firstSeen < $1.value.firstSeen }) {
        droppedFragments += UInt64(oldest.value.frames)
        pending[oldest.key] = nil
      }
      pending[key] = Datagram(bytes: [], firstSeen: now)
    }
    var datagram = pending.removeValue(forKey: key)!
    if datagram.bytes.count < end {
      datagram.bytes.append(contentsOf: repeatElement(0, count: end - datagram.bytes.count))
    }
    datagram.bytes.withUnsafeMutableBytes { target in
      if data.count > 0 { (target.baseAddress! + offset).copyMemory(from: data.baseAddress!, byteCount: data.count) }
    }
    datagram.frames += 1
    datagram.l3Bytes += l3Bytes
    datagram.frameBytes += frameBytes
    if !more { datagram.totalLength = end }
    insert(offset..<end, into: &datagram.ranges)
    if let total = datagram.totalLength, datagram.ranges.count == 1, datagram.ranges[0] == 0..<total {
      datagram.bytes.withUnsafeBytes { source in
        if total > 0 { output.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: total) }
      }
      return .complete(
        length: total, l3Bytes: datagram.l3Bytes, frames: datagram.frames, frameBytes: datagram.frameBytes)
    }
    pending[key] = datagram
    return .held
  }

  private func insert(_ range: Range<Int>, into ranges: inout [Range<Int>]) {
    guard !range.isEmpty else { return }
    var merged = range
    var kept: [Range<Int>] = []
    for existing in ranges {
      if existing.upperBound < merged.lowerBound || existing.lowerBound > merged.upperBound {
        kept.append(existing)
      } else {
        merged = min(existing.lowerBound, merged.lowerBound)..<max(existing.upperBound, merged.upperBound)
      }
    }
    kept.append(merged)
    kept.sort { $0.lowerBound < $1.lowerBound }
    ranges = kept
  }

  /// Drops datagrams older than the timeout.
  func expire(now: Int64) {
    guard !pending.isEmpty else { return }
    for (key, datagram) in pending where now - datagram.firstSeen > timeoutNanos {
      droppedFragments += UInt64(datagram.frames)
      pending[key] = nil
    }
  }

  /// Counts every incomplete datagram as dropped (end of input).
  func finish() {
    for datagram in pending.values { droppedFragments += UInt64(datagram.frames) }
    pending.removeAll()
  }
}
