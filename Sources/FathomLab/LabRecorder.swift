import FathomCapture
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// `lab record`: a "lab recording" directory that later stages analyse —
///   `<node>.pcap`              one capture per node (Fathom's own live capture on `any` in the
///                              node's namespace: the pod veth host ends and the uplink; lo and
///                              the cni0 bridge are filtered out so no packet is seen twice on
///                              the bridge device), SLL2 frames whose interface index
///                              `manifest.json` maps to names
///   `objects-events.jsonl`     the objects' event log (watch events with times)
///   `objects.json`             the objects at the end of the recording (a `List`)
///   `samples.jsonl`            resource samples within the recording's time range
///   `load-truth.jsonl`         client-side truth of every request the load sent
///   `manifest.json`            topology, time range, faults, nodes, interfaces, capture counters
public struct LabRecorder {
  let store: LabStore

  public init(store: LabStore) { self.store = store }

  final class TimedJob: @unchecked Sendable {
    var error: Error?
    var done = false
  }

  final class CaptureJob: @unchecked Sendable {
    let capture: LiveCapture
    let path: String
    var error: Error?
    var done = false
    init(capture: LiveCapture, path: String) {
      self.capture = capture
      self.path = path
    }
  }

  /// Something done while recording, `after` seconds into it (a fault applied after a healthy
  /// baseline); its error ends the recording with that error.
  public struct TimedAction: Sendable {
    public var after: Double
    public var action: @Sendable () throws -> Void
    public init(after: Double, action: @escaping @Sendable () throws -> Void) {
      self.after = after
      self.action = action
    }
  }

  public func record(
    duration: Double, output: String, runLoad: Bool, rate: Double?, paths: Set<String>? = nil,
    during timed: TimedAction? = nil, progress: (String) -> Void
  ) throws {
    let state = try store.load()
    let plan = LabPlan(state.topology)
    try Files.makeDirectory(output)
    var interfaces: [String: [String: String]] = [:]
    var jobs: [CaptureJob] = []
    for node in plan.nodes {
      let links = try Self.links(node.netns)
      interfaces[node.name] = Dictionary(uniqueKeysWithValues: links.map { (String($0.index), $0.name) })
      let excluded = links.filter { $0.name == "lo" || $0.name == "cni0" }.map { "not ifindex \($0.index)" }
      var options = LiveCaptureOptions(interface: "any")
      options.netns = node.netns
      options.filter = excluded.joined(separator: " and ")
      // A bound only: the captures are stopped below, when the load's last request was answered.
      options.duration = duration + 30
      options.bufferBytes = 64 << 20
      jobs.append(CaptureJob(capture: LiveCapture(options: options), path: "\(output)/\(node.name).pcap"))
    }
    let started = now()
    for job in jobs {
      Thread.detachNewThread {
        var sink = PcapFileSink(path: job.path, snapLength: job.capture.options.snapLength)
        do {
          try job.capture.runOnDedicatedThread(into: &sink)
          try sink.finish(linkType: 276)
        } catch {
          job.error = error
        }
        job.done = true
      }
    }
    // The load starts once every node's capture is open (a fixed pause was not always enough on
    // a loaded machine: a node whose capture opened late would miss the first requests' later
    // hops), bounded: a capture that fails ends the recording with its error below.
    let openBy = now() + 10
    while now() < openBy && jobs.contains(where: { !$0.capture.isCapturing && !$0.done }) { usleep(10_000) }
    progress("recording \(plan.nodes.count) nodes for \(Int(duration)) s into \(output)")
    let truthPath = "\(output)/load-truth.jsonl"
    try? FileManager.default.removeItem(atPath: truthPath)
    let timedJob = timed.map { timed in
      let job = TimedJob()
      Thread.detachNewThread {
        let delay = started + timed.after - now()
        if delay > 0 { usleep(useconds_t(delay * 1e6)) }
        do { try timed.action() } catch { job.error = error }
        job.done = true
      }
      return job
    }
    if runLoad {
      let summary = try LabLoad(store: store).run(
        rate: rate, duration: max(0, duration - 1.5), output: truthPath, paths: paths
      ) {
        progress(LabLoad.format($0))
      }
      progress(LabLoad.format(summary))
    }
    // Capture until the planned end, and past it until the load's last request was answered:
    // a request still in flight when the captures stopped would be in the truth and not in them.
    let stopAt = max(started + duration, now() + 0.5)
    while jobs.contains(where: { !$0.done }) {
      if now() >= stopAt { jobs.forEach { $0.capture.stop() } }
      usleep(50_000)
    }
    let ended = now()
    while let timedJob, !timedJob.done { usleep(10_000) }
    if let error = jobs.compactMap(\.error).first ?? timedJob?.error { throw error }

    let eventLog = Files.read(store.eventsPath) ?? ""
    try Files.write(eventLog, to: "\(output)/objects-events.jsonl")
    let objects = try KubeObjects.list(eventsPath: store.eventsPath, at: nil)
    try Files.write(KubeObjects.json(objects), to: "\(output)/objects.json")
    var samples = ""
    for line in (Files.read(store.samplesPath) ?? "").split(separator: "\n") {
      guard let record = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
        let time = (record["time"] as? String).flatMap(parseTime), time >= started - 1, time <= ended + 1
      else { continue }
      samples += line + "\n"
    }
    try Files.write(samples, to: "\(output)/samples.jsonl")
    if !runLoad { try Files.write("", to: truthPath) }

    let current = try store.load()
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let topology = (try? JSONSerialization.jsonObject(with: encoder.encode(current.original))) ?? [:]
    let manifest: [String: Any] = [
      "format": "fathom-lab-recording/1",
      "start": rfc3339(started, fraction: true), "end": rfc3339(ended, fraction: true),
      "topology": topology,
      "faults": current.faults.map {
        ["name": $0.name, "target": $0.target, "applied_at": rfc3339($0.appliedAt, fraction: true)]
      },
      "nodes": plan.nodes.map { node -> [String: Any] in
        let job = jobs.first { $0.path.hasSuffix("/\(node.name).pcap") }!
        return [
          "name": node.name, "ip": node.ip, "pod_cidr": node.podCIDR, "capture": "\(node.name).pcap",
          "interfaces": interfaces[node.name] ?? [:], "packets": job.capture.counters.packets,
          "kernel_drops": job.capture.counters.kernelDrops,
        ]
      },
      "load_paths": runLoad
        ? (paths?.sorted() ?? (state.topology.load.inCluster + state.topology.load.external).map(\.path)) : [],
      "external_client": plan.clientIP, "external_dns": plan.externalDNSIP,
      "files": [
        "objects_events": "objects-events.jsonl", "objects": "objects.json", "samples": "samples.jsonl",
        "load_truth": "load-truth.jsonl",
      ],
    ]
    try Files.write(KubeObjects.json(manifest), to: "\(output)/manifest.json")
    let packets = jobs.map { $0.capture.counters.packets }.reduce(0, +)
    let drops = jobs.map { $0.capture.counters.kernelDrops }.reduce(0, +)
    progress(
      "recorded \(packets) packets (\(drops) dropped by the kernel) in \(String(format: "%.1f", ended - started)) s")
  }

  /// Interface index and name of every link in a namespace.
  static func links(_ netns: String) throws -> [(index: Int, name: String)] {
    let text = try Shell.run(["ip", "-n", netns, "-o", "link", "show"])
    return text.split(separator: "\n").compactMap { line in
      let fields = line.split(separator: ":", maxSplits: 2).map { $0.trimmingCharacters(in: .whitespaces) }
      guard fields.count >= 2, let index = Int(fields[0]) else { return nil }
      let name = fields[1].split(separator: "@").first.map(String.init) ?? fields[1]
      return (index, name)
    }
  }
}
