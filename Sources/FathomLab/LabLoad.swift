import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// One sender of load (`fathom lab load-worker`, run inside a pod's or the external client's
/// namespace): GETs each target at a fixed rate with a fresh X-Request-ID and traceparent, and
/// appends the client-side truth of every request to a JSON-lines file.
public final class LoadWorker: @unchecked Sendable {
  public struct Options: Sendable {
    public var sender: String
    public var targets: [Topology.LoadTarget]
    public var rate: Double
    public var duration: Double
    public var output: String
    public var maxInFlight = 64

    public init(sender: String, targets: [Topology.LoadTarget], rate: Double, duration: Double, output: String) {
      self.sender = sender
      self.targets = targets
      self.rate = rate
      self.duration = duration
      self.output = output
    }
  }

  let options: Options
  let lock = NSLock()
  var inFlight = 0
  var skipped = 0

  public init(options: Options) { self.options = options }

  public func run() {
    signal(SIGPIPE, SIG_IGN)
    let start = now()
    let interval = 1 / options.rate
    let stagger = interval / Double(max(1, options.targets.count))
    var tick = 0
    while true {
      let base = start + Double(tick) * interval
      if base - start >= options.duration { break }
      for (index, target) in options.targets.enumerated() {
        let due = base + Double(index) * stagger
        let wait = due - now()
        if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
        let admitted = lock.withLock { () -> Bool in
          guard inFlight < options.maxInFlight else {
            skipped += 1
            return false
          }
          inFlight += 1
          return true
        }
        guard admitted else { continue }
        Thread.detachNewThread { [self] in
          send(target)
          lock.withLock { inFlight -= 1 }
        }
      }
      tick += 1
    }
    // Let requests in flight finish (bounded by the client's own timeouts).
    let deadline = now() + 15
    while lock.withLock({ inFlight }) > 0 && now() < deadline { usleep(50_000) }
    if skipped > 0 {
      Files.append(
        KubeObjects.json(["sender": options.sender, "skipped_over_in_flight_limit": skipped]),
        to: options.output + ".skipped")
    }
  }

  func send(_ target: Topology.LoadTarget) {
    let requestID = TraceIDs.requestID()
    let traceID = TraceIDs.hex(16)
    let start = now()
    var record: [String: Any] = [
      "sender": options.sender, "path": target.path, "url": target.url, "x_request_id": requestID, "trace_id": traceID,
      "start_us": Int(start * 1_000_000),
    ]
    guard let parsed = HTTPClient.Target(url: target.url) else {
      record["error"] = "bad url"
      Files.append(KubeObjects.json(record), to: options.output)
      return
    }
    let response = HTTPClient().get(
      parsed,
      headers: [
        ("X-Request-ID", requestID), ("traceparent", TraceIDs.traceparent(traceID: traceID, spanID: TraceIDs.hex(8))),
      ])
    record["duration_us"] = response.durationMicros
    if let status = response.status { record["status"] = status }
    if let error = response.error { record["error"] = error }
    if let ip = response.serverIP { record["server_ip"] = ip }
    Files.append(KubeObjects.json(record), to: options.output)
  }
}

/// Runs load on all paths of the running lab: a worker in every client pod for the in-cluster
/// targets and one in the external client for the external targets; merges their truth files.
public struct LabLoad {
  let store: LabStore

  public init(store: LabStore) { self.store = store }

  public struct Summary: Sendable {
    public var rows: [(path: String, outcome: String, count: Int, p50Millis: Double, p99Millis: Double)]
    public var total: Int
  }

  /// Starts the workers; returns their pids and truth files. `paths` limits the load to those
  /// access paths (the targets' `path` names); nil: every path.
  public func start(rate: Double?, duration: Double, directory: String, paths: Set<String>? = nil) throws
    -> [(pid_t, String)]
  {
    let state = try store.load()
    let plan = LabPlan(state.topology)
    var load = state.topology.load
    if let paths {
      let known = Set((load.inCluster + load.external).map(\.path))
      guard paths.isSubset(of: known) else {
        throw LabError.command(
          "unknown load path \(paths.subtracting(known).sorted().joined(separator: ", ")); the topology has \(known.sorted().joined(separator: ", "))"
        )
      }
      load.inCluster.removeAll { !paths.contains($0.path) }
      load.external.removeAll { !paths.contains($0.path) }
    }
    try Files.makeDirectory(directory)
    var workers: [(pid_t, String)] = []
    let clients = plan.pods.filter {
      $0.namespace == load.clientNamespace && $0.deployment.name == load.clientDeployment
    }
    func spawn(_ netns: String, sender: String, targets: [Topology.LoadTarget]) throws {
      guard !targets.isEmpty else { return }
      let file = "\(directory)/truth-\(sender.replacingOccurrences(of: "/", with: "_")).jsonl"
      try? FileManager.default.removeItem(atPath: file)
      let arguments =
        [
          "ip", "netns", "exec", netns, Shell.fathomExecutable, "lab", "load-worker", "--sender", sender, "--rate",
          String(rate ?? load.rate), "--duration", String(duration), "--out", file,
        ] + targets.flatMap { ["--target", "\($0.path)=\($0.url)"] }
      workers.append((try Shell.spawn(arguments, log: "\(directory)/load-worker.log"), file))
    }
    for client in clients {
      try spawn(client.netns, sender: "pod/\(client.key)", targets: load.inCluster)
    }
    let external = load.external.map { target -> Topology.LoadTarget in
      var target = target
      if let parsed = HTTPClient.Target(url: target.url), let node = plan.node(named: parsed.host) {
        target.url = target.url.replacingOccurrences(of: "//\(parsed.host)", with: "//\(node.ip)")
      }
      return target
    }
    try spawn(LabPlan.clientNamespace, sender: "client", targets: external)
    return workers
  }

  /// Runs the load for `duration` seconds, calling `progress` with a summary every few seconds,
  /// and appends all truth records to `output`.
  public func run(
    rate: Double?, duration: Double, output: String, paths: Set<String>? = nil, progress: (Summary) -> Void
  ) throws -> Summary {
    let directory = "\(store.root)/load-\(getpid())"
    let workers = try start(rate: rate, duration: duration, directory: directory, paths: paths)
    var remaining = Set(workers.map(\.0))
    var lastReport = now()
    while !remaining.isEmpty {
      for pid in remaining {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { remaining.remove(pid) }
      }
      if now() - lastReport >= 5 && !remaining.isEmpty {
        lastReport = now()
        progress(Self.summarize(workers.map(\.1)))
      }
      usleep(100_000)
    }
    var merged = ""
    for (_, file) in workers { merged += Files.read(file) ?? "" }
    if !merged.isEmpty {
      let lines = merged.split(separator: "\n").map(String.init)
      Files.append(lines.joined(separator: "\n"), to: output)
    }
    try? FileManager.default.removeItem(atPath: directory)
    return Self.summarize(text: merged)
  }

  public static func summarize(_ files: [String]) -> Summary {
    summarize(text: files.compactMap { Files.read($0) }.joined())
  }

  /// Requests by path and outcome (HTTP status or error), with latency percentiles.
  public static func summarize(text: String) -> Summary {
    var groups: [String: [Double]] = [:]
    var total = 0
    for line in text.split(separator: "\n") {
      guard let record = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
        let path = record["path"] as? String
      else { continue }
      total += 1
      let outcome = (record["status"] as? Int).map(String.init) ?? (record["error"] as? String ?? "?")
      groups["\(path)\t\(outcome)", default: []].append(Double(record["duration_us"] as? Int ?? 0) / 1000)
    }
    let rows = groups.keys.sorted().map { key -> (String, String, Int, Double, Double) in
      let parts = key.split(separator: "\t", maxSplits: 1).map(String.init)
      let latencies = groups[key]!.sorted()
      func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
      return (parts[0], parts.count > 1 ? parts[1] : "", latencies.count, percentile(0.5), percentile(0.99))
    }
    return Summary(rows: rows, total: total)
  }

  public static func format(_ summary: Summary) -> String {
    var text = "path                  outcome                              requests   p50 ms   p99 ms\n"
    for row in summary.rows {
      text += row.path.padding(toLength: 22, withPad: " ", startingAt: 0)
      text += String(row.outcome.prefix(36)).padding(toLength: 37, withPad: " ", startingAt: 0)
      text += String(format: "%8d %8.1f %8.1f\n", row.count, row.p50Millis, row.p99Millis)
    }
    return text + "total \(summary.total) requests\n"
  }
}
