import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The fault catalog: each fault breaks one component the way it breaks in real clusters, and
/// names the runbook step and the component a correct diagnosis must point at.
public struct FaultSpec: Sendable {
  public enum TargetKind: String, Sendable { case service, pod, node, ingress, dns }
  public var name: String
  /// Runbook step that must find it: node-pod, service-golden, dns, service, ingress, path.
  public var step: String
  public var targetKind: TargetKind
  public var defaultTarget: String
  public var summary: String
  /// The component a diagnosis must name, with `{target}` for the resolved target.
  public var rootCause: String
  /// What a client sees.
  public var symptom: String

  public static let catalog: [FaultSpec] = [
    .init(
      name: "dns-nxdomain", step: "dns", targetKind: .service, defaultTarget: "shop/checkout",
      summary: "the Service's DNS record is removed from cluster DNS", rootCause: "dns (record {target})",
      symptom: "callers get NXDOMAIN for the name; the ClusterIP itself still works"),
    .init(
      name: "dns-down", step: "dns", targetKind: .dns, defaultTarget: "kube-system/coredns",
      summary: "the cluster DNS pod is stopped", rootCause: "dns (pods {target})",
      symptom: "lookups fail (kube-dns has no endpoints: REJECT); name-based calls fail"),
    .init(
      name: "dns-slow", step: "dns", targetKind: .dns, defaultTarget: "kube-system/coredns",
      summary: "cluster DNS answers 400 ms late", rootCause: "dns (pods {target})",
      symptom: "every request that resolves a name is 400 ms slower per lookup"),
    .init(
      name: "svc-no-endpoints", step: "service", targetKind: .service, defaultTarget: "shop/payment",
      summary: "the Service's selector matches no pod (Endpoints empty; kube-proxy REJECTs)",
      rootCause: "service {target} (selector matches no pods)", symptom: "connections to the ClusterIP are refused"),
    .init(
      name: "svc-wrong-targetport", step: "service", targetKind: .service, defaultTarget: "shop/payment",
      summary: "the Service's targetPort points at a port the pods do not listen on",
      rootCause: "service {target} (targetPort)", symptom: "connections are reset by the pods"),
    .init(
      name: "kube-proxy-stale", step: "service", targetKind: .node, defaultTarget: "node-1",
      summary: "one node's kube-proxy rules for shop/checkout still point at a pod IP that no longer exists",
      rootCause: "node {target} kube-proxy (stale rules for shop/checkout)",
      symptom: "from that node about half the connections to checkout get no answer"),
    .init(
      name: "pod-errors", step: "service-golden", targetKind: .pod, defaultTarget: "shop/checkout",
      summary: "one pod answers 500 to every request", rootCause: "pod {target}",
      symptom: "about 1/replicas of the requests through the Service fail with 5xx"),
    .init(
      name: "pod-slow", step: "service-golden", targetKind: .pod, defaultTarget: "shop/checkout",
      summary: "one pod answers 1.5 s late", rootCause: "pod {target}", symptom: "about 1/replicas of requests are slow"
    ),
    .init(
      name: "pod-cpu-throttle", step: "node-pod", targetKind: .pod, defaultTarget: "shop/checkout",
      summary: "one pod's CPU limit drops to 50m, so it is throttled under load", rootCause: "pod {target} (CPU limit)",
      symptom: "requests served by that pod are slow"),
    .init(
      name: "pod-crash", step: "node-pod", targetKind: .pod, defaultTarget: "shop/payment",
      summary: "the pod's process is killed, and again 2 s after each restart",
      rootCause: "pod {target} (crash loop)", symptom: "errors while the pod is down, not ready, restarts"),
    .init(
      name: "net-loss", step: "path", targetKind: .node, defaultTarget: "node-2",
      summary: "30% random packet loss on the node's uplink", rootCause: "node {target} uplink",
      symptom: "retransmissions and slow or failed requests crossing that node"),
    .init(
      name: "node-down", step: "node-pod", targetKind: .node, defaultTarget: "node-2",
      summary: "the node's uplink goes down; after the grace period the node and its pods are NotReady",
      rootCause: "node {target}", symptom: "connections to pods on the node time out until endpoints drop them"),
    .init(
      name: "ingress-wrong-backend", step: "ingress", targetKind: .ingress, defaultTarget: "shop/web",
      summary: "the Ingress rule points at a Service port that does not exist",
      rootCause: "ingress {target} (backend port)", symptom: "the ingress answers 503 without calling a backend"),
    .init(
      name: "ingress-down", step: "ingress", targetKind: .pod, defaultTarget: "kube-system/ingress-nginx-controller",
      summary: "the ingress controller pod (mode pod) is stopped", rootCause: "ingress controller pod {target}",
      symptom: "connections to the ingress NodePort are refused"),
    .init(
      name: "redis-down", step: "service-golden", targetKind: .pod, defaultTarget: "shop/redis",
      summary: "the Redis pod is stopped", rootCause: "pod {target} (redis)",
      symptom: "checkout answers 500 (its Redis calls are refused)"),
  ]

  public static func named(_ name: String) -> FaultSpec? { catalog.first { $0.name == name } }
}

/// Applies and heals faults on the running lab.
public struct FaultInjector {
  let store: LabStore

  public init(store: LabStore) { self.store = store }

  /// Applies `name` to `target` (or the fault's default target); returns a description.
  public func apply(_ name: String, target requested: String?) throws -> String {
    guard let spec = FaultSpec.named(name) else {
      throw LabError.command("unknown fault \(name); `fathom lab faults` lists them")
    }
    let target = requested ?? spec.defaultTarget
    return try store.update { state in
      guard !state.faults.contains(where: { $0.name == name && $0.target == target }) else {
        throw LabError.command("\(name) on \(target) is already active")
      }
      let plan = LabPlan(state.topology)
      let detail = try inject(spec, target: target, state: &state, plan: plan)
      state.faults.append(.init(name: name, target: target, appliedAt: now()))
      try Reconciler(store: store).apply(&state)
      return "\(name) on \(target): \(detail)"
    }
  }

  /// Heals `name` (all active faults when nil); returns what was healed.
  public func heal(_ name: String?) throws -> [String] {
    try store.update { state in
      let plan = LabPlan(state.topology)
      var healed: [String] = []
      for fault in state.faults where name == nil || fault.name == name {
        if let spec = FaultSpec.named(fault.name) {
          try undo(spec, target: fault.target, state: &state, plan: plan)
        }
        healed.append("\(fault.name) on \(fault.target)")
      }
      state.faults.removeAll { name == nil || $0.name == name }
      try Reconciler(store: store).apply(&state)
      return healed
    }
  }

  func pods(_ target: String, plan: LabPlan, first: Bool) throws -> [LabPlan.PodPlan] {
    if let pod = plan.pod(target) { return [pod] }
    let parts = target.split(separator: "/").map(String.init)
    guard parts.count == 2 else { throw LabError.command("target \(target): expected NAMESPACE/NAME") }
    let matching = plan.pods.filter { $0.namespace == parts[0] && $0.deployment.name == parts[1] }
    guard !matching.isEmpty else { throw LabError.command("target \(target): no such pod or deployment") }
    return first ? [matching[0]] : matching
  }

  func serviceIndex(_ target: String, _ state: LabState) throws -> Int {
    let parts = target.split(separator: "/").map(String.init)
    guard parts.count == 2,
      let index = state.topology.services.firstIndex(where: { $0.namespace == parts[0] && $0.name == parts[1] })
    else { throw LabError.command("target \(target): no such Service") }
    return index
  }

  func node(_ target: String, plan: LabPlan) throws -> LabPlan.NodePlan {
    guard let node = plan.node(named: target) else { throw LabError.command("target \(target): no such node") }
    return node
  }

  func writeControl(_ pod: LabPlan.PodPlan, _ text: String) throws {
    let directory = store.podDirectory(pod)
    try Files.makeDirectory(directory)
    if text.isEmpty {
      try? FileManager.default.removeItem(atPath: "\(directory)/control")
    } else {
      try Files.write(text, to: "\(directory)/control")
    }
  }

  func inject(_ spec: FaultSpec, target: String, state: inout LabState, plan: LabPlan) throws -> String {
    switch spec.name {
    case "dns-nxdomain":
      let index = try serviceIndex(target, state)
      let service = state.topology.services[index]
      let name = "\(service.name).\(service.namespace).svc.\(state.topology.cluster.domain)"
      state.removedDNSNames.append(name)
      return "removed \(name)"
    case "dns-down", "ingress-down", "redis-down":
      let targets = try pods(target, plan: plan, first: false)
      for pod in targets {
        state.pods[pod.key]?.stopped = true
        Cgroups().killPod(node: pod.node, pod: pod.cgroupName, main: state.pods[pod.key]?.pid)
      }
      return "stopped \(targets.map(\.key).joined(separator: ", "))"
    case "dns-slow":
      var names: [String] = []
      for pod in try pods(target, plan: plan, first: false) {
        let directory = store.podDirectory(pod)
        let pid = try Shell.spawn(
          [
            "ip", "netns", "exec", pod.netns, Shell.fathomExecutable, "lab", "dns-delay", "--listen", "\(pod.ip):5353",
            "--upstream", "\(pod.ip):53", "--delay-ms", "400",
          ], log: "\(directory)/dns-delay.log")
        state.pods[pod.key]?.helperPIDs.append(pid)
        usleep(200_000)
        try Shell.inNamespace(
          pod.netns,
          [
            "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports",
            "5353",
          ])
        names.append(pod.key)
      }
      return "queries to \(names.joined(separator: ", ")) are answered 400 ms late"
    case "svc-no-endpoints":
      let index = try serviceIndex(target, state)
      var selector = state.topology.services[index].selector
      for key in selector.keys { selector[key] = selector[key]! + "-v2" }
      state.topology.services[index].selector = selector
      return "selector is now \(selector.map { "\($0.key)=\($0.value)" }.joined(separator: ","))"
    case "svc-wrong-targetport":
      let index = try serviceIndex(target, state)
      for portIndex in state.topology.services[index].ports.indices {
        let port = state.topology.services[index].ports[portIndex]
        state.topology.services[index].ports[portIndex].targetPort = (port.targetPort ?? port.port) + 1
      }
      return
        "targetPort now \(state.topology.services[index].ports.map { String($0.targetPort!) }.joined(separator: ","))"
    case "kube-proxy-stale":
      let node = try node(target, plan: plan)
      let view = ClusterView(state: state)
      guard let service = view.service("shop", "checkout"), let live = service.ready.first else {
        throw LabError.command("kube-proxy-stale needs a ready shop/checkout endpoint")
      }
      let liveNode = plan.node(named: live.node)!
      let dead = "\(state.topology.cluster.podNetwork).\(liveNode.index).250"
      state.staleEndpoints.append(.init(node: node.name, service: service.key, liveIP: live.ip, deadIP: dead))
      return "\(node.name) sends shop/checkout traffic meant for \(live.ip) to \(dead)"
    case "pod-errors":
      let pod = try pods(target, plan: plan, first: true)[0]
      try writeControl(pod, "error_rate=1\n")
      return "\(pod.key) answers 500"
    case "pod-slow":
      let pod = try pods(target, plan: plan, first: true)[0]
      try writeControl(pod, "latency_ms=1500\n")
      return "\(pod.key) answers 1.5 s late"
    case "pod-cpu-throttle":
      let pod = try pods(target, plan: plan, first: true)[0]
      state.pods[pod.key]?.cpuOverride = "50m"
      try Cgroups().setLimits(
        node: pod.node, pod: pod.cgroupName, cpuMillicores: 50,
        memoryBytes: pod.deployment.memory.flatMap(Quantity.bytes))
      return "\(pod.key) CPU limit 50m (was \(pod.deployment.cpu ?? "none"))"
    case "pod-crash":
      let pod = try pods(target, plan: plan, first: true)[0]
      state.pods[pod.key]?.crashLoop = true
      Cgroups().killPod(node: pod.node, pod: pod.cgroupName, main: state.pods[pod.key]?.pid)
      return "\(pod.key) killed; crash loop until healed"
    case "net-loss":
      let node = try node(target, plan: plan)
      state.nodes[node.name]?.lossPercent = 30
      return "\(node.name) drops 30% of packets on its uplink"
    case "node-down":
      let node = try node(target, plan: plan)
      try Shell.run(["ip", "-n", node.netns, "link", "set", node.uplink, "down"])
      state.nodes[node.name]?.uplinkDownSince = now()
      return "\(node.name) uplink down; NotReady after \(Int(state.topology.cluster.nodeMonitorGracePeriod)) s"
    case "ingress-wrong-backend":
      let parts = target.split(separator: "/").map(String.init)
      guard parts.count == 2,
        let index = state.topology.ingresses.firstIndex(where: { $0.namespace == parts[0] && $0.name == parts[1] })
      else { throw LabError.command("target \(target): no such Ingress") }
      for rule in state.topology.ingresses[index].rules.indices {
        for path in state.topology.ingresses[index].rules[rule].paths.indices {
          state.topology.ingresses[index].rules[rule].paths[path].port = 8080
        }
      }
      return "backends now name port 8080, which the Service does not have"
    default:
      throw LabError.command("fault \(spec.name) has no implementation")
    }
  }

  func undo(_ spec: FaultSpec, target: String, state: inout LabState, plan: LabPlan) throws {
    switch spec.name {
    case "dns-nxdomain":
      let parts = target.split(separator: "/")
      if parts.count == 2 {
        state.removedDNSNames.removeAll { $0 == "\(parts[1]).\(parts[0]).svc.\(state.topology.cluster.domain)" }
      }
    case "dns-down", "ingress-down", "redis-down":
      for pod in try pods(target, plan: plan, first: false) { state.pods[pod.key]?.stopped = false }
    case "dns-slow":
      for pod in try pods(target, plan: plan, first: false) {
        Shell.attempt(["ip", "netns", "exec", pod.netns, "iptables", "-t", "nat", "-F", "PREROUTING"])
        for pid in state.pods[pod.key]?.helperPIDs ?? [] { kill(pid, SIGKILL) }
        state.pods[pod.key]?.helperPIDs = []
      }
    case "svc-no-endpoints", "svc-wrong-targetport":
      let index = try serviceIndex(target, state)
      let service = state.topology.services[index]
      if let original = state.original.services.first(where: {
        $0.namespace == service.namespace && $0.name == service.name
      }) {
        state.topology.services[index] = original
      }
    case "kube-proxy-stale":
      state.staleEndpoints.removeAll { $0.node == target }
    case "pod-errors", "pod-slow":
      try writeControl(try pods(target, plan: plan, first: true)[0], "")
    case "pod-cpu-throttle":
      let pod = try pods(target, plan: plan, first: true)[0]
      state.pods[pod.key]?.cpuOverride = nil
      try Cgroups().setLimits(
        node: pod.node, pod: pod.cgroupName,
        cpuMillicores: pod.deployment.cpu.flatMap(Quantity.millicores),
        memoryBytes: pod.deployment.memory.flatMap(Quantity.bytes))
    case "pod-crash":
      state.pods[try pods(target, plan: plan, first: true)[0].key]?.crashLoop = false
    case "net-loss":
      state.nodes[target]?.lossPercent = 0
    case "node-down":
      let node = try node(target, plan: plan)
      try Shell.run(["ip", "-n", node.netns, "link", "set", node.uplink, "up"])
      // The link's routes went with it.
      for other in plan.nodes where other.name != node.name {
        Shell.attempt(["ip", "-n", node.netns, "route", "replace", other.podCIDR, "via", other.ip])
      }
      Shell.attempt(["ip", "-n", node.netns, "route", "replace", plan.serviceCIDR, "dev", "eth0"])
      state.nodes[node.name]?.uplinkDownSince = nil
    case "ingress-wrong-backend":
      state.topology.ingresses = state.original.ingresses
    default:
      break
    }
  }
}
