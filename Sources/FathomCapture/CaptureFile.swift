import CZlib

#if canImport(Glibc)
  import Glibc
#endif

/// A capture file (classic pcap in µs or ns, the modified-pcap variant, or pcapng; optionally
/// gzip-compressed), detected by content and read zero-copy from a memory map.
///
/// Files are parsed here rather than through libpcap because libpcap cannot report the interface
/// of a pcapng packet, refuses pcapng files whose interfaces have different link types, and copies
/// every record; see docs/architecture.md.
public final class CaptureFile {
  public let path: String
  public private(set) var interfaces: [CaptureInterface] = []
  public private(set) var counters = CaptureCounters()
  /// A problem that ended reading early (truncation, corruption), for the summary; nil when clean.
  public private(set) var warning: String?

  private let base: UnsafeRawPointer
  private let size: Int
  private let release: () -> Void
  private let format: Format
  /// True when `base` maps the file itself (not a decompressed copy).
  private let mappedFromFile: Bool
  /// Pages before this offset were handed back to the kernel.
  private var droppedUpTo = 0

  /// Decompressed gzip captures are held in memory; this bounds them.
  public static let maxDecompressedBytes = 4 << 30

  private enum Format {
    case pcap(swapped: Bool, nanos: Bool, recordHeaderSize: Int)
    case pcapng
  }

  /// Opens and validates the file header; throws `CaptureError` with a clear message.
  public init(path: String) throws {
    self.path = path
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw CaptureError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else {
      throw CaptureError.cannotOpen(path: path, reason: String(cString: strerror(errno)))
    }
    guard (info.st_mode & S_IFMT) == S_IFREG else {
      throw CaptureError.cannotOpen(path: path, reason: "not a regular file")
    }
    let fileSize = Int(info.st_size)
    guard fileSize > 0 else { throw CaptureError.emptyFile(path: path) }
    guard let mapped = mmap(nil, fileSize, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
      throw CaptureError.cannotOpen(path: path, reason: String(cString: strerror(errno)))
    }
    _ = madvise(mapped, fileSize, MADV_SEQUENTIAL)
    if fileSize >= 2, mapped.load(as: UInt8.self) == 0x1F, mapped.load(fromByteOffset: 1, as: UInt8.self) == 0x8B {
      munmap(mapped, fileSize)
      let (buffer, count) = try CaptureFile.gunzip(path: path)
      base = UnsafeRawPointer(buffer)
      size = count
      release = { buffer.deallocate() }
      mappedFromFile = false
    } else {
      base = UnsafeRawPointer(mapped)
      size = fileSize
      release = { munmap(mapped, fileSize) }
      mappedFromFile = true
    }
    do {
      format = try CaptureFile.detect(base: base, size: size, path: path)
    } catch {
      release()
      throw error
    }
  }

  deinit { release() }

  private static func detect(base: UnsafeRawPointer, size: Int, path: String) throws -> Format {
    guard size >= 4 else { throw CaptureError.truncatedHeader(path: path) }
    let magic = base.loadUnaligned(as: UInt32.self)
    switch magic {
    case 0xA1B2_C3D4: return .pcap(swapped: false, nanos: false, recordHeaderSize: 16)
    case 0xD4C3_B2A1: return .pcap(swapped: true, nanos: false, recordHeaderSize: 16)
    case 0xA1B2_3C4D: return .pcap(swapped: false, nanos: true, recordHeaderSize: 16)
    case 0x4D3C_B2A1: return .pcap(swapped: true, nanos: true, recordHeaderSize: 16)
    // Alexey Kuznetzov's modified pcap: 8 more bytes per record (ifindex, protocol, type).
    case 0xA1B2_CD34: return .pcap(swapped: false, nanos: false, recordHeaderSize: 24)
    case 0x34CD_B2A1: return .pcap(swapped: true, nanos: false, recordHeaderSize: 24)
    case 0x0A0D_0D0A: return .pcapng
    default: throw CaptureError.unknownFormat(path: path, magic: UInt32(bigEndian: magic))
    }
  }

  private static func gunzip(path: String) throws -> (UnsafeMutableRawPointer, Int) {
    guard let file = gzopen(path, "rb") else { throw CaptureError.cannotOpen(path: path, reason: "gzip open failed") }
    defer { gzclose(file) }
    var capacity = 1 << 20
    var buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    var count = 0
    while true {
      if count == capacity {
        guard capacity < maxDecompressedBytes else {
          buffer.deallocate()
          throw CaptureError.tooLarge(path: path, limit: maxDecompressedBytes)
        }
        let grown = UnsafeMutableRawPointer.allocate(byteCount: capacity * 2, alignment: 16)
        grown.copyMemory(from: buffer, byteCount: count)
        buffer.deallocate()
        buffer = grown
        capacity *= 2
      }
      let chunk = Int32(min(capacity - count, 1 << 30))
      let read = gzread(file, buffer + count, UInt32(chunk))
      if read < 0 {
        buffer.deallocate()
        throw CaptureError.corrupt(path: path, offset: count, reason: "gzip stream is damaged")
      }
      if read == 0 { break }
      count += Int(read)
    }
    guard count > 0 else {
      buffer.deallocate()
      throw CaptureError.emptyFile(path: path)
    }
    return (buffer, count)
  }

  /// Delivers every packet to `sink` in file order. Stops at the first structural corruption,
  /// recording it in `warning`; packets before it are delivered. `progress` gets the share of
  /// the file read (0...1) every `progressInterval` packets, and 1 at the end.
  public func read<Sink: PacketSink>(
    into sink: inout Sink, limit: UInt64 = .max, progress: (Double) -> Void = { _ in }
  ) {
    switch format {
    case .pcap(let swapped, let nanos, let recordHeaderSize):
      readPcap(
        into: &sink, swapped: swapped, nanos: nanos, recordHeaderSize: recordHeaderSize, limit: limit,
        progress: progress)
    case .pcapng:
      readPcapng(into: &sink, limit: limit, progress: progress)
    }
    progress(1)
  }

  /// Packets between two progress reports: a few per second at the reading rate.
  public static let progressInterval: UInt64 = 1 << 18

  // MARK: classic pcap

  private func readPcap<Sink: PacketSink>(
    into sink: inout Sink, swapped: Bool, nanos: Bool, recordHeaderSize: Int, limit: UInt64,
    progress: (Double) -> Void
  ) {
    guard size >= 24 else {
      warning = "file ends inside the pcap header"
      counters.truncatedRecords += 1
      return
    }
    @inline(__always) func u32(_ offset: Int) -> UInt32 {
      let raw = base.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
      return swapped ? raw.byteSwapped : raw
    }
    let snapLength = Int(u32(16))
    // The upper bits of the link type field carry FCS information (pcap spec, LinkType field).
    let linkType = u32(20) & 0x03FF_FFFF
    interfaces = [CaptureInterface(name: "", linkType: linkType, snapLength: snapLength)]
    let interfaceList = interfaces
    let subsecondScale: Int64 = nanos ? 1 : 1000
    var offset = 24
    while offset < size, counters.packets < limit {
      guard offset + recordHeaderSize <= size else {
        counters.truncatedRecords += 1
        warning = "file ends inside a record header at byte \(offset)"
        return
      }
      let seconds = Int64(u32(offset))
      let subseconds = Int64(u32(offset + 4))
      let captured = Int(u32(offset + 8))
      let wire = Int(u32(offset + 12))
      // A record longer than any real frame means a lying length field; nothing after it can be
      // trusted, because records are not self-synchronising.
      guard captured <= Self.maxRecordLength else {
        warning = "record at byte \(offset) claims \(captured) bytes (limit \(Self.maxRecordLength))"
        return
      }
      let dataStart = offset + recordHeaderSize
      guard dataStart + captured <= size else {
        counters.truncatedRecords += 1
        warning = "file ends inside the record at byte \(offset)"
        return
      }
      let header = PacketHeader(
        timestampNanos: seconds &* 1_000_000_000 &+ subseconds &* subsecondScale,
        capturedLength: captured, wireLength: max(wire, captured), interfaceIndex: 0, linkType: linkType)
      counters.packets += 1
      counters.bytes += UInt64(captured)
      sink.receive(header, UnsafeRawBufferPointer(start: base + dataStart, count: captured), interfaces: interfaceList)
      offset = dataStart + captured
      if counters.packets % Self.progressInterval == 0 { report(offset, progress) }
    }
  }

  /// Progress, and the pages already read handed back: the file is read once, front to back, so
  /// an hour-long capture does not stay resident (MADV_DONTNEED on a private, unwritten file
  /// mapping only drops pages; touching one again reads it back from the file).
  private func report(_ offset: Int, _ progress: (Double) -> Void) {
    progress(Double(offset) / Double(size))
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let end = offset / page * page
    guard mappedFromFile, end - droppedUpTo >= 16 << 20 else { return }
    _ = madvise(UnsafeMutableRawPointer(mutating: base + droppedUpTo), end - droppedUpTo, MADV_DONTNEED)
    droppedUpTo = end
  }

  /// Longest record accepted: above the 256 KiB snap length of tcpdump and of BIG TCP super-frames.
  public static let maxRecordLength = 1 << 20

  // MARK: pcapng

  private struct InterfaceClock {
    /// Units per second of the interface's timestamps, and whether the unit is a power of two.
    var unitsPerSecond: UInt64 = 1_000_000
    var binaryShift: UInt64? = nil
    var offsetSeconds: Int64 = 0

    func nanos(_ units: UInt64) -> Int64 {
      let whole: UInt64
      let fraction: UInt64
      if let shift = binaryShift {
        whole = units >> shift
        let remainder = units & ((1 << shift) - 1)
        fraction = UInt64((Double(remainder) / Double(UInt64(1) << shift)) * 1e9)
      } else {
        whole = units / unitsPerSecond
        let remainder = units % unitsPerSecond
        fraction =
          unitsPerSecond <= 1_000_000_000
          ? remainder * (1_000_000_000 / unitsPerSecond) : remainder / (unitsPerSecond / 1_000_000_000)
      }
      return (Int64(truncatingIfNeeded: whole) &+ offsetSeconds) &* 1_000_000_000 &+ Int64(fraction)
    }
  }

  private func readPcapng<Sink: PacketSink>(into sink: inout Sink, limit: UInt64, progress: (Double) -> Void) {
    var offset = 0
    var swapped = false
    var clocks: [InterfaceClock] = []
    var sectionFirstInterface = 0
    var interfaceList: [CaptureInterface] = []
    @inline(__always) func u32(_ at: Int) -> UInt32 {
      let raw = base.loadUnaligned(fromByteOffset: at, as: UInt32.self)
      return swapped ? raw.byteSwapped : raw
    }
    @inline(__always) func u16(_ at: Int) -> UInt16 {
      let raw = base.loadUnaligned(fromByteOffset: at, as: UInt16.self)
      return swapped ? raw.byteSwapped : raw
    }
    while offset < size, counters.packets < limit {
      guard offset + 12 <= size else {
        counters.truncatedRecords += 1
        warning = "file ends inside a block header at byte \(offset)"
        break
      }
      let rawType = base.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
      if rawType == 0x0A0D_0D0A {
        // Section header: its byte-order magic decides how every later block is read.
        let bom = base.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
        if bom == 0x1A2B_3C4D {
          swapped = false
        } else if bom == 0x4D3C_2B1A {
          swapped = true
        } else {
          warning = "section header at byte \(offset) has an unknown byte-order magic"
          break
        }
        sectionFirstInterface = clocks.count
      }
      let blockType = u32(offset)
      let blockLength = Int(u32(offset + 4))
      guard blockLength >= 12, blockLength % 4 == 0, blockLength <= size - offset else {
        if blockLength > size - offset { counters.truncatedRecords += 1 }
        warning = "block at byte \(offset) has an invalid length \(blockLength)"
        break
      }
      let body = offset + 8
      let bodyEnd = offset + blockLength - 4
      switch blockType {
      case 1 where bodyEnd - body >= 8:  // Interface Description Block
        let linkType = UInt32(u16(body))
        let snap = Int(u32(body + 4))
        var clock = InterfaceClock()
        var name = ""
        var option = body + 8
        while option + 4 <= bodyEnd {
          let code = u16(option)
          let length = Int(u16(option + 2))
          let value = option + 4
          if code == 0 || value + length > bodyEnd { break }
          if code == 2 {
            name = String(decoding: UnsafeRawBufferPointer(start: base + value, count: length), as: UTF8.self)
            if let nul = name.firstIndex(of: "\0") { name = String(name[..<nul]) }
          } else if code == 9, length >= 1 {
            let resolution = base.load(fromByteOffset: value, as: UInt8.self)
            let exponent = UInt64(resolution & 0x7F)
            if resolution & 0x80 != 0 {
              clock.binaryShift = min(exponent, 63)
            } else if exponent <= 19 {
              var units: UInt64 = 1
              for _ in 0..<exponent { units *= 10 }
              clock.unitsPerSecond = units
            }
          } else if code == 14, length >= 8 {
            let raw = base.loadUnaligned(fromByteOffset: value, as: Int64.self)
            clock.offsetSeconds = swapped ? raw.byteSwapped : raw
          }
          option = value + (length + 3) & ~3
        }
        clocks.append(clock)
        interfaceList.append(CaptureInterface(name: name, linkType: linkType, snapLength: snap))
        interfaces = interfaceList
      case 6 where bodyEnd - body >= 20, 2 where bodyEnd - body >= 20:  // Enhanced / obsolete Packet Block
        let interfaceID: Int
        if blockType == 6 {
          interfaceID = Int(u32(body))
        } else {
          interfaceID = Int(u16(body))
        }
        let units = UInt64(u32(body + 4)) << 32 | UInt64(u32(body + 8))
        let captured = Int(u32(body + 12))
        let wire = Int(u32(body + 16))
        let data = body + 20
        let index = sectionFirstInterface + interfaceID
        guard index < clocks.count, captured <= bodyEnd - data else {
          counters.skippedBlocks += 1
          break
        }
        deliver(
          &sink, at: data, captured: captured, wire: wire, timestamp: clocks[index].nanos(units),
          interface: index, interfaces: interfaceList)
        if counters.packets % Self.progressInterval == 0 { report(offset, progress) }
      case 3 where bodyEnd - body >= 4:  // Simple Packet Block: interface 0, no timestamp
        let wire = Int(u32(body))
        let captured = min(wire, bodyEnd - body - 4)
        guard sectionFirstInterface < clocks.count else {
          counters.skippedBlocks += 1
          break
        }
        deliver(
          &sink, at: body + 4, captured: captured, wire: wire, timestamp: 0, interface: sectionFirstInterface,
          interfaces: interfaceList)
      case 0x0A0D_0D0A, 4, 5, 0x8000_0001...0xFFFF_FFFF:
        break  // section header (handled above), name resolution, statistics, local blocks
      default:
        counters.skippedBlocks += 1
      }
      offset += blockLength
    }
  }

  @inline(__always)
  private func deliver<Sink: PacketSink>(
    _ sink: inout Sink, at data: Int, captured: Int, wire: Int, timestamp: Int64, interface: Int,
    interfaces: [CaptureInterface]
  ) {
    let header = PacketHeader(
      timestampNanos: timestamp, capturedLength: captured, wireLength: max(wire, captured),
      interfaceIndex: interface, linkType: interfaces[interface].linkType)
    counters.packets += 1
    counters.bytes += UInt64(captured)
    sink.receive(header, UnsafeRawBufferPointer(start: base + data, count: captured), interfaces: interfaces)
  }
}
