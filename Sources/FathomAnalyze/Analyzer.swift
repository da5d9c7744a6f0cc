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
    var pending: [(source: Int64, flows: [TaggedFlow], requests: [TaggedRequest])] = []
    for (path, point) in captures {
      guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
        throw KubeDecoder.Failure(message: "cannot read \(path): no such file")
      }
      let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
      let modified = Int64((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)
      switch try store.beginSource(path: path, size: size, modified: modified) {
      case .skip:
        notes.append("\(path): already stored, skipped")
        continue
      case .read(let id, let restarted):
        if restarted {
          notes.append("\(path): an earlier run stopped while storing it; its rows were removed and it is read again")
        }
        progress(.reading(path: path, node: point.node, fraction: 0))
        final class Collected: @unchecked Sendable {
          var flows: [TaggedFlow] = []
          var requests: [TaggedRequest] = []
        }
        let collected = Collected()
        let summary = try FlowPipeline.run(
          file: path,
          handler: { flows in collected.flows += flows.map { tagger.tag($0, point: point) } },
          requestHandler: { requests in collected.requests += requests.map { tagger.tag($0, point: point) } },
          progress: { progress(.reading(path: path, node: point.node, fraction: $0)) })
        notes.append("\(path): \(summary.line)")
        pending.append((id, collected.flows, collected.requests))
      }
    }

    // Link each connection's records before and after DNAT, across all captures.
    var allFlows = pending.flatMap(\.flows)
    var allRequests = pending.flatMap(\.requests)
    AutoTagger.linkAcrossDNAT(flows: &allFlows, requests: &allRequests)
    let ids = try store.register(index.resources)
    var flowOffset = 0
    var requestOffset = 0
    let total = allFlows.count + allRequests.count
    var written = 0
    progress(.storing(written: 0, total: total))
    for entry in pending {
      let flows = Array(allFlows[flowOffset..<flowOffset + entry.flows.count])
      let requests = Array(allRequests[requestOffset..<requestOffset + entry.requests.count])
      flowOffset += entry.flows.count
      requestOffset += entry.requests.count
      for batch in stride(from: 0, to: flows.count, by: 10_000) {
        let slice = Array(flows[batch..<min(flows.count, batch + 10_000)])
        try store.write(flows: slice, source: entry.source, ids: ids)
        written += slice.count
        progress(.storing(written: written, total: total))
      }
      for batch in stride(from: 0, to: requests.count, by: 10_000) {
        let slice = Array(requests[batch..<min(requests.count, batch + 10_000)])
        try store.write(requests: slice, source: entry.source, ids: ids)
        written += slice.count
        progress(.storing(written: written, total: total))
      }
      var rollups = RollupBuilder()
      for flow in flows { rollups.add(flow) }
      for request in requests { rollups.add(request) }
      try store.write(rollups: rollups, source: entry.source, ids: ids)
      try store.finishSource(entry.source)
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
