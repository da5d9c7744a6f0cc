import CMemory
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
    /// Records stored so far (they are written while the captures are still being read).
    case stored(records: Int)
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
    var bytesToRead: Int64 = 0
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
        bytesToRead += size
      }
    }

    // In a long analysis, batches and the linking window's chunks (1–5 MB each) come and go all
    // run long; from mmap, a freed one goes back to the system (docs/storage.md has the measured
    // peaks). Short ones skip it: fresh pages cost them ~20% of their time.
    if bytesToRead > 256 << 20 { fathom_allocate_large_from_mmap(1 << 20) }

    // Every capture on its own thread (they advance in step, see IngestStream), the records
    // linked across DNAT in a moving window and written by this thread as they leave it.
    let stream = IngestStream(captures: toRead.count)
    final class Reading: @unchecked Sendable {
      var line = ""
      var error: (any Error)?
    }
    let readings = toRead.map { _ in Reading() }
    let progressLock = NSLock()
    let readers = DispatchGroup()
    var written = 0
    try withoutActuallyEscaping(progress) { progress in
      let report = UncheckedBox(progress)
      let show: @Sendable (Progress) -> Void = { update in progressLock.withLock { report.value(update) } }
      for (position, input) in toRead.enumerated() {
        let reading = readings[position]
        let (path, point) = (input.path, input.point)
        readers.enter()
        Thread.detachNewThread {
          defer {
            stream.end(capture: position)
            readers.leave()
          }
          show(.reading(path: path, node: point.node, fraction: 0))
          do {
            let summary = try FlowPipeline.run(
              file: path,
              handler: { flows in
                stream.deliver(capture: position, flows: flows.map { tagger.tag($0, point: point) }, requests: [])
              },
              requestHandler: { requests in
                stream.deliver(
                  capture: position, flows: [], requests: requests.map { tagger.tag($0, point: point) })
              },
              progress: { show(.reading(path: path, node: point.node, fraction: $0)) })
            reading.line = summary.line
          } catch {
            reading.error = error
            stream.fail(error)
          }
        }
      }

      let ids: [Int32: Int64]
      do { ids = try store.register(index.resources) } catch {
        stream.fail(error)
        readers.wait()
        throw error
      }
      var rollups = toRead.map { SourceRollups(source: $0.source) }
      do {
        while let batch = stream.next() {
          let source = toRead[batch.capture].source
          if !batch.flows.isEmpty { try store.write(flows: batch.flows[...], source: source, ids: ids) }
          if !batch.requests.isEmpty { try store.write(requests: batch.requests[...], source: source, ids: ids) }
          for index in batch.flows.indices { rollups[batch.capture].add(batch.flows[index]) }
          for index in batch.requests.indices { rollups[batch.capture].add(batch.requests[index]) }
          try rollups[batch.capture].writeClosed(to: store, ids: ids)
          written += batch.count
          show(.stored(records: written))
        }
      } catch {
        stream.fail(error)
        readers.wait()
        throw error
      }
      readers.wait()
      if let error = readings.compactMap(\.error).first { throw error }
      for (position, input) in toRead.enumerated() {
        try rollups[position].writeAll(to: store, ids: ids)
        try store.finishSource(input.source)
      }
    }
    for reading in readings { notes.append(reading.line) }  // each begins with its capture's path
    if toRead.count > 1 {
      notes.append(
        "linked across DNAT in a \(stream.windowMicros / 1_000_000) s window: at most \(stream.peakHeld) records held at once"
      )
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
