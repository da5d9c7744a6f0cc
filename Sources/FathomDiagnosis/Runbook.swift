import FathomKube
import FathomStore
import FathomTracing
import Foundation

/// What the runbook reads: the store (requests, flows, rollups), the Kubernetes objects at the
/// end of the window, and the resource samples.
public struct DiagnosisInput {
  public var store: SQLiteStore
  public var objects: [KubeObject]
  public var samples: [[String: Any]]
  /// `namespace/name` of the Service whose users complain.
  public var service: String
  public var thresholds = Thresholds()

  public init(store: SQLiteStore, objects: [KubeObject], samples: [[String: Any]], service: String) {
    self.store = store
    self.objects = objects
    self.samples = samples
    self.service = service
  }
}

/// Defaults from REFERENCE.md ("Thresholds others use"); `fathom diagnose --config` overrides them.
public struct Thresholds: Codable, Sendable {
  /// Kiali: 5xx ratio above 10% is failed, above 0.1% degraded.
  public var errorRatioFailed = 0.10
  public var errorRatioWarning = 0.001
  /// A pod's error ratio this many times its siblings' (and above the warning ratio) is the pod's fault.
  public var podDeviation = 5.0
  /// Coroot: container CPU above 80% of its limit; throttled periods above this share.
  public var throttledShare = 0.2
  /// Coroot: DNS p95 above 100 ms.
  public var dnsLatencyMicros: Int64 = 100_000
  /// p99 above this many times the siblings' median p99 is a slow pod.
  public var slowPodFactor = 4.0
  /// Retransmitted share of packets on a node above this is a lossy path.
  public var retransmissionShare = 0.02
  public init() {}
}

public struct StepResult: Sendable {
  public enum Status: String, Sendable { case ok, warning, failed, skipped }
  public var step: String
  public var status: Status
  /// The numbers that decided it.
  public var evidence: [String]
}

public struct Finding: Sendable {
  public var component: String
  public var kind: String
  public var step: String
  public var score: Double
  public var evidence: [String]
  public var next: String
}

public struct Diagnosis: Sendable {
  public var service: String
  public var steps: [StepResult]
  /// Ranked, most likely first.
  public var verdict: [Finding]
  public var seconds: Double
}

/// The SRE's runbook, in order: node/pod, the backend service's golden metrics, DNS, the Service
/// and kube-proxy, the Ingress, the request's path. Each step reports ok/warning/failed/skipped
/// with its numbers; findings are ranked into a verdict naming the faulty component.
public struct Runbook {
  let input: DiagnosisInput
  var thresholds: Thresholds { input.thresholds }

  public init(input: DiagnosisInput) { self.input = input }

  /// The Service an `--ingress HOST/PATH` reaches: the matching rule's backend (host, then the
  /// longest matching path).
  public static func ingressBackend(_ target: String, objects: [KubeObject]) -> String? {
    let slash = target.firstIndex(of: "/") ?? target.endIndex
    let host = String(target[..<slash])
    let path = slash == target.endIndex ? "/" : String(target[slash...])
    var best: (service: String, length: Int)?
    for object in objects {
      guard case .ingress(let ingress) = object else { continue }
      let namespace = ingress.metadata?.namespace ?? "default"
      for rule in ingress.spec?.rules ?? [] where rule.host == nil || rule.host == host {
        for candidate in rule.http?.paths ?? [] {
          let prefix = candidate.path ?? "/"
          let matches =
            candidate.pathType == "Exact"
            ? path == prefix : (prefix == "/" || path == prefix || path.hasPrefix(prefix + "/"))
          if matches, let name = candidate.backend?.service?.name, prefix.count > (best?.length ?? -1) {
            best = ("\(namespace)/\(name)", prefix.count)
          }
        }
      }
    }
    return best?.service
  }

  // MARK: Facts gathered from the store and objects

  struct PodRED {
    var requests = 0
    var serverErrors = 0
    var timeouts = 0
    var histogram = LatencyHistogram()
    var errorRatio: Double { requests == 0 ? 0 : Double(serverErrors + timeouts) / Double(requests) }
  }

  func rows(_ sql: String) throws -> [[String]] { try input.store.query(sql).rows }

  /// A string as an SQL literal (names come from the command line and the captures).
  func sql(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }

  /// RED at the server pods (`s`) per Service and pod, from the 1-minute rollups.
  func redByPod() throws -> [String: [String: PodRED]] {
    var result: [String: [String: PodRED]] = [:]
    for row in try rows(
      """
      SELECT ss.namespace || '/' || ss.name, COALESCE(sp.namespace || '/' || sp.name, ''), r.requests, r.server_errors,
        r.timeouts, r.histogram
      FROM request_rollup_1m r JOIN resources ss ON ss.id = r.server_service LEFT JOIN resources sp ON sp.id = r.server_pod
      WHERE r.observation_point = 's'
      """) where row.count == 6
    {
      var red = result[row[0], default: [:]][row[1]] ?? PodRED()
      red.requests += Int(row[2]) ?? 0
      red.serverErrors += Int(row[3]) ?? 0
      red.timeouts += Int(row[4]) ?? 0
      red.histogram.merge(LatencyHistogram(encoded: row[5]))
      result[row[0], default: [:]][row[1]] = red
    }
    return result
  }

  /// Services by their pods (selector → labels), from the objects.
  func servicesOfPods() -> [String: [String]] {
    var pods: [(String, [String: String])] = []
    var services: [(String, [String: String])] = []
    for object in input.objects {
      switch object {
      case .pod(let pod):
        pods.append(
          ("\(pod.metadata?.namespace ?? "default")/\(pod.metadata?.name ?? "")", pod.metadata?.labels ?? [:]))
      case .service(let service):
        if let selector = service.spec?.selector, !selector.isEmpty {
          services.append(("\(service.metadata?.namespace ?? "default")/\(service.metadata?.name ?? "")", selector))
        }
      default: break
      }
    }
    var result: [String: [String]] = [:]
    for (pod, labels) in pods {
      let namespace = pod.split(separator: "/").first.map(String.init) ?? ""
      for (service, selector) in services where service.hasPrefix(namespace + "/") {
        if selector.allSatisfy({ labels[$0.key] == $0.value }) { result[pod, default: []].append(service) }
      }
    }
    return result
  }

  /// Downstream Services each Service calls (its pods as clients, at their own interface).
  func downstream(podServices: [String: [String]]) throws -> [String: Set<String>] {
    var result: [String: Set<String>] = [:]
    for row in try rows(
      """
      SELECT DISTINCT cp.namespace || '/' || cp.name, ss.namespace || '/' || ss.name FROM flows f
        JOIN resources cp ON cp.id = f.client_pod JOIN resources ss ON ss.id = f.server_service
      WHERE f.client_pod != 0 AND f.server_service != 0 AND f.observation_point = 'c'
      """) where row.count == 2
    {
      for service in podServices[row[0]] ?? [] where service != row[1] { result[service, default: []].insert(row[1]) }
    }
    return result
  }

  /// Connections to a Service (by its ClusterIP or NodePort, from its clients' side) by close type.
  func connectionFailures(to service: String) throws -> [String: Int] {
    let parts = service.split(separator: "/").map(String.init)
    guard parts.count == 2 else { return [:] }
    var result: [String: Int] = [:]
    for row in try rows(
      """
      SELECT f.close_type, COUNT(*) FROM flows f JOIN resources ss ON ss.id = f.server_service
      WHERE ss.namespace = \(sql(parts[0])) AND ss.name = \(sql(parts[1])) AND f.server_kind IN ('service', 'node_port')
        AND f.observation_point IN ('c', 'c-nd') GROUP BY f.close_type
      """) where row.count == 2
    {
      result[row[0]] = Int(row[1]) ?? 0
    }
    return result
  }

  func endpoints(of service: String) -> (ready: Int, notReady: Int)? {
    for object in input.objects {
      guard case .endpoints(let endpoints) = object,
        "\(endpoints.metadata?.namespace ?? "")/\(endpoints.metadata?.name ?? "")" == service
      else { continue }
      let subsets = endpoints.subsets ?? []
      return (
        subsets.reduce(0) { $0 + ($1.addresses?.count ?? 0) },
        subsets.reduce(0) { $0 + ($1.notReadyAddresses?.count ?? 0) }
      )
    }
    return nil
  }

  func serviceObject(_ key: String) -> Service? {
    for object in input.objects {
      if case .service(let service) = object,
        "\(service.metadata?.namespace ?? "")/\(service.metadata?.name ?? "")" == key
      {
        return service
      }
    }
    return nil
  }

  // MARK: The steps

  public func diagnose() throws -> Diagnosis {
    let started = Date()
    var steps: [StepResult] = []
    var findings: [Finding] = []
    let podServices = servicesOfPods()
    let red = try redByPod()
    let calls = try downstream(podServices: podServices)

    // Services the path's pods tried to resolve count as called even when no connection
    // followed (the name did not resolve).
    var serviceNames: [String: String] = [:]
    for object in input.objects {
      if case .service(let service) = object, let name = service.metadata?.name {
        let namespace = service.metadata?.namespace ?? "default"
        serviceNames["\(name).\(namespace).svc.cluster.local"] = "\(namespace)/\(name)"
      }
    }
    var resolved: [String: Set<String>] = [:]
    for row in try rows(
      """
      SELECT DISTINCT cp.namespace || '/' || cp.name, r.domain FROM requests r JOIN resources cp ON cp.id = r.client_pod
      WHERE r.protocol = 'dns' AND r.observation_point = 'c'
      """) where row.count == 2
    {
      if let service = serviceNames[row[1]] {
        for caller in podServices[row[0]] ?? [] where caller != service {
          resolved[caller, default: []].insert(service)
        }
      }
    }

    // The Services on the target's path: the target and everything below it.
    var path: [String] = [input.service]
    var index = 0
    while index < path.count {
      for next in (calls[path[index]] ?? []).union(resolved[path[index]] ?? []).sorted() where !path.contains(next) {
        path.append(next)
      }
      index += 1
    }
    // DNS has its own step; its answers (NXDOMAIN, REFUSED) are not the service's errors.
    let dnsServices = Set(path.filter { $0.hasSuffix("/kube-dns") })
    let pathPods = Set(podServices.filter { !Set($0.value).isDisjoint(with: path) }.keys)

    // 1. Node/Pod.
    var nodePodEvidence: [String] = []
    var nodePodStatus = StepResult.Status.ok
    var latest: [String: [String: Any]] = [:]
    var first: [String: [String: Any]] = [:]
    var notReadySamples: [String: Int] = [:]
    var sampleCount: [String: Int] = [:]
    for sample in input.samples {
      let key =
        (sample["kind"] as? String == "node" ? "node/" : "pod/")
        + "\(sample["namespace"] as? String ?? "")/\(sample["name"] as? String ?? "")"
      if first[key] == nil { first[key] = sample }
      latest[key] = sample
      sampleCount[key, default: 0] += 1
      if sample["ready"] as? Bool == false { notReadySamples[key, default: 0] += 1 }
    }
    for (key, last) in latest {
      let isNode = key.hasPrefix("node/")
      let name = isNode ? String(key.dropFirst(6)) : String(key.dropFirst(4))
      guard isNode || pathPods.contains(name) || name.contains("coredns") || name.contains("ingress") else { continue }
      let start = first[key]!
      func delta(_ field: String) -> Int { (last[field] as? Int ?? 0) - (start[field] as? Int ?? 0) }
      let restarts = delta("restarts")
      let oom = delta("oom_kills")
      let periods = delta("cpu_periods")
      let throttled = delta("cpu_throttled_periods")
      let notReady = notReadySamples[key, default: 0]
      let total = sampleCount[key, default: 1]
      let component = isNode ? "node \(name)" : "pod \(name)"
      if notReady * 2 >= total || restarts > 0 || oom > 0 {
        nodePodStatus = .failed
        let what = [
          notReady > 0 ? "not ready in \(notReady) of \(total) samples" : nil,
          restarts > 0 ? "\(restarts) restarts" : nil,
          oom > 0 ? "\(oom) OOM kills" : nil,
        ].compactMap { $0 }.joined(separator: ", ")
        nodePodEvidence.append("\(component): \(what)")
        findings.append(
          Finding(
            component: component, kind: isNode ? "node not ready" : (restarts > 0 ? "pod crash loop" : "pod not ready"),
            step: "node-pod", score: isNode ? 0.99 : (restarts > 0 ? 0.85 : 0.6), evidence: [what],
            next: isNode ? "check the node's kubelet and uplink" : "kubectl describe pod; its logs and last exit code"))
      } else if periods > 0, Double(throttled) / Double(periods) > thresholds.throttledShare {
        if nodePodStatus == .ok { nodePodStatus = .warning }
        let share = Double(throttled) / Double(periods)
        nodePodEvidence.append(String(format: "%@: CPU throttled in %.0f%% of periods", component, share * 100))
        findings.append(
          Finding(
            component: component, kind: "cpu throttling", step: "node-pod", score: 0.5 + min(0.3, share / 2),
            evidence: [
              String(format: "throttled in %.0f%% of CFS periods (%d of %d)", share * 100, throttled, periods)
            ],
            next: "raise the pod's CPU limit or find what uses the CPU"))
      }
    }
    steps.append(
      StepResult(
        step: "node-pod", status: input.samples.isEmpty ? .skipped : nodePodStatus,
        evidence: input.samples.isEmpty
          ? ["no resource samples"]
          : (nodePodEvidence.isEmpty ? ["\(latest.count) nodes and pods healthy"] : nodePodEvidence)))

    // 2. Backend service: golden metrics at the server pods, deepest failing Service first.
    var serviceEvidence: [String] = []
    var serviceStatus = StepResult.Status.ok
    for service in path where !dnsServices.contains(service) {
      let pods = red[service] ?? [:]
      let total = pods.values.reduce(PodRED()) { sum, pod in
        var sum = sum
        sum.requests += pod.requests
        sum.serverErrors += pod.serverErrors
        sum.timeouts += pod.timeouts
        sum.histogram.merge(pod.histogram)
        return sum
      }
      guard total.requests > 0 else {
        serviceEvidence.append("\(service): no requests reached its pods")
        continue
      }
      let p99 = total.histogram.quantile(0.99)
      serviceEvidence.append(
        String(
          format: "%@: %d requests, %.1f%% errors, p50 %.1f ms, p99 %.1f ms, %d pods", service, total.requests,
          total.errorRatio * 100, Double(total.histogram.quantile(0.5)) / 1000, Double(p99) / 1000, pods.count))
      // One pod deviating from its siblings is the pod's fault.
      let ratios = pods.mapValues(\.errorRatio)
      for (pod, podRED) in pods where pods.count > 1 && podRED.errorRatio > thresholds.errorRatioFailed {
        let siblings = ratios.filter { $0.key != pod }.map(\.value)
        let siblingRatio = siblings.reduce(0, +) / Double(max(1, siblings.count))
        if podRED.errorRatio > max(thresholds.errorRatioWarning, siblingRatio * thresholds.podDeviation) {
          serviceStatus = .failed
          findings.append(
            Finding(
              component: "pod \(pod)", kind: "pod errors", step: "service-golden", score: 0.8 + podRED.errorRatio / 10,
              evidence: [
                String(
                  format: "%.0f%% of its %d requests failed; its siblings %.1f%%", podRED.errorRatio * 100,
                  podRED.requests, siblingRatio * 100)
              ], next: "the pod's logs; compare its version and config with its siblings"))
        }
      }
      let p99s = pods.mapValues { $0.histogram.quantile(0.99) }
      for (pod, podP99) in p99s where pods.count > 1 {
        let siblings = p99s.filter { $0.key != pod }.map(\.value).sorted()
        let median = siblings[siblings.count / 2]
        if median > 0, Double(podP99) > Double(median) * thresholds.slowPodFactor, podP99 > 200_000 {
          if serviceStatus == .ok { serviceStatus = .warning }
          findings.append(
            Finding(
              component: "pod \(pod)", kind: "pod slow", step: "service-golden", score: 0.75,
              evidence: [
                String(format: "p99 %.0f ms; its siblings' %.0f ms", Double(podP99) / 1000, Double(median) / 1000)
              ],
              next: "the pod's CPU, GC and downstream calls"))
        }
      }
      if total.errorRatio > thresholds.errorRatioFailed {
        serviceStatus = .failed
        let podsFailing = ratios.values.filter { $0 > thresholds.errorRatioFailed }.count
        if podsFailing == pods.count {
          // All pods fail: the Service's fault unless something below it explains it.
          let below = path.drop { $0 != service }.dropFirst()
          let belowFailing = below.contains { (red[$0].map { $0.values.reduce(0) { $0 + $1.serverErrors } } ?? 0) > 0 }
          findings.append(
            Finding(
              component: "service \(service)", kind: "all pods fail", step: "service-golden",
              score: belowFailing ? 0.3 : 0.55 + 0.01 * Double(path.firstIndex(of: service) ?? 0),
              evidence: [
                String(
                  format: "%.0f%% of %d requests failed on all %d pods", total.errorRatio * 100, total.requests,
                  pods.count)
              ],
              next: "what this Service depends on: its downstream calls, DNS, Redis"))
        }
      } else if total.errorRatio > thresholds.errorRatioWarning, serviceStatus == .ok {
        serviceStatus = .warning
      }
    }
    steps.append(StepResult(step: "service-golden", status: serviceStatus, evidence: serviceEvidence))

    // 3. DNS: lookups of the path's Service names by the clients.
    var dnsEvidence: [String] = []
    var dnsStatus = StepResult.Status.ok
    let names = path.map { service -> String in
      let parts = service.split(separator: "/")
      return "\(parts.last ?? "").\(parts.first ?? "").svc.cluster.local"
    }
    for name in names {
      let lookups = try rows(
        "SELECT code, status, duration_us FROM requests WHERE protocol = 'dns' AND observation_point = 'c' AND domain = \(sql(name))"
      )
      let answered = lookups.filter { $0[0] == "0" }.count
      let nxdomain = lookups.filter { $0[0] == "3" }.count
      let unanswered = lookups.filter { $0[1] == "timeout" }.count
      let refused = try connectionFailures(to: "kube-system/kube-dns")
      let durations = lookups.compactMap { Int64($0[2]) }.sorted()
      let p95 = durations.isEmpty ? 0 : durations[min(durations.count - 1, durations.count * 95 / 100)]
      guard !lookups.isEmpty else { continue }
      dnsEvidence.append(
        "\(name): \(lookups.count) lookups, \(answered) answered, \(nxdomain) NXDOMAIN, \(unanswered) unanswered, p95 \(p95 / 1000) ms"
      )
      if nxdomain > 0 && answered == 0 {
        dnsStatus = .failed
        findings.append(
          Finding(
            component: "dns", kind: "record missing", step: "dns", score: 0.95,
            evidence: [
              "\(name): \(nxdomain) NXDOMAIN and no answer (not a search-path expansion: the full name fails)"
            ],
            next: "the cluster DNS records for \(name); the Service exists?"))
      } else if unanswered > 0 && unanswered * 2 >= lookups.count {
        dnsStatus = .failed
        findings.append(
          Finding(
            component: "dns", kind: "dns down", step: "dns", score: 0.9,
            evidence: ["\(name): \(unanswered) of \(lookups.count) lookups unanswered"]
              + refused.map { "kube-dns connections: \($0.key) \($0.value)" },
            next: "the DNS pods and the kube-dns Service's endpoints"))
      } else if p95 > thresholds.dnsLatencyMicros {
        if dnsStatus == .ok { dnsStatus = .warning }
        findings.append(
          Finding(
            component: "dns", kind: "dns slow", step: "dns", score: 0.7,
            evidence: ["\(name): p95 \(p95 / 1000) ms (threshold \(thresholds.dnsLatencyMicros / 1000) ms)"],
            next: "the DNS pods' CPU and upstreams"))
      }
    }
    // DNS pods unreachable altogether (no lookups answered anywhere).
    let kubeDNSEndpoints = endpoints(of: "kube-system/kube-dns")
    if let kubeDNSEndpoints, kubeDNSEndpoints.ready == 0 {
      dnsStatus = .failed
      findings.append(
        Finding(
          component: "dns", kind: "dns down", step: "dns", score: 0.9,
          evidence: ["kube-dns has no ready endpoints (\(kubeDNSEndpoints.notReady) not ready)"],
          next: "the DNS pods"))
    }
    steps.append(
      StepResult(
        step: "dns", status: dnsStatus,
        evidence: dnsEvidence.isEmpty ? ["no lookups of the path's names captured"] : dnsEvidence))

    // 4. Service: connections to each ClusterIP on the path, endpoints.
    var serviceStepEvidence: [String] = []
    var serviceStepStatus = StepResult.Status.ok
    for service in path {
      let failures = try connectionFailures(to: service)
      let total = failures.values.reduce(0, +)
      let refused = failures["server_reset"] ?? 0
      // Connections the pods themselves reset at once (seen at the pods' own interfaces).
      let resetByPods =
        Int(
          try rows(
            """
            SELECT COUNT(*) FROM flows f JOIN resources ss ON ss.id = f.server_service
            WHERE ss.namespace || '/' || ss.name = \(sql(service)) AND f.server_kind = 'pod' AND f.observation_point = 's'
              AND f.close_type IN ('server_reset', 'server_establish_reset')
            """
          ).first?.first ?? "0") ?? 0
      let endpoints = endpoints(of: service)
      serviceStepEvidence.append(
        "\(service): \(total) connections to the ClusterIP/NodePort, refused or reset \(refused), reset by the pods \(resetByPods); endpoints "
          + (endpoints.map { "\($0.ready) ready, \($0.notReady) not ready" } ?? "unknown"))
      if let endpoints, endpoints.ready == 0 {
        serviceStepStatus = .failed
        let selector = serviceObject(service)?.spec?.selector ?? [:]
        let members = podServices.filter { $0.value.contains(service) }.keys.sorted()
        if members.isEmpty {
          findings.append(
            Finding(
              component: "service \(service)", kind: "selector matches no pods", step: "service", score: 0.97,
              evidence: [
                "Endpoints empty; selector \(selector.map { "\($0.key)=\($0.value)" }.joined(separator: ",")) matches no pod",
                "\(refused) connections refused by the node (kube-proxy REJECT)",
              ], next: "fix the Service's selector"))
        } else {
          // The pods exist but none is ready: the pods are the fault, the Service only shows it.
          for pod in members {
            findings.append(
              Finding(
                component: "pod \(pod)", kind: "pod down", step: "service", score: 0.9,
                evidence: [
                  "\(service) has no ready endpoints (\(endpoints.notReady) not ready); \(refused) connections refused by the node"
                ], next: "why \(pod) is not ready: its process, probe and logs"))
          }
          findings.append(
            Finding(
              component: "service \(service)", kind: "no ready endpoints", step: "service", score: 0.5,
              evidence: ["Endpoints list \(endpoints.notReady) not-ready addresses"], next: "the pods behind it"))
        }
      } else if resetByPods > 0, resetByPods * 5 >= max(1, total) {
        serviceStepStatus = .failed
        let service_ = serviceObject(service)
        let targetPorts = service_?.spec?.ports?.compactMap { $0.targetPort?.description } ?? []
        var containerPorts = Set<Int>()
        for object in input.objects {
          if case .pod(let pod) = object,
            podServices["\(pod.metadata?.namespace ?? "")/\(pod.metadata?.name ?? "")"]?.contains(service) == true
          {
            for container in pod.spec?.containers ?? [] {
              containerPorts.formUnion(container.ports?.compactMap(\.containerPort) ?? [])
            }
          }
        }
        findings.append(
          Finding(
            component: "service \(service)", kind: "wrong targetPort", step: "service", score: 0.96,
            evidence: [
              "\(resetByPods) connections reset by the pods at once (\(total) to the ClusterIP)",
              "targetPort \(targetPorts.joined(separator: ",")); the pods listen on \(containerPorts.sorted().map(String.init).joined(separator: ","))",
            ], next: "set the Service's targetPort to the containers' port"))
      } else {
        // Connections never answered, from one node only: that node's rules are stale.
        var byNode: [(node: String, failed: Int, total: Int)] = []
        for row in try rows(
          """
          SELECT n.name, SUM(f.close_type IN ('client_syn_repeat', 'timeout', 'server_reset', 'icmp_unreachable')
              OR (f.close_type = 'in_progress' AND f.syn_retransmissions > 0)), COUNT(*)
          FROM flows f JOIN resources n ON n.id = f.capture_node JOIN resources ss ON ss.id = f.server_service
          WHERE ss.namespace || '/' || ss.name = \(sql(service)) AND f.server_kind = 'service' AND f.observation_point = 'c'
          GROUP BY n.name
          """) where row.count == 3
        {
          byNode.append((row[0], Int(row[1]) ?? 0, Int(row[2]) ?? 0))
        }
        let share = { (entry: (node: String, failed: Int, total: Int)) in
          Double(entry.failed) / Double(max(1, entry.total))
        }
        if let worst = byNode.max(by: { share($0) < share($1) }), share(worst) > 0.05 {
          serviceStepStatus = .failed
          let others = byNode.filter { $0.node != worst.node }
          let othersShare = others.isEmpty ? 0 : others.map(share).reduce(0, +) / Double(others.count)
          let single = othersShare * 3 < share(worst)
          findings.append(
            Finding(
              component: single ? "node \(worst.node) kube-proxy" : "service \(service)",
              kind: "connections unanswered",
              step: "service", score: single ? 0.88 : 0.6,
              evidence: [
                String(
                  format: "from %@: %d of %d connections to %@ never answered (%.0f%%); other nodes %.1f%%", worst.node,
                  worst.failed, worst.total, service, share(worst) * 100, othersShare * 100)
              ],
              next: single
                ? "iptables-save -t nat on \(worst.node): KUBE-SEP rules of \(service) pointing at a pod that is gone"
                : "the Service's endpoints and every node's rules"))
        }
      }
    }
    steps.append(StepResult(step: "service", status: serviceStepStatus, evidence: serviceStepEvidence))

    // 5. Ingress: answers of the ingress controllers for the target's hosts.
    var ingressEvidence: [String] = []
    var ingressStatus = StepResult.Status.skipped
    let ingressRows = try rows(
      """
      SELECT sp.namespace || '/' || sp.name, r.code, COUNT(*) FROM requests r JOIN resources sp ON sp.id = r.server_pod
      WHERE r.observation_point = 's' AND sp.workload LIKE '%ingress%' AND r.protocol = 'http' GROUP BY 1, 2
      """)
    if !ingressRows.isEmpty {
      ingressStatus = .ok
      var byController: [String: (total: Int, failed: Int, codes: [String: Int])] = [:]
      for row in ingressRows {
        var entry = byController[row[0]] ?? (0, 0, [:])
        let count = Int(row[2]) ?? 0
        entry.total += count
        if let code = Int(row[1]), code >= 500 { entry.failed += count }
        entry.codes[row[1], default: 0] += count
        byController[row[0]] = entry
      }
      for (controller, entry) in byController.sorted(by: { $0.key < $1.key }) {
        ingressEvidence.append(
          "\(controller): \(entry.total) requests, "
            + entry.codes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        if entry.failed * 2 > entry.total, (entry.codes["503"] ?? 0) * 2 > entry.total {
          ingressStatus = .failed
          // A 503 without any upstream call: the rule points at a backend that does not exist.
          for object in input.objects {
            guard case .ingress(let ingress) = object else { continue }
            let namespace = ingress.metadata?.namespace ?? "default"
            for rule in ingress.spec?.rules ?? [] {
              for rulePath in rule.http?.paths ?? [] {
                guard let backend = rulePath.backend?.service, let name = backend.name else { continue }
                let service = serviceObject("\(namespace)/\(name)")
                let ports = service?.spec?.ports?.compactMap(\.port) ?? []
                if service == nil || (backend.port?.number.map { !ports.contains($0) } ?? false) {
                  findings.append(
                    Finding(
                      component: "ingress \(namespace)/\(ingress.metadata?.name ?? "")",
                      kind: "rule points at a missing backend",
                      step: "ingress", score: 0.98,
                      evidence: [
                        "\(entry.codes["503"] ?? 0) of \(entry.total) requests answered 503 by \(controller)",
                        "rule \(rule.host ?? "*")\(rulePath.path ?? "/") → \(name):\(backend.port?.number.map(String.init) ?? "?"); the Service has ports \(ports)",
                      ], next: "fix the Ingress backend"))
                }
              }
            }
          }
        }
      }
    }
    // A controller with no ready endpoints behind its NodePort.
    if let ingressEndpoints = endpoints(of: "kube-system/ingress-nginx-controller"), ingressEndpoints.ready == 0 {
      ingressStatus = .failed
      let refused = try connectionFailures(to: "kube-system/ingress-nginx-controller").values.reduce(0, +)
      findings.append(
        Finding(
          component: "ingress controller kube-system/ingress-nginx-controller", kind: "ingress down", step: "ingress",
          score: 0.93,
          evidence: ["no ready endpoints behind the controller's NodePort; \(refused) connections failed"],
          next: "the controller pod"))
    }
    steps.append(
      StepResult(
        step: "ingress", status: ingressStatus,
        evidence: ingressStatus == .skipped ? ["no requests through an ingress controller captured"] : ingressEvidence))

    // 6. Path: retransmissions by node, break points of failing requests.
    var pathEvidence: [String] = []
    var pathStatus = StepResult.Status.ok
    // Loss on a link shows as retransmissions on every uplink the flows cross; the node whose
    // own external traffic (to or from outside the cluster, crossing no other node) retransmits
    // is the one whose uplink loses packets.
    var lossyNodes: [(node: String, share: Double, external: Double)] = []
    for row in try rows(
      """
      SELECT n.name, SUM(f.retransmissions + f.syn_retransmissions), SUM(f.c2s_packets + f.s2c_packets),
        SUM(CASE WHEN f.client_kind = 'external' OR f.server_kind = 'external' THEN f.retransmissions + f.syn_retransmissions ELSE 0 END),
        SUM(CASE WHEN f.client_kind = 'external' OR f.server_kind = 'external' THEN f.c2s_packets + f.s2c_packets ELSE 0 END)
      FROM flows f JOIN resources n ON n.id = f.capture_node
      WHERE f.observation_point IN ('c-nd', 's-nd') OR (f.observation_point IN ('c', 's') AND f.interface = 'eth0')
      GROUP BY n.name
      """) where row.count == 5
    {
      let share = (Double(row[1]) ?? 0) / max(1, Double(row[2]) ?? 1)
      let external = (Double(row[3]) ?? 0) / max(1, Double(row[4]) ?? 1)
      pathEvidence.append(
        String(
          format: "%@ uplink: %.1f%% of packets retransmitted (%.1f%% of its traffic with outside the cluster)", row[0],
          share * 100, external * 100))
      if share > thresholds.retransmissionShare { lossyNodes.append((row[0], share, external)) }
    }
    // Where packets vanish: the same connection counted at a node's uplink and at its pod's veth
    // (both captured on that node, one clock). Packets that passed the uplink capture but never
    // reached the veth, or left the veth but never the uplink, were dropped inside that node.
    var vanished: [String: (lost: Double, packets: Double)] = [:]
    for (outer, inner, sameServer) in [("s-nd", "s", true), ("c-nd", "c", false)] {
      for row in try rows(
        """
        SELECT n.name,
          SUM(MAX(\(outer == "s-nd" ? "a.c2s_packets - b.c2s_packets" : "b.c2s_packets - a.c2s_packets"), 0)
            + MAX(\(outer == "s-nd" ? "b.s2c_packets - a.s2c_packets" : "a.s2c_packets - b.s2c_packets"), 0)),
          SUM(a.c2s_packets + a.s2c_packets)
        FROM flows a JOIN flows b ON b.capture_node = a.capture_node AND b.client_ip = a.client_ip
          AND b.client_port = a.client_port AND b.observation_point = '\(inner)' AND ABS(b.start_us - a.start_us) < 1000000
          \(sameServer ? "AND b.server_ip = a.server_ip AND b.server_port = a.server_port" : "")
          JOIN resources n ON n.id = a.capture_node
        WHERE a.observation_point = '\(outer)' AND a.close_type NOT IN ('forced_report') GROUP BY n.name
        """) where row.count == 3
      {
        var entry = vanished[row[0]] ?? (0, 0)
        entry.lost += Double(row[1]) ?? 0
        entry.packets += Double(row[2]) ?? 0
        vanished[row[0]] = entry
      }
    }
    for (node, entry) in vanished.sorted(by: { $0.key < $1.key }) where entry.packets > 0 {
      pathEvidence.append(
        String(
          format: "%@: %.0f of %.0f packets vanished between its uplink and its pods", node, entry.lost, entry.packets))
    }
    let dropShares = vanished.mapValues { $0.lost / max(1, $0.packets) }
    if let worst = dropShares.max(by: { $0.value < $1.value }), worst.value > thresholds.retransmissionShare / 2 {
      let others = dropShares.filter { $0.key != worst.key }.map(\.value)
      if others.allSatisfy({ $0 * 3 < worst.value }) {
        pathStatus = .failed
        findings.append(
          Finding(
            component: "node \(worst.key) uplink", kind: "packet loss", step: "path", score: 0.95,
            evidence: [
              String(
                format:
                  "%.1f%% of the packets of connections to and from its pods vanished between its uplink and the pods' interfaces",
                worst.value * 100)
            ], next: "the node's NIC, link and drops (ip -s link, ethtool -S)"))
      }
    }
    if !lossyNodes.isEmpty {
      pathStatus = .failed
      let ranked = lossyNodes.sorted { $0.external > $1.external }
      let localized = ranked.count == 1 || ranked[0].external > 3 * ranked[1].external
      for (position, node) in ranked.enumerated() {
        findings.append(
          Finding(
            component: "node \(node.node) uplink", kind: "packet loss", step: "path",
            score: localized ? (position == 0 ? 0.93 : 0.5) : 0.7,
            evidence: [
              String(
                format:
                  "%.1f%% of the packets crossing its uplink were retransmissions; %.1f%% of its traffic with outside the cluster",
                node.share * 100, node.external * 100)
            ], next: "the node's NIC, link and drops (ip -s link, ethtool -S)"))
      }
      // Loss explains unanswered connections; they are not stale rules then.
      for index in findings.indices where findings[index].kind == "connections unanswered" {
        findings[index].score *= 0.7
      }
    }
    let assembler = TraceAssembler(source: input.store)
    let failing = try input.store.candidates(
      service: input.service, onlyErrors: true, slowerThanMicros: nil, since: .min, limit: 3)
    for request in failing where !request.xRequestID.isEmpty {
      if let trace = try assembler.assemble(xRequestID: request.xRequestID), let breakPoint = trace.breakPoint {
        pathEvidence.append("trace \(request.xRequestID): break point at span \(breakPoint.span): \(breakPoint.reason)")
      }
    }
    steps.append(StepResult(step: "path", status: pathStatus, evidence: pathEvidence))

    // Nothing about the target at all: say so instead of "no fault".
    let connectionsToTarget = try connectionFailures(to: input.service).values.reduce(0, +)
    let targetSeen = (red[input.service].map { !$0.isEmpty } ?? false) || connectionsToTarget > 0
    if !targetSeen {
      findings.append(
        Finding(
          component: "service \(input.service)", kind: "no traffic captured", step: "service-golden", score: 0.1,
          evidence: ["no request to its pods and no connection to its ClusterIP or NodePort in the store"],
          next: "check the Service's name and that the captures cover its nodes and time"))
    }

    // Rank: score, then runbook order.
    let order = ["node-pod", "service-golden", "dns", "service", "ingress", "path"]
    var seen = Set<String>()
    let verdict = findings.sorted {
      ($0.score, -(order.firstIndex(of: $0.step) ?? 9)) > ($1.score, -(order.firstIndex(of: $1.step) ?? 9))
    }.filter { seen.insert("\($0.component)|\($0.kind)").inserted }
    return Diagnosis(service: input.service, steps: steps, verdict: verdict, seconds: Date().timeIntervalSince(started))
  }
}
