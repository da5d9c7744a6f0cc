import FathomCapture
import FathomPipeline
import FathomRecords
import FathomTestSupport
import Foundation
import Testing

/// Collects what a capture source delivers.
struct Collector: PacketSink {
  var headers: [PacketHeader] = []
  var interfaces: [CaptureInterface] = []
  mutating func receive(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer, interfaces: [CaptureInterface]) {
    headers.append(header)
    self.interfaces = interfaces
  }
}

@Suite struct CaptureFileTests {
  let builder = FrameBuilder()
  var frame: [UInt8] { builder.udp(sourcePort: 1000, destinationPort: 53, payload: [1, 2, 3, 4]) }

  func read(_ bytes: [UInt8], suffix: String = ".pcap") throws -> (CaptureFile, Collector) {
    let path = try CaptureFileBuilder.temporaryFile(bytes, suffix: suffix)
    defer { try? FileManager.default.removeItem(atPath: path) }
    let file = try CaptureFile(path: path)
    var collector = Collector()
    file.read(into: &collector)
    return (file, collector)
  }

  @Test func classicPcapMicroAndNanoseconds() throws {
    for nanos in [false, true] {
      let bytes = CaptureFileBuilder.pcap([TimedFrame(micros: 1_700_000_000_123_456, bytes: frame)], nanos: nanos)
      let (file, collector) = try read(bytes)
      #expect(collector.headers.first?.timestampNanos == 1_700_000_000_123_456_000)
      #expect(collector.headers.first?.capturedLength == frame.count)
      #expect(file.warning == nil && file.counters.packets == 1)
    }
  }

  @Test func pcapngWithTwoInterfacesAndResolutions() throws {
    let raw = Array(frame[14...])
    let frames = [
      TimedFrame(micros: 1_000_000, bytes: frame, interface: 0),
      TimedFrame(micros: 2_000_001, bytes: raw, interface: 1),
    ]
    let bytes = CaptureFileBuilder.pcapng(frames, interfaces: [("eth0", 1, 6), ("cni0", 101, 9)])
    let (_, collector) = try read(bytes, suffix: ".pcapng")
    #expect(collector.interfaces.map(\.name) == ["eth0", "cni0"])
    #expect(collector.headers.map(\.linkType) == [1, 101])
    #expect(collector.headers.map(\.timestampNanos) == [1_000_000_000, 2_000_001_000])
    // And the flow table keeps the two capture points apart, each with its name.
    let path = try CaptureFileBuilder.temporaryFile(bytes, suffix: ".pcapng")
    defer { try? FileManager.default.removeItem(atPath: path) }
    let (flows, _) = try FlowPipeline.flows(file: path)
    #expect(Set(flows.map(\.interface)) == ["eth0", "cni0"])
  }

  @Test func gzipCapturesAreRead() throws {
    let plain = try CaptureFileBuilder.temporaryFile(CaptureFileBuilder.pcap([TimedFrame(micros: 1, bytes: frame)]))
    defer { try? FileManager.default.removeItem(atPath: plain) }
    let gzip = Process()
    gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
    gzip.arguments = ["-kf", plain]
    try gzip.run()
    gzip.waitUntilExit()
    defer { try? FileManager.default.removeItem(atPath: plain + ".gz") }
    let file = try CaptureFile(path: plain + ".gz")
    var collector = Collector()
    file.read(into: &collector)
    #expect(collector.headers.count == 1)
  }

  @Test func badFilesFailWithClearErrors() throws {
    #expect(throws: CaptureError.self) { try read([]) }
    #expect(throws: CaptureError.self) { try read(Array("not a capture at all".utf8)) }
    #expect(throws: CaptureError.self) { try CaptureFile(path: "/nonexistent/capture.pcap") }
    #expect(throws: CaptureError.self) { try CaptureFile(path: "/tmp") }
    do {
      _ = try read(Array("hello world".utf8))
    } catch let error as CaptureError {
      #expect(error.description.contains("not a pcap or pcapng capture"))
    }
  }

  @Test func truncatedAndLyingRecordsStopWithAWarning() throws {
    let good = CaptureFileBuilder.pcap([TimedFrame(micros: 1, bytes: frame), TimedFrame(micros: 2, bytes: frame)])
    let (truncatedFile, truncated) = try read(Array(good.dropLast(10)))
    #expect(truncated.headers.count == 1)
    #expect(truncatedFile.counters.truncatedRecords == 1 && truncatedFile.warning != nil)

    var lying = good
    lying[24 + 8] = 0xFF  // first record claims ~4 GiB captured
    lying[24 + 11] = 0x7F
    let (lyingFile, none) = try read(lying)
    #expect(none.headers.isEmpty && lyingFile.warning?.contains("claims") == true)

    let (_, headerOnly) = try read(Array(good[0..<24]))
    #expect(headerOnly.headers.isEmpty)
    let (shortFile, _) = try read(Array(good[0..<10]))
    #expect(shortFile.warning != nil)
  }

  @Test func zeroLengthAndSnapCutFramesAreCountedNotFatal() throws {
    let frames = [
      TimedFrame(micros: 1, bytes: []),
      TimedFrame(micros: 2, bytes: Array(frame[0..<30]), wireLength: frame.count),
      TimedFrame(micros: 3, bytes: frame),
    ]
    let path = try CaptureFileBuilder.temporaryFile(CaptureFileBuilder.pcap(frames))
    defer { try? FileManager.default.removeItem(atPath: path) }
    let (flows, summary) = try FlowPipeline.flows(file: path)
    #expect(summary.capture.packets == 3)
    #expect(summary.wire.malformedTotal == 2)
    #expect(flows.count == 1 && flows.first?.clientToServer.packets == 1)
  }

  @Test func bpfFilterAppliesToFiles() throws {
    let tcp = builder.tcp(sourcePort: 1, destinationPort: 80, seq: 1, flags: FrameBuilder.syn)
    let path = try CaptureFileBuilder.temporaryFile(
      CaptureFileBuilder.pcap([TimedFrame(micros: 1, bytes: frame), TimedFrame(micros: 2, bytes: tcp)]))
    defer { try? FileManager.default.removeItem(atPath: path) }
    var options = FlowPipelineOptions()
    options.filter = "tcp port 80"
    let (flows, summary) = try FlowPipeline.flows(file: path, options: options)
    #expect(flows.count == 1 && flows.first?.l4Protocol == .tcp)
    #expect(summary.capture.filteredOut == 1)
    #expect(throws: CaptureError.self) { try PacketFilter(expression: "tcp port banana") }
  }
}
