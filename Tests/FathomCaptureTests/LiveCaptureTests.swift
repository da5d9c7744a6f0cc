import FathomCapture
import FathomPipeline
import FathomRecords
import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Live capture inside a network namespace this test creates (root only; CI runs as root).
/// Traffic goes only between the test's two namespaces.
@Suite(
  .serialized,
  .enabled(
    if: getuid() == 0
      && ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
      && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")))
struct LiveCaptureTests {
  static let left = "fathom-test-left"
  static let right = "fathom-test-right"

  @discardableResult
  static func run(_ arguments: [String]) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.standardError = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    try? process.run()
    process.waitUntilExit()
    return process.terminationStatus
  }

  static func setUp() -> Bool {
    tearDown()
    let steps = [
      ["ip", "netns", "add", left], ["ip", "netns", "add", right],
      ["ip", "link", "add", "veth-ftest-l", "type", "veth", "peer", "name", "veth-ftest-r"],
      ["ip", "link", "set", "veth-ftest-l", "netns", left], ["ip", "link", "set", "veth-ftest-r", "netns", right],
      ["ip", "-n", left, "addr", "add", "10.199.0.1/24", "dev", "veth-ftest-l"],
      ["ip", "-n", right, "addr", "add", "10.199.0.2/24", "dev", "veth-ftest-r"],
      ["ip", "-n", left, "link", "set", "veth-ftest-l", "up"],
      ["ip", "-n", right, "link", "set", "veth-ftest-r", "up"],
      ["ip", "-n", left, "link", "set", "lo", "up"], ["ip", "-n", right, "link", "set", "lo", "up"],
    ]
    return steps.allSatisfy { run($0) == 0 }
  }

  static func tearDown() {
    run(["ip", "netns", "del", left])
    run(["ip", "netns", "del", right])
  }

  /// From the left namespace: three UDP datagrams to a closed port (answered by ICMP port
  /// unreachable) and a TCP connect to a closed port (answered by RST).
  static func sendTraffic() {
    let script = """
      import socket, time
      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
      for i in range(3):
          s.sendto(b"ping", ("10.199.0.2", 9999)); time.sleep(0.05)
      t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.settimeout(1)
      try: t.connect(("10.199.0.2", 8081))
      except OSError: pass
      """
    run(["ip", "netns", "exec", left, "python3", "-c", script])
  }

  @Test func flowsFromALiveCaptureInANamespace() throws {
    try #require(Self.setUp(), "could not create the test namespaces")
    defer { Self.tearDown() }
    var options = LiveCaptureOptions(interface: "veth-ftest-l")
    options.netns = Self.left
    options.duration = 2.5
    let live = LiveCapture(options: options)
    DispatchQueue.global().asyncAfter(deadline: .now() + 0.8) { Self.sendTraffic() }
    let collected = RecordBox<FlowLog>()
    var pipeline = FlowPipelineOptions()
    pipeline.flowConfig.reportIntervalSeconds = nil
    let summary = try FlowPipeline.runLive(live, options: pipeline) { collected.append($0) }
    let flows = collected.records
    #expect(summary.capture.packets >= 6)
    let udp = try #require(flows.first { $0.l4Protocol == .udp && $0.serverPort == 9999 })
    #expect(udp.closeType == .icmpUnreachable && udp.clientToServer.packets == 3)
    #expect(udp.interface == "veth-ftest-l" && udp.netns == Self.left)
    let tcp = try #require(flows.first { $0.l4Protocol == .tcp && $0.serverPort == 8081 })
    #expect(tcp.closeType == .serverReset && tcp.status == .serverError)
  }

  /// On `any`, each interface is its own capture point, named from the SLL2 interface index.
  @Test func anyInterfaceKeepsInterfacesApart() throws {
    try #require(Self.setUp(), "could not create the test namespaces")
    defer { Self.tearDown() }
    var options = LiveCaptureOptions(interface: "any")
    options.netns = Self.left
    options.duration = 2
    let live = LiveCapture(options: options)
    DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) { Self.sendTraffic() }
    let collected = RecordBox<FlowLog>()
    _ = try FlowPipeline.runLive(live, options: FlowPipelineOptions()) { collected.append($0) }
    let udp = try #require(collected.records.first { $0.l4Protocol == .udp && $0.serverPort == 9999 })
    #expect(udp.interface == "veth-ftest-l" && udp.netns == Self.left)
  }

  /// Live `fathom requests`: HTTP between the namespaces, checked against what the client itself
  /// received (Python's http.server answers 200 for its directory, 404 for a missing file).
  @Test func requestsFromALiveCaptureMatchTheClient() throws {
    try #require(Self.setUp(), "could not create the test namespaces")
    defer { Self.tearDown() }
    let served = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-live-http-\(getpid())")
    let clientTruth = served.path + ".client"
    try FileManager.default.createDirectory(at: served, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: served) }
    defer { try? FileManager.default.removeItem(atPath: clientTruth) }
    let server = Process()
    server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    server.arguments = [
      "ip", "netns", "exec", Self.right, "python3", "-m", "http.server", "8082", "--bind", "10.199.0.2",
      "--directory", served.path,
    ]
    server.standardOutput = FileHandle.nullDevice
    server.standardError = FileHandle.nullDevice
    try server.run()
    defer {
      // SIGKILL: the child inherits the test thread's signal mask, in which SIGTERM is blocked.
      kill(server.processIdentifier, SIGKILL)
      server.waitUntilExit()
    }
    let client = """
      import http.client, time
      seen = []
      for path in ["/", "/no-such-file"]:
          for attempt in range(30):
              try:
                  c = http.client.HTTPConnection("10.199.0.2", 8082, timeout=2)
                  c.request("GET", path)
                  r = c.getresponse(); r.read(); c.close()
                  seen.append(f"GET {path} {r.status}")
                  break
              except OSError:
                  time.sleep(0.1)
      open("\(clientTruth)", "w").write("\\n".join(seen))
      """
    var options = LiveCaptureOptions(interface: "veth-ftest-l")
    options.netns = Self.left
    options.duration = 3
    let live = LiveCapture(options: options)
    DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) {
      Self.run(["ip", "netns", "exec", Self.left, "python3", "-c", client])
    }
    let requests = RecordBox<RequestLog>()
    _ = try FlowPipeline.runLive(live, options: FlowPipelineOptions(), handler: { _ in }) { requests.append($0) }
    let truth = try String(contentsOfFile: clientTruth, encoding: .utf8).split(separator: "\n").map(String.init)
    #expect(truth.count == 2)
    let seen = requests.records.filter { $0.applicationProtocol == .http }
      .map { "\($0.method) \($0.resource) \($0.code.map { "\($0)" } ?? "-")" }
    #expect(seen.sorted() == truth.sorted())
  }

  @Test func captureToFileAndReadBack() throws {
    try #require(Self.setUp(), "could not create the test namespaces")
    defer { Self.tearDown() }
    let path = NSTemporaryDirectory() + "fathom-live-\(UUID().uuidString).pcap"
    defer { try? FileManager.default.removeItem(atPath: path) }
    var options = LiveCaptureOptions(interface: "any")
    options.netns = Self.left
    options.duration = 2
    options.filter = "udp port 9999"
    let live = LiveCapture(options: options)
    DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) { Self.sendTraffic() }
    var sink = WriterSink(path: path)
    try live.runOnDedicatedThread(into: &sink)
    sink.writer?.close()
    let (flows, summary) = try FlowPipeline.flows(file: path)
    #expect(summary.capture.packets == 3, "only the filtered UDP datagrams")
    #expect(flows.first?.serverPort == 9999)
  }

  @Test func missingNamespaceIsAClearError() {
    var options = LiveCaptureOptions(interface: "lo")
    options.netns = "fathom-no-such-namespace"
    var sink = WriterSink(path: "/dev/null")
    #expect(throws: CaptureError.self) { try LiveCapture(options: options).runOnDedicatedThread(into: &sink) }
  }
}

final class RecordBox<Record>: @unchecked Sendable {
  private let lock = NSLock()
  private var stored: [Record] = []
  func append(_ records: [Record]) { lock.withLock { stored += records } }
  var records: [Record] { lock.withLock { stored } }
}

struct WriterSink: PacketSink {
  let path: String
  var writer: PcapWriter?
  mutating func receive(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer, interfaces: [CaptureInterface]) {
    if writer == nil { writer = try? PcapWriter(path: path, linkType: header.linkType, snapLength: 262_144) }
    writer?.write(header, bytes)
  }
}
