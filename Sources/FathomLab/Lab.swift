import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The lab's lifecycle: `up` builds the network and starts the controller, `down` removes
/// everything the lab made (also what a crashed run left), `status` and `exec` look inside.
public struct Lab {
  public let store: LabStore
  public static let requiredTools = [
    "ip", "iptables", "iptables-restore", "sysctl", "dnsmasq", "nginx", "redis-server", "sleep",
  ]

  public init(store: LabStore = LabStore()) { self.store = store }

  public static func requireRootAndTools() throws {
    guard Shell.isRoot else {
      throw LabError.missing("the lab needs root (network namespaces, iptables, cgroups); run it with sudo")
    }
    try Shell.requireTools(requiredTools)
  }

  /// Builds the lab and waits until every pod is ready (at most `timeout` seconds).
  public func up(_ topology: Topology, timeout: Double = 25, progress: (String) -> Void) throws {
    try Self.requireRootAndTools()
    let leftovers = down()
    if !leftovers.isEmpty { progress("removed leftovers of an earlier lab: \(leftovers.joined(separator: ", "))") }
    try Files.makeDirectory(store.root)
    let state = LabState(topology: topology)
    try store.save(state)
    let plan = LabPlan(topology)
    progress("network: \(plan.nodes.count) nodes, \(plan.pods.count) pods, fabric \(topology.cluster.nodeNetwork).0/24")
    try LabNetwork.build(plan)
    let cgroups = Cgroups()
    for node in plan.nodes {
      try cgroups.create(node: node.name, pod: nil, cpuMillicores: nil, memoryBytes: nil)
    }
    for pod in plan.pods {
      try Files.makeDirectory(store.podDirectory(pod))
      try cgroups.create(
        node: pod.node, pod: pod.cgroupName,
        cpuMillicores: pod.deployment.cpu.flatMap(Quantity.millicores),
        memoryBytes: pod.deployment.memory.flatMap(Quantity.bytes))
    }
    let controller = try Shell.spawn([Shell.fathomExecutable, "lab", "controller"], log: store.controllerLog)
    try store.update { $0.controllerPID = controller }
    progress("controller started (pid \(controller)); waiting for pods to be ready")
    let deadline = now() + timeout
    while true {
      let state = try store.load()
      let waiting = state.pods.filter { !$0.value.ready && !$0.value.stopped }.map(\.key).sorted()
      if waiting.isEmpty { break }
      guard now() < deadline else {
        throw LabError.state(
          "pods not ready after \(Int(timeout)) s: \(waiting.joined(separator: ", ")); see \(store.root)/pods/*/log")
      }
      guard kill(controller, 0) == 0 else { throw LabError.state("the controller exited; see \(store.controllerLog)") }
      usleep(200_000)
    }
  }

  /// Removes everything a lab made; returns what it found (empty when there was nothing).
  @discardableResult
  public func down() -> [String] {
    var found: [String] = []
    if let state = try? store.load(), let pid = state.controllerPID, kill(pid, 0) == 0 {
      kill(pid, SIGKILL)
      found.append("controller \(pid)")
    }
    for pid in Self.labProcesses() {
      kill(pid, SIGKILL)
      found.append("process \(pid)")
    }
    let namespaces = LabNetwork.namespaces()
    if !namespaces.isEmpty { found.append("\(namespaces.count) network namespaces") }
    LabNetwork.teardown()
    let cgroups = Cgroups()
    for pid in Self.cgroupProcesses(cgroups) { kill(pid, SIGKILL) }
    cgroups.removeAll()
    if FileManager.default.fileExists(atPath: store.root) {
      try? FileManager.default.removeItem(atPath: store.root)
      found.append(store.root)
    }
    return found
  }

  /// What a lab would leave behind, if anything: namespaces, /etc/netns entries, netns mounts,
  /// cgroups, processes. Empty after a clean `down`.
  public func leftovers() -> [String] {
    var items = LabNetwork.namespaces().map { "netns \($0)" }
    if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/etc/netns") {
      items += entries.filter { $0.hasPrefix(LabPlan.namespacePrefix) }.map { "/etc/netns/\($0)" }
    }
    for line in (Files.read("/proc/mounts") ?? "").split(separator: "\n")
    where line.contains("/netns/\(LabPlan.namespacePrefix)") {
      items.append("mount \(line.split(separator: " ")[1])")
    }
    for root in [
      "/sys/fs/cgroup/\(Cgroups.group)", "/sys/fs/cgroup/cpu/\(Cgroups.group)",
      "/sys/fs/cgroup/memory/\(Cgroups.group)",
    ]
    where FileManager.default.fileExists(atPath: root) {
      items.append("cgroup \(root)")
    }
    items += Self.labProcesses().map { "process \($0)" }
    if FileManager.default.fileExists(atPath: store.root) { items.append(store.root) }
    return items
  }

  /// Processes of a lab: the controller, demo services, load workers, delay forwarders.
  static func labProcesses() -> [pid_t] {
    let me = getpid()
    var pids: [pid_t] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
      guard let pid = pid_t(entry), pid != me,
        let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
      else { continue }
      let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
      guard arguments.count >= 3, arguments[0].hasSuffix("fathom"), arguments[1] == "lab" else { continue }
      if ["controller", "serve", "load-worker", "dns-delay"].contains(arguments[2]) { pids.append(pid) }
    }
    return pids
  }

  static func cgroupProcesses(_ cgroups: Cgroups) -> [pid_t] {
    var pids: [pid_t] = []
    let root = cgroups.directories("")[0]
    guard let enumerator = FileManager.default.enumerator(atPath: root) else { return [] }
    while let path = enumerator.nextObject() as? String {
      guard path.hasSuffix("cgroup.procs") else { continue }
      pids += (Files.read("\(root)/\(path)") ?? "").split(separator: "\n").compactMap { pid_t($0) }
    }
    return pids
  }

  /// The network namespace of `pod/NS/NAME` (NAME may be a deployment), `node/NAME` or `client`.
  public func namespace(of target: String) throws -> String {
    let state = try store.load()
    let plan = LabPlan(state.topology)
    if target == "client" { return LabPlan.clientNamespace }
    if target.hasPrefix("node/"), let node = plan.node(named: String(target.dropFirst(5))) { return node.netns }
    if target.hasPrefix("pod/") {
      let key = String(target.dropFirst(4))
      if let pod = plan.pod(key) { return pod.netns }
      let parts = key.split(separator: "/").map(String.init)
      if parts.count == 2,
        let pod = plan.pods.first(where: { $0.namespace == parts[0] && $0.deployment.name == parts[1] })
      {
        return pod.netns
      }
    }
    throw LabError.command("unknown target \(target): use pod/NS/NAME, node/NAME or client")
  }

  /// Replaces this process with `command` inside the target's namespace.
  public func exec(_ target: String, _ command: [String]) throws -> Never {
    let netns = try namespace(of: target)
    guard !command.isEmpty else { throw LabError.command("lab exec: no command") }
    let arguments = ["ip", "netns", "exec", netns] + command
    let executable = try Shell.resolve("ip")
    let argv = arguments.map { strdup($0) } + [nil]
    execv(executable, argv)
    throw LabError.command("exec failed: \(String(cString: strerror(errno)))")
  }

  public func status() throws -> String {
    let state = try store.load()
    let view = ClusterView(state: state)
    let plan = view.plan
    var text = "nodes\n"
    for node in plan.nodes {
      let runtime = state.nodes[node.name]
      text +=
        "  \(node.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(node.ip.padding(toLength: 15, withPad: " ", startingAt: 0)) pods \(node.podCIDR.padding(toLength: 16, withPad: " ", startingAt: 0)) \((runtime?.ready ?? true) ? "Ready" : "NotReady")\((runtime?.lossPercent ?? 0) > 0 ? " loss \(runtime!.lossPercent)%" : "")\n"
    }
    text += "pods\n"
    for pod in plan.pods {
      let runtime = state.pods[pod.key] ?? LabState.PodRuntime()
      let status = runtime.ready ? "Ready" : (runtime.pid == nil ? (runtime.stopped ? "Stopped" : "Down") : "NotReady")
      text +=
        "  \(pod.key.padding(toLength: 52, withPad: " ", startingAt: 0)) \(pod.node.padding(toLength: 8, withPad: " ", startingAt: 0)) \(pod.ip.padding(toLength: 14, withPad: " ", startingAt: 0)) \(status.padding(toLength: 9, withPad: " ", startingAt: 0)) restarts \(runtime.restarts)\n"
    }
    text += "services\n"
    for service in view.services {
      let ports = service.service.ports.map { port in
        "\(port.port)→\(port.targetPort ?? port.port)/\(port.protocol ?? "TCP")"
          + (port.nodePort.map { " nodePort \($0)" } ?? "")
      }.joined(separator: ", ")
      text +=
        "  \(service.key.padding(toLength: 36, withPad: " ", startingAt: 0)) \(service.clusterIP.padding(toLength: 14, withPad: " ", startingAt: 0)) \(ports)  endpoints \(service.ready.count) ready, \(service.notReady.count) not ready\n"
    }
    text += "external client \(plan.clientIP), external DNS \(plan.externalDNSIP)\n"
    text +=
      state.faults.isEmpty
      ? "faults: none\n" : "faults: " + state.faults.map { "\($0.name) on \($0.target)" }.joined(separator: ", ") + "\n"
    return text
  }
}
