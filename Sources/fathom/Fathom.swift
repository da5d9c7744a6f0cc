import ArgumentParser
import FathomCapture
import FathomPipeline
import FathomRecords

#if canImport(Glibc)
  import Glibc
#endif

@main
struct Fathom: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "fathom",
    abstract: "Finds why a Kubernetes service is failing, from what crosses the wire.",
    subcommands: [
      FlowsCommand.self, RequestsCommand.self, CaptureCommand.self, LabCommand.self, AnalyzeCommand.self,
      QueryCommand.self, KubeCommand.self, StoreBenchCommand.self, TraceCommand.self, TracesCommand.self,
      DiagnoseCommand.self,
    ])
}

/// Options of a live capture and of filtering, shared by `flows` and `capture`.
struct CaptureOptions: ParsableArguments {
  @Option(help: "Capture live on this interface (or 'any').")
  var interface: String?

  @Option(help: "Network namespace (ip netns name) to capture in.")
  var netns: String?

  @Option(help: "BPF filter, tcpdump syntax.")
  var filter: String?

  @Option(help: "Stop a live capture after this many seconds.")
  var duration: Double?

  @Option(help: "Stop after this many packets.")
  var count: UInt64?

  @Option(help: "Snap length of a live capture.")
  var snaplen: Int = 262_144

  func live(defaultInterface: String = "any") -> LiveCaptureOptions {
    var options = LiveCaptureOptions(interface: interface ?? defaultInterface)
    options.netns = netns
    options.filter = filter
    options.duration = duration
    options.packetLimit = count
    options.snapLength = snaplen
    return options
  }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
  case table, jsonl
}

/// The live capture SIGINT stops; a signal handler cannot capture context.
nonisolated(unsafe) var interruptibleCapture: LiveCapture?

func stopOnInterrupt(_ live: LiveCapture) {
  interruptibleCapture = live
  signal(SIGINT) { _ in interruptibleCapture?.stop() }
  signal(SIGTERM) { _ in interruptibleCapture?.stop() }
}

func printError(_ message: String) {
  var buffer = OutputBuffer(capacity: message.utf8.count + 1)
  buffer.append(string: message)
  buffer.append(byte: 10)
  buffer.flush(to: 2)
}

/// Input and pipeline options shared by `flows` and `requests`.
struct AnalysisOptions: ParsableArguments {
  @Argument(help: "Capture files (pcap or pcapng, optionally gzip-compressed).")
  var files: [String] = []

  @OptionGroup var source: CaptureOptions

  @Option(help: "Output format: \(OutputFormat.allCases.map(\.rawValue).joined(separator: ", ")).")
  var format: OutputFormat = .table

  @Option(help: "Maximum concurrent flows per table.")
  var capacity: Int = 65_535

  @Option(help: "Seconds between records of a long-lived flow (0: only when the flow ends).")
  var reportInterval: Double = 60

  @Option(
    help: ArgumentHelp(
      "Seconds the capture went on idle after its last packet.",
      discussion: "Flows whose timeout expires within it close as timed out instead of in_progress."))
  var endIdle: Double = 0

  @Flag(help: "Keep VXLAN/Geneve/GRE outer headers as the flow instead of decapsulating.")
  var noDecapsulate = false

  @Flag(help: "Print malformed-packet counts by reason.")
  var verbose = false

  @Flag(help: "Transport only: skip application protocols (faster; flows carry no request counts).")
  var l4Only = false

  func validate() throws {
    if source.interface == nil && files.isEmpty { throw ValidationError("give capture files or --interface") }
    if source.interface != nil && !files.isEmpty {
      throw ValidationError("give either capture files or --interface, not both")
    }
    if source.netns != nil && source.interface == nil { throw ValidationError("--netns needs --interface") }
    if capacity < 1 { throw ValidationError("--capacity must be at least 1") }
  }

  var pipeline: FlowPipelineOptions {
    var options = FlowPipelineOptions()
    options.flowConfig.capacity = capacity
    options.flowConfig.reportIntervalSeconds = reportInterval > 0 ? reportInterval : nil
    options.filter = source.filter
    options.decapsulateTunnels = !noDecapsulate
    options.idleSecondsAtEnd = endIdle
    options.parseApplications = !l4Only
    if let count = source.count { options.packetLimit = count }
    return options
  }

  /// Runs every source through the pipeline, then prints the summaries; exits 1 if one failed.
  /// Without a `requests` handler no request records are built, only the flows' request counts.
  func run(
    flows: @escaping ([FlowLog]) -> Void, requests: (([RequestLog]) -> Void)?, writer: RecordWriter
  ) throws {
    var pipeline = self.pipeline
    pipeline.requestConfig.keepsRecords = requests != nil
    let requests = requests ?? { _ in }
    var failed = false
    var summaries: [SourceSummary] = []
    if source.interface != nil {
      let live = LiveCapture(options: source.live())
      stopOnInterrupt(live)
      do {
        summaries.append(try FlowPipeline.runLive(live, options: pipeline, handler: flows, requestHandler: requests))
      } catch {
        printError("fathom: \(error)")
        failed = true
      }
    } else {
      for file in files {
        do {
          summaries.append(
            try FlowPipeline.run(file: file, options: pipeline, handler: flows, requestHandler: requests))
        } catch {
          printError("fathom: \(error)")
          failed = true
        }
      }
    }
    writer.end()  // records before the summary lines on a shared terminal
    for summary in summaries {
      printError(summary.line)
      if verbose {
        for (reason, count) in summary.malformedBreakdown { printError("  malformed: \(reason): \(count)") }
      }
    }
    if failed { throw ExitCode(1) }
  }
}

struct FlowsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "flows",
    abstract: "One record per TCP/UDP/ICMP flow with its health figures.",
    discussion: "Fields are documented in docs/records.md. A summary line goes to standard error.")

  @OptionGroup var analysis: AnalysisOptions

  func run() throws {
    let writer = RecordWriter(format: analysis.format, header: FlowTable.header)
    try analysis.run(flows: { writer.write($0) }, requests: nil, writer: writer)
  }
}

struct RequestsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "requests",
    abstract: "One record per request/response: HTTP/1, HTTP/2, gRPC, DNS, Redis.",
    discussion: "Fields are documented in docs/records.md. A summary line goes to standard error.")

  @OptionGroup var analysis: AnalysisOptions

  @Option(help: "Only requests of this protocol (http, http2, grpc, dns, redis).")
  var `protocol`: String?

  func validate() throws {
    if analysis.l4Only { throw ValidationError("--l4-only leaves no requests to print") }
    if let name = `protocol`, ApplicationProtocol(name: name) == nil {
      throw ValidationError("unknown protocol \(name); one of http, http2, grpc, dns, redis")
    }
  }

  func run() throws {
    let wanted = `protocol`.flatMap { ApplicationProtocol(name: $0) }
    let writer = RecordWriter(format: analysis.format, header: RequestTable.header)
    try analysis.run(
      flows: { _ in },
      requests: { records in
        writer.write(
          wanted.map { protocolName in records.filter { $0.applicationProtocol == protocolName } } ?? records)
      }, writer: writer)
  }
}

/// Buffers records and writes them to standard output in the chosen format.
final class RecordWriter: @unchecked Sendable {
  let format: OutputFormat
  private var buffer = OutputBuffer(capacity: 1 << 20)

  init(format: OutputFormat, header: String) {
    self.format = format
    if format == .table { buffer.append(string: header) }
  }

  func write(_ records: [FlowLog]) {
    // Through a buffer pointer: the formatter reads each record in place.
    let format = format
    withBuffer { buffer in
      records.withUnsafeBufferPointer { records in
        switch format {
        case .jsonl: buffer.appendJSONLines(records)
        case .table: for index in records.indices { FlowTable.appendRow(records[index], to: &buffer) }
        }
      }
    }
    if buffer.count >= 1 << 19 { buffer.flush(to: 1) }
  }

  func write(_ records: [RequestLog]) {
    // Through a buffer pointer: the formatter reads each record in place.
    let format = format
    withBuffer { buffer in
      records.withUnsafeBufferPointer { records in
        switch format {
        case .jsonl: buffer.appendJSONLines(records)
        case .table: for index in records.indices { RequestTable.appendRow(records[index], to: &buffer) }
        }
      }
    }
    if buffer.count >= 1 << 19 { buffer.flush(to: 1) }
  }

  func end() { buffer.flush(to: 1) }

  /// The buffer as a local for `body`: through the class property each append was an access
  /// check, and the record passed beside it was copied.
  private func withBuffer(_ body: (inout OutputBuffer) -> Void) {
    var local = OutputBuffer(capacity: 0)
    swap(&local, &buffer)
    body(&local)
    swap(&local, &buffer)
  }
}

struct CaptureCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "capture",
    abstract: "Capture live packets to a pcap file (optionally inside a network namespace).")

  @OptionGroup var capture: CaptureOptions

  @Option(name: .customShort("w"), help: "Write packets to this pcap file.")
  var output: String

  func run() throws {
    let options = capture.live()
    let live = LiveCapture(options: options)
    stopOnInterrupt(live)
    var sink = PcapFileSink(path: output, snapLength: options.snapLength)
    do {
      try live.runOnDedicatedThread(into: &sink)
      try sink.finish(linkType: options.interface == "any" ? 276 : 1)
    } catch {
      printError("fathom: \(error)")
      throw ExitCode(1)
    }
    printError("\(output): \(live.counters.packets) packets written, kernel drops \(live.counters.kernelDrops)")
  }
}
