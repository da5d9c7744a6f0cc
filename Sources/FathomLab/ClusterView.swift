/// What the control plane derives from the lab's state at one moment: each Service port's ready
/// and not-ready endpoints (selector → pods, as the endpoints controller does), and per node
/// the rules kube-proxy would program. Pure; the reconciler applies it.
public struct ClusterView: Sendable {
  public struct ServiceView: Sendable {
    public var service: Topology.Service
    public var clusterIP: String
    public var ready: [LabPlan.PodPlan]
    public var notReady: [LabPlan.PodPlan]
    public var key: String { "\(service.namespace)/\(service.name)" }
  }

  public let plan: LabPlan
  public let services: [ServiceView]

  public init(state: LabState) {
    let plan = LabPlan(state.topology)
    self.plan = plan
    services = state.topology.services.map { service in
      let selected = plan.pods.filter { pod in
        pod.namespace == service.namespace && !service.selector.isEmpty
          && service.selector.allSatisfy { pod.labels[$0.key] == $0.value }
      }
      let ready = selected.filter { state.pods[$0.key]?.ready == true }
      let notReady = selected.filter { state.pods[$0.key]?.ready != true }
      return ServiceView(
        service: service, clusterIP: plan.services["\(service.namespace)/\(service.name)"]!.clusterIP, ready: ready,
        notReady: notReady)
    }
  }

  /// kube-proxy's input on `node`: every Service port with its ready endpoints, with the stale
  /// endpoints of a kube-proxy-stale fault substituted on that node.
  public func serviceRules(node: String, stale: [LabState.StaleEndpoint]) -> [ServicePortRule] {
    var rules: [ServicePortRule] = []
    for view in services {
      for port in view.service.ports {
        var endpoints = view.ready.map {
          ServicePortRule.Endpoint(ip: $0.ip, port: port.targetPort ?? port.port)
        }
        for entry in stale where entry.node == node && entry.service == view.key {
          endpoints = endpoints.map { $0.ip == entry.liveIP ? .init(ip: entry.deadIP, port: $0.port) : $0 }
        }
        let type = view.service.type ?? "ClusterIP"
        rules.append(
          ServicePortRule(
            namespace: view.service.namespace, service: view.service.name, portName: port.name,
            transport: (port.protocol ?? "TCP").uppercased(), clusterIP: view.clusterIP, port: port.port,
            nodePort: type == "ClusterIP" ? nil : port.nodePort, endpoints: endpoints))
      }
    }
    return rules
  }

  /// The cluster DNS server's records: `<svc>.<ns>.svc.<domain>` → ClusterIP.
  public func dnsRecords(removed: [String]) -> [(name: String, ip: String)] {
    services.compactMap { view in
      let name = "\(view.service.name).\(view.service.namespace).svc.\(plan.topology.cluster.domain)"
      return removed.contains(name) ? nil : (name, view.clusterIP)
    }
  }

  public func service(_ namespace: String, _ name: String) -> ServiceView? {
    services.first { $0.service.namespace == namespace && $0.service.name == name }
  }
}
