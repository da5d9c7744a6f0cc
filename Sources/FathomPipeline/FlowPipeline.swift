import FathomCapture
import FathomFlows
import FathomProtocols
import FathomRecords
import FathomWire

#if canImport(Glibc)
  import Glibc
#endif

/// Options shared by every flow pipeline run.
public struct FlowPipelineOptions: Sendable {
  public var flowConfig = FlowConfig()
  /// BPF expression applied before decoding (tcpdump syntax).
  public var filter: String?
  public var decapsulateTunnels = true
  /// Stop after this many packets per source.
  public var packetLimit: UInt64 = .max
  /// The capture went on this long after its last packet with no traffic: flows whose timeout
  /// expires within it end as timed out rather than `in_progress`.
  public var idleSecondsAtEnd: Double = 0
  /// Parse application protocols (requests, and request counts on flows).
  public var parseApplications = true
  public var requestConfig = RequestConfig()

  public init() {}
}

/// What one source produced and dropped: the figures behind the summary line.
public struct SourceSummary: Sendable {
  public var source: String
  public var capture = CaptureCounters()
  public var wire = WireCounters()
  public var flows = FlowCounters()
  public var requests = RequestCounters()
  /// Why reading stopped early, if it did.
  public var warning: String?

  public var line: String {
    var text =
      "\(source): packets \(capture.packets), flows \(flows.recordsEmitted), malformed \(wire.malformedTotal), "
      + "evicted \(flows.evicted), not-ip \(wire.notIP), other-transport \(wire.otherTransport), "
      + "unsupported-link \(wire.unsupportedLinkType)"
    if capture.filteredOut > 0 { text += ", filtered-out \(capture.filteredOut)" }
    if wire.fragmentsDropped > 0 { text += ", fragments-dropped \(wire.fragmentsDropped)" }
    if capture.truncatedRecords > 0 { text += ", truncated-records \(capture.truncatedRecords)" }
    if capture.kernelDrops > 0 { text += ", kernel-drops \(capture.kernelDrops)" }
    if requests.requestsEmitted > 0 || requests.parseFailures > 0 {
      text += ", requests \(requests.requestsEmitted), parse-failures \(requests.parseFailures)"
    }
    if requests.streamGaps > 0 { text += ", stream-gaps \(requests.streamGaps)" }
    if let warning { text += " (\(warning))" }
    return text
  }

  /// Malformed counts by reason, for `--verbose`.
  public var malformedBreakdown: [(String, UInt64)] {
    MalformedReason.allCases.compactMap { reason in
      let count = wire.malformed[reason.rawValue]
      return count > 0 ? (reason.description, count) : nil
    }
  }
}

/// Capture → decode → flows for one source; records go to `handler` in batches as flows end.
struct FlowStage: PacketSink {
  var decoder = PacketDecoder()
  var meter: FlowMeter
  var packet = DecodedPacket()
  let filter: PacketFilter?
  var filteredOut: UInt64 = 0
  var capturePointIDs: [UInt32] = []
  /// Capture points of frames captured on `any` (Linux SLL2 headers carry the interface index), so
  /// one connection seen on a pod's veth and on the node's uplink stays two flows.
  var interfaceIndexPoints: [UInt64: UInt32] = [:]
  let requests: RequestMeter?
  let handler: ([FlowLog]) -> Void
  let requestHandler: ([RequestLog]) -> Void
  let idleSecondsAtEnd: Double
  /// Request records gathered before they are handed on mid-stream: a file hands them in batches
  /// (one handler call per record was a tenth of `fathom requests`), a live capture at once.
  /// Flow deliveries and the end hand on whatever is pending.
  var requestBatch = 1

  init(
    options: FlowPipelineOptions, handler: @escaping ([FlowLog]) -> Void,
    requestHandler: @escaping ([RequestLog]) -> Void = { _ in }
  ) throws {
    idleSecondsAtEnd = options.idleSecondsAtEnd
    requests =
      options.parseApplications
      ? RequestMeter(config: options.requestConfig, capacity: options.flowConfig.capacity) : nil
    self.requestHandler = requestHandler
    meter = FlowMeter(config: options.flowConfig)
    decoder.decapsulateTunnels = options.decapsulateTunnels
    filter = try options.filter.map { try PacketFilter(expression: $0) }
    self.handler = handler
  }

  mutating func receive(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer, interfaces: [CaptureInterface]) {
    if let filter, !filter.matches(header, bytes) {
      filteredOut += 1
      return
    }
    while capturePointIDs.count < interfaces.count {
      let interface = interfaces[capturePointIDs.count]
      let point = CapturePoint(interface: interface.name, netns: interface.netns)
      capturePointIDs.append(meter.addCapturePoint(point))
      _ = requests?.addCapturePoint(point)
    }
    let result = decoder.decode(
      bytes, linkType: header.linkType, wireLength: header.wireLength, timestampNanos: header.timestampNanos,
      into: &self.packet)
    guard case .transport = result else { return }
    // One copy to a constant, which both stages then borrow in place (handed on from the stage's
    // storage, the packet was copied for each).
    let packet = self.packet
    var point = capturePointIDs[header.interfaceIndex]
    if header.linkType == 276, bytes.count >= 20 {
      point = capturePoint(
        ifindex: UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
        of: interfaces[header.interfaceIndex], source: header.interfaceIndex)
    }
    let context = meter.process(packet, capturePoint: point)
    // Flows that ended go first: their sessions must be closed before a new flow reuses the slot.
    if meter.hasOutput { deliverFlows() }
    // Optional chaining, not `if let`: binding the meter to a constant cost a retain and a
    // release per packet.
    requests?.process(packet, context: context, capturePoint: point)
    if let count = requests?.outputCount, count >= requestBatch { requests?.drain(into: requestHandler) }
  }

  /// The capture point of an interface index seen inside an SLL2 header. A live capture names it
  /// (this runs on the capture thread, inside its namespace); a file can only number it.
  private mutating func capturePoint(ifindex: UInt32, of interface: CaptureInterface, source: Int) -> UInt32 {
    let key = UInt64(source) << 32 | UInt64(ifindex)
    if let known = interfaceIndexPoints[key] { return known }
    var name = "ifindex:\(ifindex)"
    if interface.live {
      var buffer = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
      if if_indextoname(ifindex, &buffer) != nil {
        name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      }
    }
    let point = CapturePoint(interface: name, netns: interface.netns)
    let id = meter.addCapturePoint(point)
    _ = requests?.addCapturePoint(point)
    interfaceIndexPoints[key] = id
    return id
  }

  private func deliverFlows() {
    meter.drain { flows in
      if let requests {
        requests.annotate(&flows)
        if requests.outputCount > 0 { requests.drain(into: requestHandler) }
      }
      handler(flows)
    }
  }

  mutating func finish() -> (WireCounters, FlowCounters, RequestCounters) {
    decoder.finish()
    meter.finishAll(idleSeconds: idleSecondsAtEnd)
    if meter.hasOutput { deliverFlows() }
    if let requests {
      requests.finishAll()
      if requests.outputCount > 0 { requests.drain(into: requestHandler) }
    }
    return (decoder.counters, meter.counters, requests?.counters ?? RequestCounters())
  }
}

/// Entry points the CLI and tests use.
public enum FlowPipeline {
  /// Reads one capture file to the end and reports every flow. Each file gets its own flow table:
  /// separate files are separate capture points with their own clocks.
  /// `progress` gets the share of the file read, a few times per second.
  public static func run(
    file path: String, options: FlowPipelineOptions = FlowPipelineOptions(), handler: @escaping ([FlowLog]) -> Void,
    requestHandler: @escaping ([RequestLog]) -> Void = { _ in }, progress: (Double) -> Void = { _ in }
  ) throws -> SourceSummary {
    let file = try CaptureFile(path: path)
    var stage = try FlowStage(options: options, handler: handler, requestHandler: requestHandler)
    stage.requestBatch = 256
    file.read(into: &stage, limit: options.packetLimit, progress: progress)
    let (wire, flows, requests) = stage.finish()
    var summary = SourceSummary(source: path)
    summary.capture = file.counters
    summary.capture.filteredOut = stage.filteredOut
    summary.wire = wire
    summary.flows = flows
    summary.requests = requests
    summary.warning = file.warning
    return summary
  }

  /// Convenience for tests: all flows of a file.
  public static func flows(file path: String, options: FlowPipelineOptions = FlowPipelineOptions()) throws -> (
    [FlowLog], SourceSummary
  ) {
    let collected = FlowCollector()
    let summary = try run(file: path, options: options) { collected.records.append(contentsOf: $0) }
    return (collected.records, summary)
  }

  /// Captures live until the duration or packet limit, reporting flows as they end; the capture
  /// runs on its own thread so `--netns` affects only that thread.
  public static func runLive(
    _ live: LiveCapture, options: FlowPipelineOptions, handler: @escaping ([FlowLog]) -> Void,
    requestHandler: @escaping ([RequestLog]) -> Void = { _ in }
  ) throws -> SourceSummary {
    var pipelineOptions = options
    pipelineOptions.filter = nil  // the kernel applies it (LiveCaptureOptions.filter)
    var stage = try FlowStage(options: pipelineOptions, handler: handler, requestHandler: requestHandler)
    var captureError: Error?
    do {
      try live.runOnDedicatedThread(into: &stage)
    } catch {
      captureError = error
    }
    let (wire, flows, requests) = stage.finish()  // flows seen before an error are still reported
    if let captureError { throw captureError }
    var summary = SourceSummary(source: live.options.interface)
    summary.capture = live.counters
    summary.wire = wire
    summary.flows = flows
    summary.requests = requests
    return summary
  }

  /// Convenience for tests: all requests (and flows) of a file.
  public static func requests(file path: String, options: FlowPipelineOptions = FlowPipelineOptions()) throws -> (
    [RequestLog], [FlowLog], SourceSummary
  ) {
    let collected = FlowCollector()
    let summary = try run(
      file: path, options: options, handler: { collected.records.append(contentsOf: $0) },
      requestHandler: { collected.requests.append(contentsOf: $0) })
    return (collected.requests, collected.records, summary)
  }
}

final class FlowCollector: @unchecked Sendable {
  var records: [FlowLog] = []
  var requests: [RequestLog] = []
}
