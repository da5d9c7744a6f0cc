import FathomKube
import FathomLab
import FathomPipeline
import FathomRecords
import FathomStore
import Foundation

/// `fathom analyze`: captures → flows and requests → AutoTagging with the cluster's objects at
/// each record's time → the store → the summary.
public struct Analyzer {
  public struct Options: Sendable {
    public var captures: [String] = []
    /// Kubernetes objects valid at all times (`kubectl get -o json|yaml` output, a List, ...).
    public var clusterFile: String?
    /// A watch-style event log of the objects (`fathom kube watch`, a lab's event log).
    public var clusterEvents: String?
    /// A `fathom lab record` directory: its captures, event log and node interfaces.
    public var labRecording: String?
    public var database = "fathom.sqlite"
    /// Store into ClickHouse instead of SQLite.
    public var clickhouse: ClickHouseStore.Target?
    public init() {}
  }

  /// What a long analysis is doing, for a terminal.
  public enum Progress: Sendable {
    /// Reading one capture: the share of it read so far (0...1).
    case reading(path: String, node: String?, fraction: Double)
    /// Writing the tagged records of every capture: how many of them are stored.
    case storing(written: Int, total: Int)
  }

  public struct Result {
    public var summary: AnalysisSummary
    /// What happened to each input (read, skipped as already stored, re-read after an
    /// interrupted run), for the user.
    public var notes: [String]
  }

  let options: Options

  public init(options: Options) { self.options = options }

  public func run(progress: (Progress) -> Void) throws -> Result {
    var captures: [(path: String, point: CapturePoint)] = []
    let index: ClusterIndex
    if let recording = options.labRecording {
      let manifest = try LabRecording(directory: recording)
      index = try ClusterIndex(eventLog: manifest.eventLogPath)
      captures = manifest.captures
    } else if let events = options.clusterEvents {
      index = try ClusterIndex(eventLog: events)
    } else if let clusterFile = options.clusterFile {
      index = ClusterIndex(snapshot: try KubeDecoder.decode(file: clusterFile))
    } else {
      index = ClusterIndex(snapshot: [])
    }
    for path in options.captures {
      // A capture named after a node (node-1.pcap) was taken on that node.
      let stem = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
      captures.append((path, CapturePoint(node: index.nodeID(named: stem) != nil ? stem : nil)))
    }
    guard !captures.isEmpty else { throw KubeDecoder.Failure(message: "no captures to analyse") }

    let store: RecordStore =
      try options.clickhouse.map { try ClickHouseStore($0) } ?? SQLiteStore(path: options.database)
    let tagger = AutoTagger(index: index)
    var notes: [String] = []
    // Which captures to read, in order (the store is asked one source at a time).
    var toRead: [(path: String, point: CapturePoint, source: Int64)] = []
    for (path, point) in captures {
      guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
        throw KubeDecoder.Failure(message: "cannot read \(path): no such file")
      }
      let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
      let modified = Int64((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)
      switch try store.beginSource(path: path, size: size, modified: modified) {
      case .skip:
        notes.append("\(path): already stored, skipped")
      case .read(let id, let restarted):
        if restarted {
          notes.append("\(path): an earlier run stopped while storing it; its rows were removed and it is read again")
        }
        toRead.append((path, point, id))
      }
    }

    // Captures are independent until linked: read them in parallel, one per core (each node's
    // capture runs its own pipeline; the index is only read while tagging).
    final class Reading: @unchecked Sendable {
      var flows: [TaggedFlow] = []
      var requests: [TaggedRequest] = []
      var line = ""
      var error: (any Error)?
    }
    let readings = toRead.map { _ in Reading() }
    let inputs = toRead
    let progressLock = NSLock()
    withoutActuallyEscaping(progress) { progress in
      let report = UncheckedBox(progress)
      DispatchQueue.concurrentPerform(iterations: inputs.count) { position in
        let (path, point, _) = inputs[position]
        let reading = readings[position]
        let show: (Progress) -> Void = { update in progressLock.withLock { report.value(update) } }
        show(.reading(path: path, node: point.node, fraction: 0))
        do {
          let summary = try FlowPipeline.run(
            file: path,
            handler: { flows in
              for flow in flows { reading.flows.append(tagger.tag(flow, point: point)) }
            },
            requestHandler: { requests in
              for request in requests { reading.requests.append(tagger.tag(request, point: point)) }
            },
            progress: { show(.reading(path: path, node: point.node, fraction: $0)) })
          reading.line = summary.line
        } catch {
          reading.error = error
        }
      }
    }
    if let error = readings.compactMap(\.error).first { throw error }

    // One array per kind for the whole run (each source a range of it): the records are linked
    // across captures in place and written in slices.
    var flows: [TaggedFlow] = []
    var requests: [TaggedRequest] = []
    flows.reserveCapacity(readings.reduce(0) { $0 + $1.flows.count })
    requests.reserveCapacity(readings.reduce(0) { $0 + $1.requests.count })
    var sources: [(id: Int64, flows: Range<Int>, requests: Range<Int>)] = []
    for (position, reading) in readings.enumerated() {
      notes.append(reading.line)  // begins with the capture's path
      let (firstFlow, firstRequest) = (flows.count, requests.count)
      flows.append(contentsOf: reading.flows)
      requests.append(contentsOf: reading.requests)
      (reading.flows, reading.requests) = ([], [])
      sources.append(
        (toRead[position].source, firstFlow..<flows.count, firstRequest..<requests.count))
    }

    // Link each connection's records before and after DNAT, across all captures.
    AutoTagger.linkAcrossDNAT(flows: &flows, requests: &requests)
    let ids = try store.register(index.resources)
    let total = flows.count + requests.count
    var written = 0
    progress(.storing(written: 0, total: total))
    for source in sources {
      for batch in stride(from: source.flows.lowerBound, to: source.flows.upperBound, by: 10_000) {
        let slice = flows[batch..<min(source.flows.upperBound, batch + 10_000)]
        try store.write(flows: slice, source: source.id, ids: ids)
        written += slice.count
        progress(.storing(written: written, total: total))
      }
      for batch in stride(from: source.requests.lowerBound, to: source.requests.upperBound, by: 10_000) {
        let slice = requests[batch..<min(source.requests.upperBound, batch + 10_000)]
        try store.write(requests: slice, source: source.id, ids: ids)
        written += slice.count
        progress(.storing(written: written, total: total))
      }
      var rollups = RollupBuilder()
      for index in source.flows { rollups.add(flows[index]) }
      for index in source.requests { rollups.add(requests[index]) }
      try store.write(rollups: rollups, source: source.id, ids: ids)
      try store.finishSource(source.id)
    }
    return Result(summary: try store.summary(), notes: notes)
  }
}

/// A `fathom lab record` directory read back: captures with their capture points, the event log.
public struct LabRecording {
  public let directory: String
  public let captures: [(path: String, point: CapturePoint)]
  public var eventLogPath: String { "\(directory)/objects-events.jsonl" }

  public init(directory: String) throws {
    self.directory = directory
    guard let data = FileManager.default.contents(atPath: "\(directory)/manifest.json"),
      let manifest = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
      let nodes = manifest["nodes"] as? [[String: Any]]
    else { throw KubeDecoder.Failure(message: "\(directory): not a lab recording (no readable manifest.json)") }
    var podInterfaces: [String: String] = [:]
    if let topologyTree = manifest["topology"],
      let topology = try? JSONDecoder().decode(
        Topology.self, from: JSONSerialization.data(withJSONObject: topologyTree))
    {
      for pod in LabPlan(topology).pods where !pod.hostNetwork { podInterfaces[pod.hostVeth] = pod.key }
    }
    captures = nodes.compactMap { node in
      guard let name = node["name"] as? String, let file = node["capture"] as? String else { return nil }
      var point = CapturePoint(node: name)
      for (index, interface) in (node["interfaces"] as? [String: String]) ?? [:] {
        point.interfaceNames["ifindex:\(index)"] = interface
      }
      point.podInterfaces = podInterfaces
      return ("\(directory)/\(file)", point)
    }
  }
}

/// Carries a value into a closure that may run on other threads; the caller serialises its use.
private struct UncheckedBox<Value>: @unchecked Sendable {
  let value: Value
  init(_ value: Value) { self.value = value }
}
