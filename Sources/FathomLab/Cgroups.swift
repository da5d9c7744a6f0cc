import Foundation

/// Per-pod cgroups under `fathom-lab/<node>/<pod>`, with the topology's CPU and memory limits, on
/// cgroup v2 (unified) or v1 (separate cpu, cpuacct and memory hierarchies), whichever the
/// machine has. Node figures are the sums over the node's cgroup.
public struct Cgroups: Sendable {
  public enum Version: Sendable { case v1, v2 }
  public let version: Version
  static let group = "fathom-lab"
  static let cfsPeriodMicros = 100_000

  public init() {
    version = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers") ? .v2 : .v1
  }

  /// Directories (one per v1 hierarchy, one on v2) of a pod's or node's cgroup.
  func directories(_ path: String) -> [String] {
    switch version {
    case .v2: ["/sys/fs/cgroup/\(Self.group)/\(path)"]
    case .v1: ["cpu", "cpuacct", "memory"].map { "/sys/fs/cgroup/\($0)/\(Self.group)/\(path)" }
    }
  }

  public func create(node: String, pod: String?, cpuMillicores: Int?, memoryBytes: Int?) throws {
    let path = pod.map { "\(node)/\($0)" } ?? node
    if version == .v2 {
      try? Files.writeInPlace("+cpu +memory", to: "/sys/fs/cgroup/cgroup.subtree_control")
      try? Files.makeDirectory("/sys/fs/cgroup/\(Self.group)")
      try? Files.writeInPlace("+cpu +memory", to: "/sys/fs/cgroup/\(Self.group)/cgroup.subtree_control")
      try? Files.makeDirectory("/sys/fs/cgroup/\(Self.group)/\(node)")
      try? Files.writeInPlace("+cpu +memory", to: "/sys/fs/cgroup/\(Self.group)/\(node)/cgroup.subtree_control")
    }
    for directory in directories(path) {
      try Files.makeDirectory(directory)
    }
    try setLimits(node: node, pod: pod, cpuMillicores: cpuMillicores, memoryBytes: memoryBytes)
  }

  public func setLimits(node: String, pod: String?, cpuMillicores: Int?, memoryBytes: Int?) throws {
    let path = pod.map { "\(node)/\($0)" } ?? node
    let quota = cpuMillicores.map { max(1000, $0 * Self.cfsPeriodMicros / 1000) }
    switch version {
    case .v2:
      let base = "/sys/fs/cgroup/\(Self.group)/\(path)"
      try Files.writeInPlace(
        quota.map { "\($0) \(Self.cfsPeriodMicros)" } ?? "max \(Self.cfsPeriodMicros)", to: "\(base)/cpu.max")
      try Files.writeInPlace(memoryBytes.map(String.init) ?? "max", to: "\(base)/memory.max")
    case .v1:
      let cpu = "/sys/fs/cgroup/cpu/\(Self.group)/\(path)"
      try Files.writeInPlace(String(Self.cfsPeriodMicros), to: "\(cpu)/cpu.cfs_period_us")
      try Files.writeInPlace(quota.map(String.init) ?? "-1", to: "\(cpu)/cpu.cfs_quota_us")
      let memory = "/sys/fs/cgroup/memory/\(Self.group)/\(path)"
      try Files.writeInPlace(memoryBytes.map(String.init) ?? "-1", to: "\(memory)/memory.limit_in_bytes")
    }
  }

  /// `cgroup.procs` files a process writes its own pid to before exec'ing the pod's program, so
  /// that everything it forks is inside (no race with early children).
  public func procsFiles(node: String, pod: String) -> [String] {
    directories("\(node)/\(pod)").map { "\($0)/cgroup.procs" }
  }

  /// Every process in a pod's cgroup (a pod's program and whatever it forked).
  public func processes(node: String, pod: String) -> [pid_t] {
    let file = directories("\(node)/\(pod)")[0] + "/cgroup.procs"
    return (Files.read(file) ?? "").split(separator: "\n").compactMap { pid_t($0) }
  }

  /// Kills a pod as the container runtime does: every process in its cgroup, not only the first.
  public func killPod(node: String, pod: String, main: pid_t?) {
    if let main { kill(main, SIGKILL) }
    for pid in processes(node: node, pod: pod) { kill(pid, SIGKILL) }
  }

  public struct Usage: Sendable {
    public var cpuMicros: Int = 0
    public var periods: Int = 0
    public var throttledPeriods: Int = 0
    public var throttledMicros: Int = 0
    public var memoryBytes: Int = 0
    public var memoryLimitBytes: Int?
    public var memoryFailures: Int = 0
    public var oomKills: Int = 0
  }

  public func usage(node: String, pod: String?) -> Usage {
    let path = pod.map { "\(node)/\($0)" } ?? node
    var usage = Usage()
    switch version {
    case .v2:
      let base = "/sys/fs/cgroup/\(Self.group)/\(path)"
      let cpu = keyValues("\(base)/cpu.stat")
      usage.cpuMicros = cpu["usage_usec"] ?? 0
      usage.periods = cpu["nr_periods"] ?? 0
      usage.throttledPeriods = cpu["nr_throttled"] ?? 0
      usage.throttledMicros = cpu["throttled_usec"] ?? 0
      usage.memoryBytes = number("\(base)/memory.current") ?? 0
      usage.memoryLimitBytes = number("\(base)/memory.max")
      let events = keyValues("\(base)/memory.events")
      usage.memoryFailures = events["max"] ?? 0
      usage.oomKills = events["oom_kill"] ?? 0
    case .v1:
      let cpu = keyValues("/sys/fs/cgroup/cpu/\(Self.group)/\(path)/cpu.stat")
      usage.periods = cpu["nr_periods"] ?? 0
      usage.throttledPeriods = cpu["nr_throttled"] ?? 0
      usage.throttledMicros = (cpu["throttled_time"] ?? 0) / 1000
      usage.cpuMicros = (number("/sys/fs/cgroup/cpuacct/\(Self.group)/\(path)/cpuacct.usage") ?? 0) / 1000
      let memory = "/sys/fs/cgroup/memory/\(Self.group)/\(path)"
      usage.memoryBytes = number("\(memory)/memory.usage_in_bytes") ?? 0
      let limit = number("\(memory)/memory.limit_in_bytes")
      usage.memoryLimitBytes = (limit ?? 0) >= (1 << 62) ? nil : limit
      usage.memoryFailures = number("\(memory)/memory.failcnt") ?? 0
      usage.oomKills = keyValues("\(memory)/memory.oom_control")["oom_kill"] ?? 0
    }
    return usage
  }

  /// Removes the lab's cgroups (children first); a cgroup with processes left stays.
  public func removeAll() {
    let roots: [String]
    switch version {
    case .v2: roots = ["/sys/fs/cgroup/\(Self.group)"]
    case .v1: roots = ["cpu", "cpuacct", "memory"].map { "/sys/fs/cgroup/\($0)/\(Self.group)" }
    }
    for root in roots {
      guard let nodes = try? FileManager.default.contentsOfDirectory(atPath: root) else { continue }
      for node in nodes {
        let nodePath = "\(root)/\(node)"
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: nodePath, isDirectory: &isDirectory), isDirectory.boolValue else {
          continue
        }
        for pod in (try? FileManager.default.contentsOfDirectory(atPath: nodePath)) ?? [] {
          var podIsDirectory: ObjCBool = false
          if FileManager.default.fileExists(atPath: "\(nodePath)/\(pod)", isDirectory: &podIsDirectory),
            podIsDirectory.boolValue
          {
            rmdir("\(nodePath)/\(pod)")
          }
        }
        rmdir(nodePath)
      }
      rmdir(root)
    }
  }

  func number(_ path: String) -> Int? {
    Files.read(path).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
  }

  func keyValues(_ path: String) -> [String: Int] {
    var values: [String: Int] = [:]
    for line in (Files.read(path) ?? "").split(separator: "\n") {
      let fields = line.split(separator: " ")
      if fields.count == 2, let value = Int(fields[1]) { values[String(fields[0])] = value }
    }
    return values
  }
}
