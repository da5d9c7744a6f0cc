import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The lab's control plane and kubelets in one background process (`fathom lab controller`,
/// started by `lab up`): it starts each pod's program in the pod's namespace and cgroup,
/// restarts it when it exits (with back-off, counting restarts), probes readiness (a listening
/// socket on the pod's port), marks nodes NotReady when their uplink has been down for the grace
/// period, reconciles kube-proxy rules, DNS records, ingress configuration and the objects'
/// event log whenever any of that changes, and samples resources every second.
public final class LabController {
  let store: LabStore
  let cgroups = Cgroups()
  var children: [pid_t: String] = [:]
  var lastSample = 0.0

  public init(store: LabStore) { self.store = store }

  public func run() -> Never {
    signal(SIGPIPE, SIG_IGN)
    log("controller \(getpid()) started")
    while true {
      reap()
      do {
        try store.update { state in
          try startSystemProcesses(&state)
          // Configuration first: a pod's program must find its config file when it starts.
          try Reconciler(store: store).apply(&state)
          supervise(&state)
          probe(&state)
          monitorNodes(&state)
          try Reconciler(store: store).apply(&state)
        }
      } catch {
        log("tick: \(error)")
        if !store.exists { exit(0) }
      }
      if now() - lastSample >= 1 {
        lastSample = now()
        if let state = try? store.load() { sample(state) }
      }
      usleep(200_000)
    }
  }

  func log(_ message: String) {
    Files.append("\(rfc3339(now(), fraction: true)) \(message)", to: store.controllerLog)
  }

  /// Collects exited children and marks their pods not running.
  func reap() {
    while true {
      var status: Int32 = 0
      let pid = waitpid(-1, &status, WNOHANG)
      guard pid > 0 else { return }
      guard let key = children.removeValue(forKey: pid) else { continue }
      let signalled = status & 0x7f
      let code: Int32 = signalled != 0 ? 128 + signalled : (status >> 8) & 0xff
      try? store.update { state in
        guard var pod = state.pods[key], pod.pid == pid else { return }
        pod.pid = nil
        pod.ready = false
        pod.lastExitCode = code
        pod.lastTerminationReason = "Error"
        if code == 137, let plan = LabPlan(state.topology).pod(key),
          cgroups.usage(node: plan.node, pod: plan.cgroupName).oomKills > 0
        {
          pod.lastTerminationReason = "OOMKilled"
        }
        if !pod.stopped {
          pod.restarts += 1
          // Kubernetes' CrashLoopBackOff starts at 10 s, doubles to 5 min, and starts over after
          // a container ran for 10 min; the lab uses 1 s doubling to 16 s, starting over after
          // 32 s, so that faults and their recovery fit in a short recording.
          let ranLong = pod.startedAt.map { now() - $0 >= 32 } ?? false
          let streak = ranLong ? 1 : (pod.backoffStreak ?? 0) + 1
          pod.backoffStreak = streak
          pod.nextStartAt = now() + min(16, pow(2, Double(min(streak - 1, 4))))
        }
        state.pods[key] = pod
        log("pod \(key) exited with \(code); restarts \(pod.restarts)")
      }
    }
  }

  /// Node holders (a process in each node namespace, for its interface counters) and the
  /// external DNS server.
  func startSystemProcesses(_ state: inout LabState) throws {
    let plan = LabPlan(state.topology)
    for node in plan.nodes {
      if let pid = state.nodes[node.name]?.holderPID, kill(pid, 0) == 0 { continue }
      let pid = try Shell.spawn(["ip", "netns", "exec", node.netns, "sleep", "infinity"], log: "/dev/null")
      children[pid] = "node/\(node.name)"
      state.nodes[node.name]?.holderPID = pid
    }
    if state.externalDNSPID.map({ kill($0, 0) != 0 }) ?? true {
      let directory = "\(store.root)/external-dns"
      try Files.makeDirectory(directory)
      let records = state.topology.externalDNS.compactMap { name in
        plan.node(named: name.node).map { (name.name, $0.ip) }
      }
      try Files.write(
        ServerConfigs.externalDNS(listen: plan.externalDNSIP, records: records, log: "\(directory)/queries.log"),
        to: "\(directory)/dnsmasq.conf")
      let pid = try Shell.spawn(
        [
          "ip", "netns", "exec", LabPlan.externalDNSNamespace, "dnsmasq", "--keep-in-foreground",
          "--conf-file=\(directory)/dnsmasq.conf",
        ], log: "\(directory)/log")
      children[pid] = "external-dns"
      state.externalDNSPID = pid
    }
  }

  func supervise(_ state: inout LabState) {
    let plan = LabPlan(state.topology)
    let time = now()
    for pod in plan.pods {
      guard var runtime = state.pods[pod.key] else { continue }
      if let pid = runtime.pid, kill(pid, 0) != 0 {
        // Not our child (the controller restarted) and gone.
        runtime.pid = nil
        runtime.ready = false
      }
      if let pid = runtime.pid {
        if runtime.stopped {
          cgroups.killPod(node: pod.node, pod: pod.cgroupName, main: pid)
        } else if runtime.crashLoop, let started = runtime.startedAt, time - started > 2 {
          log("pod \(pod.key): crash loop, killing \(pid)")
          cgroups.killPod(node: pod.node, pod: pod.cgroupName, main: pid)
        }
      } else if !runtime.stopped, time >= runtime.nextStartAt {
        do {
          let pid = try start(pod, plan: plan)
          children[pid] = pod.key
          runtime.pid = pid
          runtime.startedAt = time
          log("pod \(pod.key) started as \(pid)")
        } catch {
          log("pod \(pod.key): \(error)")
          runtime.nextStartAt = time + 5
        }
      }
      state.pods[pod.key] = runtime
    }
  }

  func start(_ pod: LabPlan.PodPlan, plan: LabPlan) throws -> pid_t {
    let directory = store.podDirectory(pod)
    try Files.makeDirectory(directory + "/tmp")
    let program: [String]
    let deployment = pod.deployment
    switch deployment.program {
    case .web:
      program =
        [
          Shell.fathomExecutable, "lab", "serve", "--name", deployment.name, "--pod", pod.name, "--port",
          String(deployment.port ?? 8080), "--control", "\(directory)/control",
        ] + (deployment.calls ?? []).flatMap { ["--call", $0] } + (deployment.redis.map { ["--redis", $0] } ?? [])
    case .redis:
      program = [
        "redis-server", "--bind", pod.ip, "--port", String(deployment.port ?? 6379), "--save", "", "--appendonly", "no",
        "--protected-mode", "no", "--daemonize", "no",
      ]
    case .dns:
      program = ["dnsmasq", "--keep-in-foreground", "--conf-file=\(directory)/dnsmasq.conf"]
    case .ingress:
      program = ["nginx", "-c", "\(directory)/nginx.conf", "-g", "daemon off;"]
    case .client:
      program = ["sleep", "infinity"]
    }
    let joinCgroup = cgroups.procsFiles(node: pod.node, pod: pod.cgroupName).map { "echo $$ > \($0)" }.joined(
      separator: "; ")
    return try Shell.spawn(
      ["/bin/sh", "-c", "\(joinCgroup); exec \"$@\"", "sh", "ip", "netns", "exec", pod.netns] + program,
      log: "\(directory)/log")
  }

  /// Readiness: the pod's program listens on its port (TCP; UDP for DNS), seen in the socket
  /// table of the pod's namespace. Pods on a NotReady node are not ready.
  func probe(_ state: inout LabState) {
    let plan = LabPlan(state.topology)
    for pod in plan.pods {
      guard var runtime = state.pods[pod.key] else { continue }
      let nodeReady = state.nodes[pod.node]?.ready ?? true
      if let pid = runtime.pid, nodeReady {
        switch pod.deployment.program {
        case .client: runtime.ready = true
        case .dns: runtime.ready = Self.listening(pid: pid, port: pod.deployment.port ?? 53, table: "udp")
        default: runtime.ready = Self.listening(pid: pid, port: pod.deployment.port ?? 0, table: "tcp")
        }
      } else {
        runtime.ready = false
      }
      state.pods[pod.key] = runtime
    }
  }

  static func listening(pid: pid_t, port: Int, table: String) -> Bool {
    guard let text = Files.read("/proc/\(pid)/net/\(table)") else { return false }
    let portHex = String(format: ":%04X", port)
    for line in text.split(separator: "\n").dropFirst() {
      let fields = line.split(separator: " ")
      guard fields.count > 3, fields[1].hasSuffix(portHex) else { continue }
      // TCP LISTEN is state 0A; a bound UDP socket shows 07.
      if table == "tcp" ? fields[3] == "0A" : fields[3] == "07" { return true }
    }
    return false
  }

  func monitorNodes(_ state: inout LabState) {
    let grace = state.topology.cluster.nodeMonitorGracePeriod
    for (name, var node) in state.nodes {
      let ready = node.uplinkDownSince.map { now() - $0 < grace } ?? true
      if ready != node.ready {
        log("node \(name) \(ready ? "Ready" : "NotReady")")
        node.ready = ready
        state.nodes[name] = node
      }
    }
  }

  /// One line per pod and per node: CPU, throttling, memory, OOM, interface counters, readiness.
  func sample(_ state: LabState) {
    let plan = LabPlan(state.topology)
    let time = rfc3339(now(), fraction: true)
    var lines: [String] = []
    for pod in plan.pods {
      let runtime = state.pods[pod.key] ?? LabState.PodRuntime()
      let usage = cgroups.usage(node: pod.node, pod: pod.cgroupName)
      var fields: [String: Any] = [
        "time": time, "kind": "pod", "namespace": pod.namespace, "name": pod.name, "node": pod.node,
        "ready": runtime.ready, "restarts": runtime.restarts, "running": runtime.pid != nil,
      ]
      add(usage, to: &fields, cpuLimit: (runtime.cpuOverride ?? pod.deployment.cpu).flatMap(Quantity.millicores))
      if !pod.hostNetwork, let pid = runtime.pid, let counters = Self.interfaceCounters(pid: pid)["eth0"] {
        fields["interface"] = "eth0"
        for (key, value) in counters { fields[key] = value }
      }
      lines.append(KubeObjects.json(fields))
    }
    for node in plan.nodes {
      let runtime = state.nodes[node.name] ?? LabState.NodeRuntime()
      var fields: [String: Any] = ["time": time, "kind": "node", "name": node.name, "ready": runtime.ready]
      var total = Cgroups.Usage()
      for pod in plan.pods where pod.node == node.name {
        let usage = cgroups.usage(node: pod.node, pod: pod.cgroupName)
        total.cpuMicros += usage.cpuMicros
        total.memoryBytes += usage.memoryBytes
        total.oomKills += usage.oomKills
        total.throttledPeriods += usage.throttledPeriods
        total.throttledMicros += usage.throttledMicros
        total.periods += usage.periods
      }
      add(total, to: &fields, cpuLimit: ProcessInfo.processInfo.activeProcessorCount * 1000)
      if let pid = runtime.holderPID {
        let interfaces = Self.interfaceCounters(pid: pid).filter { $0.key != "lo" }
        fields["interfaces"] = interfaces
      }
      lines.append(KubeObjects.json(fields))
    }
    Files.append(lines.joined(separator: "\n"), to: store.samplesPath)
  }

  func add(_ usage: Cgroups.Usage, to fields: inout [String: Any], cpuLimit: Int?) {
    fields["cpu_usage_us"] = usage.cpuMicros
    fields["cpu_periods"] = usage.periods
    fields["cpu_throttled_periods"] = usage.throttledPeriods
    fields["cpu_throttled_us"] = usage.throttledMicros
    if let cpuLimit { fields["cpu_limit_millicores"] = cpuLimit }
    fields["memory_bytes"] = usage.memoryBytes
    if let limit = usage.memoryLimitBytes { fields["memory_limit_bytes"] = limit }
    fields["memory_failures"] = usage.memoryFailures
    fields["oom_kills"] = usage.oomKills
  }

  /// /proc/PID/net/dev: the interfaces of PID's network namespace.
  static func interfaceCounters(pid: pid_t) -> [String: [String: Int]] {
    guard let text = Files.read("/proc/\(pid)/net/dev") else { return [:] }
    var result: [String: [String: Int]] = [:]
    for line in text.split(separator: "\n").dropFirst(2) {
      guard let colon = line.firstIndex(of: ":") else { continue }
      let name = line[line.startIndex..<colon].trimmingCharacters(in: .whitespaces)
      let values = line[line.index(after: colon)...].split(separator: " ").compactMap { Int($0) }
      guard values.count >= 12 else { continue }
      result[name] = [
        "rx_bytes": values[0], "rx_packets": values[1], "rx_dropped": values[3], "tx_bytes": values[8],
        "tx_packets": values[9], "tx_dropped": values[11],
      ]
    }
    return result
  }
}

/// Brings the kernel and the servers in line with the state: kube-proxy rules on every node,
/// the cluster DNS records, the ingress controllers' nginx configuration, the event log. Each is
/// rewritten only when its content changed.
public struct Reconciler {
  let store: LabStore

  public func apply(_ state: inout LabState) throws {
    let view = ClusterView(state: state)
    let plan = view.plan
    for node in plan.nodes {
      let runtime = state.nodes[node.name] ?? LabState.NodeRuntime()
      var rules = KubeProxyRules.render(
        view.serviceRules(node: node.name, stale: state.staleEndpoints), clusterCIDR: plan.clusterCIDR)
      rules += Self.lossRules(percent: runtime.lossPercent, interface: node.uplink)
      try Files.makeDirectory(store.nodeDirectory(node.name))
      let cache = "\(store.nodeDirectory(node.name))/iptables.rules"
      if Files.read(cache) != rules {
        try Shell.inNamespace(node.netns, ["iptables-restore"], input: rules)
        try Files.write(rules, to: cache)
      }
    }

    try Files.makeDirectory("\(store.root)/dns")
    let hostsPath = "\(store.root)/dns/hosts"
    let hosts = ServerConfigs.hosts(view.dnsRecords(removed: state.removedDNSNames))
    let hostsChanged = Files.read(hostsPath) != hosts
    if hostsChanged { try Files.write(hosts, to: hostsPath) }

    for pod in plan.pods {
      let directory = store.podDirectory(pod)
      let runtime = state.pods[pod.key]
      switch pod.deployment.program {
      case .dns:
        try Files.makeDirectory(directory)
        let config = ServerConfigs.clusterDNS(
          listen: pod.ip, hostsFile: hostsPath, domain: plan.topology.cluster.domain, log: "\(directory)/queries.log")
        if Files.read("\(directory)/dnsmasq.conf") != config {
          try Files.write(config, to: "\(directory)/dnsmasq.conf")
        }
        // dnsmasq re-reads addn-hosts on SIGHUP.
        if hostsChanged, let pid = runtime?.pid { kill(pid, SIGHUP) }
      case .ingress:
        try Files.makeDirectory(directory + "/tmp")
        let config = ServerConfigs.ingressNginx(
          listen: "\(pod.ip):\(pod.deployment.port ?? 80)", ingresses: state.topology.ingresses, view: view,
          directory: directory)
        if Files.read("\(directory)/nginx.conf") != config {
          try Files.write(config, to: "\(directory)/nginx.conf")
          if let pid = runtime?.pid { kill(pid, SIGHUP) }
        }
      default:
        break
      }
    }

    let lastPath = "\(store.root)/objects-last.json"
    let last =
      (Files.read(lastPath).flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } as? [String: String])
      ?? [:]
    let current = KubeObjects.recordChanges(&state, last: last, eventsPath: store.eventsPath)
    if current != last { try Files.write(KubeObjects.json(current), to: lastPath) }
  }

  /// Random drops on a node's uplink in both directions (fault net-loss), in the mangle table.
  static func lossRules(percent: Int, interface: String) -> String {
    var text = "*mangle\n"
    if percent > 0 {
      let probability = String(format: "%.4f", Double(percent) / 100)
      text += "-A PREROUTING -i \(interface) -m statistic --mode random --probability \(probability) -j DROP\n"
      text += "-A POSTROUTING -o \(interface) -m statistic --mode random --probability \(probability) -j DROP\n"
    }
    return text + "COMMIT\n"
  }
}
