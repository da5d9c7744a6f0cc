import CNetns
import CPcap
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Options of a live capture.
public struct LiveCaptureOptions: Sendable {
  /// Interface name, or "any" for every interface (Linux cooked SLL2 headers).
  public var interface: String
  /// Named network namespace (`ip netns` name) to capture in; entered with setns on the capture
  /// thread only.
  public var netns: String?
  public var snapLength: Int = 262_144
  public var filter: String?
  /// Stop after this many seconds (nil: until interrupted).
  public var duration: Double?
  /// Stop after this many packets (nil: no limit).
  public var packetLimit: UInt64?
  public var promiscuous = false
  public var bufferBytes = 32 << 20

  public init(interface: String) { self.interface = interface }
}

/// A live capture through libpcap on one interface or `any`, optionally inside a network namespace.
///
/// `run` blocks the calling thread; the CLI calls it on a dedicated thread so that `setns` affects
/// only that thread.
public final class LiveCapture: @unchecked Sendable {
  public let options: LiveCaptureOptions
  public private(set) var counters = CaptureCounters()
  private var handle: OpaquePointer?
  private let stopping = Atomic<Bool>(false)
  private let capturing = Atomic<Bool>(false)

  /// True once the interface is open with its filter set: packets from then on are captured.
  public var isCapturing: Bool { capturing.load(ordering: .acquiring) }

  public init(options: LiveCaptureOptions) { self.options = options }

  /// Enters the namespace (if any), opens the interface and delivers packets until the duration,
  /// packet limit or `stop()` ends the capture.
  public func run<Sink: PacketSink>(into sink: inout Sink) throws {
    if let netns = options.netns { try LiveCapture.enterNetworkNamespace(netns) }
    var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
    guard let pcap = pcap_create(options.interface, &errorBuffer) else {
      throw CaptureError.live("\(options.interface): \(cString(errorBuffer))")
    }
    handle = pcap
    defer {
      pcap_close(pcap)
      handle = nil
    }
    _ = pcap_set_snaplen(pcap, Int32(options.snapLength))
    pcap_set_promisc(pcap, options.promiscuous ? 1 : 0)
    pcap_set_timeout(pcap, 100)
    pcap_set_immediate_mode(pcap, 1)
    pcap_set_buffer_size(pcap, Int32(options.bufferBytes))
    _ = pcap_set_tstamp_precision(pcap, Int32(PCAP_TSTAMP_PRECISION_NANO))
    let status = pcap_activate(pcap)
    if status < 0 {
      let message = String(cString: pcap_geterr(pcap))
      let hint = status == PCAP_ERROR_PERM_DENIED ? " (live capture needs root or CAP_NET_RAW)" : ""
      throw CaptureError.live("\(options.interface): cannot start capture: \(message)\(hint)")
    }
    if options.interface == "any" { _ = pcap_set_datalink(pcap, 276) }  // SLL2 carries the ifindex
    if let expression = options.filter {
      var program = bpf_program()
      guard pcap_compile(pcap, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
        throw CaptureError.filter(expression: expression, reason: String(cString: pcap_geterr(pcap)))
      }
      defer { pcap_freecode(&program) }
      guard pcap_setfilter(pcap, &program) == 0 else {
        throw CaptureError.filter(expression: expression, reason: String(cString: pcap_geterr(pcap)))
      }
    }
    let linkType = UInt32(pcap_datalink(pcap))
    let interfaces = [
      CaptureInterface(
        name: options.interface, linkType: linkType, snapLength: options.snapLength, netns: options.netns ?? "",
        live: true)
    ]
    let precisionNanos = pcap_get_tstamp_precision(pcap) == Int32(PCAP_TSTAMP_PRECISION_NANO)
    // libpcap's own read timeout can block indefinitely on Linux when no packet arrives, so the
    // loop polls the descriptor itself (100 ms) and drains it without blocking.
    guard pcap_setnonblock(pcap, 1, &errorBuffer) == 0 else {
      throw CaptureError.live("\(options.interface): cannot switch to non-blocking reads: \(cString(errorBuffer))")
    }
    let descriptor = pcap_get_selectable_fd(pcap)
    capturing.store(true, ordering: .releasing)
    defer { capturing.store(false, ordering: .releasing) }
    var started = timespec()
    clock_gettime(CLOCK_MONOTONIC, &started)
    var headerPointer: UnsafeMutablePointer<pcap_pkthdr>?
    var dataPointer: UnsafePointer<UInt8>?
    while !stopping.load(ordering: .relaxed) {
      if let limit = options.packetLimit, counters.packets >= limit { break }
      if let duration = options.duration {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let elapsed = Double(now.tv_sec - started.tv_sec) + Double(now.tv_nsec - started.tv_nsec) / 1e9
        if elapsed >= duration { break }
      }
      let result = pcap_next_ex(pcap, &headerPointer, &dataPointer)
      if result == 0 {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        _ = poll(&poller, 1, 100)
        continue
      }
      if result == PCAP_ERROR_BREAK { break }
      if result < 0 { throw CaptureError.live("\(options.interface): \(String(cString: pcap_geterr(pcap)))") }
      guard let pcapHeader = headerPointer?.pointee, let data = dataPointer else { continue }
      let subsecond = Int64(pcapHeader.ts.tv_usec) * (precisionNanos ? 1 : 1000)
      let header = PacketHeader(
        timestampNanos: Int64(pcapHeader.ts.tv_sec) * 1_000_000_000 + subsecond,
        capturedLength: Int(pcapHeader.caplen), wireLength: Int(pcapHeader.len), interfaceIndex: 0,
        linkType: linkType)
      counters.packets += 1
      counters.bytes += UInt64(pcapHeader.caplen)
      sink.receive(header, UnsafeRawBufferPointer(start: data, count: Int(pcapHeader.caplen)), interfaces: interfaces)
    }
    var stats = pcap_stat()
    if pcap_stats(pcap, &stats) == 0 { counters.kernelDrops = UInt64(stats.ps_drop) + UInt64(stats.ps_ifdrop) }
  }

  /// Runs `run(into:)` on a new POSIX thread and waits for it, so that entering `--netns` moves
  /// only that thread.
  public func runOnDedicatedThread<Sink: PacketSink>(into sink: inout Sink) throws {
    let task = CaptureThreadTask(capture: self, sink: sink)
    try DedicatedThread.run(task)
    sink = task.sink
    if let error = task.error { throw error }
  }

  /// Ends `run` at its next read timeout (≤ 100 ms); safe to call from a signal-driven thread.
  public func stop() {
    stopping.store(true, ordering: .relaxed)
    if let handle { pcap_breakloop(handle) }
  }

  /// Moves the calling thread into the named network namespace (`/run/netns/NAME`).
  public static func enterNetworkNamespace(_ name: String) throws {
    guard !name.contains("/"), !name.isEmpty else {
      throw CaptureError.live("invalid network namespace name \"\(name)\"")
    }
    let path = "/run/netns/\(name)"
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      throw CaptureError.live("network namespace \(name): cannot open \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(fd) }
    guard fathom_enter_netns(fd) == 0 else {
      throw CaptureError.live("network namespace \(name): setns failed: \(String(cString: strerror(errno)))")
    }
  }
}

/// Work for a dedicated thread; non-generic so the thread entry point can be a plain C function.
class ThreadTask: @unchecked Sendable {
  func main() {}
}

/// Carries a sink to the capture thread and back.
private final class CaptureThreadTask<Sink: PacketSink>: ThreadTask, @unchecked Sendable {
  let capture: LiveCapture
  var sink: Sink
  var error: Error?

  init(capture: LiveCapture, sink: Sink) {
    self.capture = capture
    self.sink = sink
  }

  override func main() {
    do {
      try capture.run(into: &sink)
    } catch {
      self.error = error
    }
  }
}

/// Starts a POSIX thread for a task and waits for it to end.
enum DedicatedThread {
  static func run(_ task: ThreadTask) throws {
    var thread = pthread_t()
    let unmanaged = Unmanaged.passRetained(task)
    let created = pthread_create(
      &thread, nil,
      { raw in
        Unmanaged<ThreadTask>.fromOpaque(raw!).takeRetainedValue().main()
        return nil
      }, unmanaged.toOpaque())
    guard created == 0 else {
      unmanaged.release()
      throw CaptureError.live("cannot start the capture thread: \(String(cString: strerror(created)))")
    }
    pthread_join(thread, nil)
  }
}

/// The text of a NUL-terminated C character buffer.
func cString(_ buffer: [CChar]) -> String {
  String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
