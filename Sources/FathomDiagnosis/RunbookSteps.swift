import FathomStore
import FathomTracing
import Foundation

/// A step's result and what it found.
struct StepOutcome {
  var step: StepResult
  var findings: [Finding]
  /// Traces of requests that show the fault, for the verdict.
  var examples: [ExampleTrace] = []
}

/// The six steps, each deciding from the context's facts only.
extension RunbookContext {
  /// 1. Node/Pod: readiness, restarts, OOM kills and CPU throttling of the nodes and of the pods
  /// on the target's paths (clients, DNS, ingress, backends), from the resource samples.
  func nodePodStep() -> StepOutcome {
    let hasNodes = input.objects.contains { if case .node = $0 { true } else { false } }
    guard !input.samples.isEmpty || hasNodes else {
      return StepOutcome(
        step: StepResult(step: "node-pod", status: .skipped, evidence: ["no resource samples and no Node objects"]),
        findings: [])
    }
    var evidence: [String] = []
    var status = StepResult.Status.ok
    var findings: [Finding] = []
    var latest: [String: ResourceSample] = [:]
    var first: [String: ResourceSample] = [:]
    var notReadySamples: [String: Int] = [:]
    var sampleCount: [String: Int] = [:]
    for sample in input.samples {
      let key = sample.key
      if first[key] == nil { first[key] = sample }
      latest[key] = sample
      sampleCount[key, default: 0] += 1
      if !sample.ready { notReadySamples[key, default: 0] += 1 }
    }
    for (key, last) in latest.sorted(by: { $0.key < $1.key }) {
      let isNode = last.kind == .node
      let name = isNode ? last.name : "\(last.namespace)/\(last.name)"
      guard isNode || pathPods.contains(name) || name.contains("coredns") || name.contains("ingress") else { continue }
      let start = first[key]!
      let restarts = last.restarts - start.restarts
      let oom = last.oomKills - start.oomKills
      let periods = last.cpuPeriods - start.cpuPeriods
      let throttled = last.cpuThrottledPeriods - start.cpuThrottledPeriods
      let notReady = notReadySamples[key, default: 0]
      let total = sampleCount[key, default: 1]
      let component = isNode ? "node \(name)" : "pod \(name)"
      // Not ready in most of the window, or still not ready at its end (a fault that began
      // within the window).
      let notReadyNow = !last.ready
      if notReady * 2 >= total || notReadyNow || restarts > 0 || oom > 0 {
        status = .failed
        let what = [
          notReady > 0 ? "not ready in \(notReady) of \(total) samples" : nil,
          restarts > 0 ? "\(restarts) restarts" : nil,
          oom > 0 ? "\(oom) OOM kills" : nil,
        ].compactMap { $0 }.joined(separator: ", ")
        evidence.append("\(component): \(what)")
        findings.append(
          Finding(
            component: component, kind: isNode ? "node not ready" : (restarts > 0 ? "pod crash loop" : "pod not ready"),
            step: "node-pod", score: isNode ? 0.99 : (restarts > 0 ? 0.85 : 0.6), evidence: [what],
            next: isNode ? "check the node's kubelet and uplink" : "kubectl describe pod; its logs and last exit code"))
      } else if let drops = interfaceDrops(from: start, to: last) {
        if status == .ok { status = .warning }
        evidence.append("\(component): \(drops.text)")
        findings.append(
          Finding(
            component: component, kind: "interface drops", step: "node-pod", score: 0.55, evidence: [drops.text],
            next: isNode
              ? "ip -s link on \(name); the NIC's rings and the qdisc (tc -s qdisc)"
              : "the pod's interface and its node's backlog (/proc/net/softnet_stat)"))
      } else if periods > 0, Double(throttled) / Double(periods) > thresholds.throttledShare {
        if status == .ok { status = .warning }
        let share = Double(throttled) / Double(periods)
        evidence.append(String(format: "%@: CPU throttled in %.0f%% of periods", component, share * 100))
        findings.append(
          Finding(
            component: component, kind: "cpu throttling", step: "node-pod", score: 0.5 + min(0.3, share / 2),
            evidence: [
              String(format: "throttled in %.0f%% of CFS periods (%d of %d)", share * 100, throttled, periods)
            ],
            next: "raise the pod's CPU limit or find what uses the CPU"))
      }
    }
    // The objects at the window's end: a pod of the path waiting in CrashLoopBackOff (kubelet
    // holds it down between restarts, so the samples may show no restart in the window).
    for object in input.objects {
      guard case .pod(let pod) = object else { continue }
      let key = Self.key(pod.metadata)
      guard pathPods.contains(key),
        let status = pod.status?.containerStatuses?.first(where: { $0.state?.waiting?.reason == "CrashLoopBackOff" }),
        !findings.contains(where: { $0.component == "pod \(key)" && $0.kind == "pod crash loop" })
      else { continue }
      let exit = status.lastState?.terminated.map {
        "last exit code \($0.exitCode.map(String.init) ?? "?") (\($0.reason ?? "?"))"
      }
      let what =
        (["CrashLoopBackOff at the window's end", "\(status.restartCount ?? 0) restarts"] + [exit].compactMap { $0 })
        .joined(separator: ", ")
      evidence.append("pod \(key): \(what)")
      findings.removeAll { $0.component == "pod \(key)" && $0.kind == "pod not ready" }
      findings.append(
        Finding(
          component: "pod \(key)", kind: "pod crash loop", step: "node-pod", score: 0.85, evidence: [what],
          next: "kubectl logs --previous; the last exit code and its reason"))
    }
    if findings.contains(where: { $0.step == "node-pod" && $0.score >= 0.6 }) { status = .failed }
    // The objects at the window's end: a node whose Ready condition is not True.
    for object in input.objects {
      guard case .node(let node) = object, !node.ready, let name = node.metadata?.name,
        !findings.contains(where: { $0.component == "node \(name)" && $0.kind == "node not ready" })
      else { continue }
      status = .failed
      let condition = node.status?.conditions?.first { $0.type == "Ready" }?.status ?? "missing"
      evidence.append("node \(name): Ready condition \(condition) at the window's end")
      findings.append(
        Finding(
          component: "node \(name)", kind: "node not ready", step: "node-pod", score: 0.99,
          evidence: ["Ready condition \(condition) at the window's end"],
          next: "check the node's kubelet and uplink"))
    }
    if evidence.isEmpty { evidence = ["\(latest.count) nodes and pods healthy"] }
    return StepOutcome(step: StepResult(step: "node-pod", status: status, evidence: evidence), findings: findings)
  }

  /// Packets an interface dropped between two samples, above the threshold share of its
  /// packets; an interface whose counters went back (recreated with its pod) is left out.
  func interfaceDrops(from start: ResourceSample, to last: ResourceSample) -> (dropped: Int, text: String)? {
    var dropped = 0
    var packets = 0
    var names: [String] = []
    for (name, end) in last.interfaces.sorted(by: { $0.key < $1.key }) {
      guard let begin = start.interfaces[name], end.packets >= begin.packets, end.dropped >= begin.dropped else {
        continue
      }
      packets += end.packets - begin.packets
      if end.dropped > begin.dropped {
        dropped += end.dropped - begin.dropped
        names.append("\(name) \(end.dropped - begin.dropped)")
      }
    }
    guard dropped > 0, Double(dropped) > thresholds.interfaceDropShare * Double(max(packets, 1)) else { return nil }
    return (
      dropped,
      String(
        format: "%d packets dropped by its interfaces (%@), %.1f%% of %d", dropped, names.joined(separator: ", "),
        Double(dropped) * 100 / Double(max(packets, 1)), packets)
    )
  }

  /// 2. Backend service: golden metrics at the server pods, per Service on the path and per pod,
  /// against the baseline where one exists; the deepest failing Service first.
  func serviceGoldenStep() -> StepOutcome {
    var evidence: [String] = []
    var status = StepResult.Status.ok
    var findings: [Finding] = []
    // DNS has its own step; its answers (NXDOMAIN, REFUSED) are not the service's errors.
    let services = path.filter { !$0.hasSuffix("/kube-dns") }
    let latencyUp = Set(services.filter { latencyRise(of: $0) != nil })
    for service in services {
      let pods = red[service] ?? [:]
      let total = total(service)
      guard total.requests > 0 else {
        evidence.append("\(service): no requests reached its pods")
        continue
      }
      let p99 = total.histogram.quantile(0.99)
      evidence.append(
        String(
          format: "%@: %d requests (%.1f/s), %.1f%% errors, p50 %.1f ms, p99 %.1f ms, %d pods", service, total.requests,
          Double(total.requests) / windowSeconds, total.errorRatio * 100, Double(total.histogram.quantile(0.5)) / 1000,
          Double(p99) / 1000, pods.count))
      if let baseline = baselineRED[service], baseline.requests > 0 {
        evidence.append(
          String(
            format: "%@ baseline: %.1f/s, %.1f%% errors, p99 %.1f ms", service,
            Double(baseline.requests) / baselineSeconds, baseline.errorRatio * 100,
            Double(baseline.histogram.quantile(0.99)) / 1000))
        let rate = Double(total.requests) / windowSeconds
        let baselineRate = Double(baseline.requests) / baselineSeconds
        if baselineRate >= 1, rate < baselineRate * thresholds.rateDropShare {
          if status == .ok { status = .warning }
          findings.append(
            Finding(
              component: "service \(service)", kind: "traffic dropped", step: "service-golden", score: 0.3,
              evidence: [String(format: "%.1f requests/s, %.1f/s in the baseline", rate, baselineRate)],
              next: "what stops requests before they reach its pods: callers, DNS, the Service"))
        }
      }
      // One pod deviating from its siblings is the pod's fault.
      let ratios = pods.mapValues(\.errorRatio)
      for (pod, podRED) in pods.sorted(by: { $0.key < $1.key })
      where pods.count > 1 && podRED.errorRatio > thresholds.errorRatioFailed {
        let siblings = ratios.filter { $0.key != pod }.map(\.value)
        let siblingRatio = siblings.reduce(0, +) / Double(max(1, siblings.count))
        if podRED.errorRatio > max(thresholds.errorRatioWarning, siblingRatio * thresholds.podDeviation) {
          status = .failed
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
      for (pod, podP99) in p99s.sorted(by: { $0.key < $1.key }) where pods.count > 1 {
        let siblings = p99s.filter { $0.key != pod }.map(\.value).sorted()
        let median = siblings[siblings.count / 2]
        if median > 0, Double(podP99) > Double(median) * thresholds.slowPodFactor, podP99 > 200_000 {
          if status == .ok { status = .warning }
          findings.append(
            Finding(
              component: "pod \(pod)", kind: "pod slow", step: "service-golden", score: 0.75,
              evidence: [
                String(format: "p99 %.0f ms; its siblings' %.0f ms", Double(podP99) / 1000, Double(median) / 1000)
              ],
              next: "the pod's CPU, GC and downstream calls"))
        }
      }
      let below = path.drop { $0 != service }.dropFirst()
      let depth = Double(path.firstIndex(of: service) ?? 0)
      if let rise = latencyRise(of: service) {
        if p99 > thresholds.latencyObjectiveMicros { status = .failed } else if status == .ok { status = .warning }
        // The deepest Service whose latency rose is the likelier cause; those above inherit it.
        let explained = below.contains { latencyUp.contains($0) }
        findings.append(
          Finding(
            component: "service \(service)", kind: "latency up", step: "service-golden",
            score: explained ? 0.25 : 0.45 + 0.01 * depth,
            evidence: [
              String(
                format: "p99 %.0f ms; %.0f ms in the baseline", Double(rise.now) / 1000, Double(rise.before) / 1000)
            ],
            next: "its pods' CPU and their downstream calls; the path step's slowest segment"))
      }
      if total.errorRatio > thresholds.errorRatioFailed {
        status = .failed
        let podsFailing = ratios.values.filter { $0 > thresholds.errorRatioFailed }.count
        if podsFailing == pods.count {
          // All pods fail: the Service's fault unless something below it explains it.
          let belowFailing = below.contains { (red[$0].map { $0.values.reduce(0) { $0 + $1.serverErrors } } ?? 0) > 0 }
          findings.append(
            Finding(
              component: "service \(service)", kind: "all pods fail", step: "service-golden",
              score: belowFailing ? 0.3 : 0.55 + 0.01 * depth,
              evidence: [
                String(
                  format: "%.0f%% of %d requests failed on all %d pods", total.errorRatio * 100, total.requests,
                  pods.count)
              ],
              next: "what this Service depends on: its downstream calls, DNS, Redis"))
        }
      } else if total.errorRatio > thresholds.errorRatioWarning, status == .ok {
        status = .warning
      }
    }
    return StepOutcome(
      step: StepResult(step: "service-golden", status: status, evidence: evidence), findings: findings)
  }

  /// The Service's p99 in the window and the baseline's, when it rose past the baseline thresholds.
  func latencyRise(of service: String) -> (now: Int64, before: Int64)? {
    guard let baseline = baselineRED[service], baseline.requests >= 20 else { return nil }
    let total = total(service)
    guard total.requests >= 20 else { return nil }
    let now = total.histogram.quantile(0.99)
    let before = baseline.histogram.quantile(0.99)
    guard Double(now) > Double(before) * thresholds.baselineLatencyFactor,
      now > before + thresholds.baselineLatencyMarginMicros
    else { return nil }
    return (now, before)
  }

  /// 3. DNS: the clients' lookups of the path's Service names — rcodes with search-path
  /// expansions set apart (only full names count), unanswered lookups, latency — and the DNS
  /// Service's endpoints.
  func dnsStep() -> StepOutcome {
    var evidence: [String] = []
    var status = StepResult.Status.ok
    var findings: [Finding] = []
    let refused = connectionFailures(to: "kube-system/kube-dns")
    for service in path {
      let name = Self.dnsName(of: service)
      let ofName = lookups.filter { $0.domain == name && countsAsClient($0.clientPod, of: service) }
      guard !ofName.isEmpty else { continue }
      let answered = ofName.filter { $0.code == 0 }.count
      let nxdomain = ofName.filter { $0.code == 3 }.count
      let unanswered = ofName.filter { $0.status == "timeout" }.count
      let p95 = Self.p95(ofName.map(\.durationMicros))
      // With a baseline, slow is relative to it (floored); without, the documented default.
      let before = baselineLookups.filter { $0.domain == name }.map(\.durationMicros)
      let threshold =
        before.count >= 10
        ? min(
          thresholds.dnsLatencyMicros,
          max(Int64(Double(Self.p95(before)) * thresholds.baselineLatencyFactor), thresholds.baselineDNSFloorMicros))
        : thresholds.dnsLatencyMicros
      evidence.append(
        "\(name): \(ofName.count) lookups, \(answered) answered, \(nxdomain) NXDOMAIN, \(unanswered) unanswered, p95 \(p95 / 1000) ms"
          + (before.count >= 10 ? " (baseline p95 \(Self.p95(before) / 1000) ms)" : ""))
      // The full name's lookups since its last answer: a record that went missing within the
      // window answered first, then NXDOMAIN to the end.
      let sinceAnswer = ofName.sorted { $0.startMicros < $1.startMicros }.reversed().prefix { $0.code != 0 }
      let missingSince = sinceAnswer.filter { $0.code == 3 }.count
      if (nxdomain > 0 && answered == 0) || missingSince >= 3 {
        status = .failed
        findings.append(
          Finding(
            component: "dns", kind: "record missing", step: "dns", score: 0.95,
            evidence: [
              answered == 0
                ? "\(name): \(nxdomain) NXDOMAIN and no answer (not a search-path expansion: the full name fails)"
                : "\(name): answered \(answered) times, then \(missingSince) NXDOMAIN to the window's end (the full name, not a search-path expansion)"
            ],
            next: "the cluster DNS records for \(name); the Service exists?"))
      } else if unanswered > 0 && unanswered * 2 >= ofName.count {
        status = .failed
        findings.append(
          Finding(
            component: "dns", kind: "dns down", step: "dns", score: 0.9,
            evidence: ["\(name): \(unanswered) of \(ofName.count) lookups unanswered"]
              + refused.sorted { $0.key < $1.key }.map { "kube-dns connections: \($0.key) \($0.value)" },
            next: "the DNS pods and the kube-dns Service's endpoints"))
      } else if p95 > threshold {
        if status == .ok { status = .warning }
        findings.append(
          Finding(
            component: "dns", kind: "dns slow", step: "dns", score: 0.7,
            evidence: ["\(name): p95 \(p95 / 1000) ms (threshold \(threshold / 1000) ms)"],
            next: "the DNS pods' CPU and upstreams"))
      }
    }
    // DNS pods unreachable altogether.
    if let kubeDNS = endpoints(of: "kube-system/kube-dns"), kubeDNS.ready == 0 {
      status = .failed
      findings.append(
        Finding(
          component: "dns", kind: "dns down", step: "dns", score: 0.9,
          evidence: ["kube-dns has no ready endpoints (\(kubeDNS.notReady) not ready)"],
          next: "the DNS pods"))
    }
    if evidence.isEmpty { evidence = ["no lookups of the path's names captured"] }
    return StepOutcome(step: StepResult(step: "dns", status: status, evidence: evidence), findings: findings)
  }

  static func p95(_ durations: [Int64]) -> Int64 {
    let sorted = durations.sorted()
    return sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, sorted.count * 95 / 100)]
  }

  /// 4. Service: connections to each ClusterIP/NodePort on the path — refused by the node, reset
  /// by the pods (targetPort), unanswered from one node (stale rules) — and the endpoints.
  func serviceStep() -> StepOutcome {
    var evidence: [String] = []
    var status = StepResult.Status.ok
    var findings: [Finding] = []
    for service in path {
      let failures = connectionFailures(to: service)
      let total = failures.values.reduce(0, +)
      let refused = failures["server_reset"] ?? 0
      // Connections the pods themselves reset at once (seen at the pods' own interfaces).
      let resetByPods = flows(to: service).filter {
        $0.serverKind == "pod" && $0.observationPoint == "s"
          && ($0.closeType == "server_reset" || $0.closeType == "server_establish_reset")
      }.reduce(0) { $0 + $1.flows }
      let endpoints = endpoints(of: service)
      evidence.append(
        "\(service): \(total) connections to the ClusterIP/NodePort, refused or reset \(refused), reset by the pods \(resetByPods); endpoints "
          + (endpoints.map { "\($0.ready) ready, \($0.notReady) not ready" } ?? "unknown"))
      if let endpoints, endpoints.ready == 0 {
        status = .failed
        let selector = serviceObject(service)?.spec?.selector ?? [:]
        let members = podServices.filter { $0.value.contains(service) }.keys.sorted()
        if members.isEmpty {
          findings.append(
            Finding(
              component: "service \(service)", kind: "selector matches no pods", step: "service", score: 0.97,
              evidence: [
                "Endpoints empty; selector \(selector.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")) matches no pod",
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
        status = .failed
        let targetPorts = serviceObject(service)?.spec?.ports?.compactMap { $0.targetPort?.description } ?? []
        var containerPorts = Set<Int>()
        for object in input.objects {
          if case .pod(let pod) = object, podServices[Self.key(pod.metadata)]?.contains(service) == true {
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
      } else if let unanswered = unansweredByNode(service) {
        status = .failed
        findings.append(unanswered)
      }
    }
    return StepOutcome(step: StepResult(step: "service", status: status, evidence: evidence), findings: findings)
  }

  /// Connections to the ClusterIP whose SYN went unanswered, from one node only: that node's
  /// rules are stale. A stale rule shows as connections never answered and as connections
  /// answered only after a retransmitted SYN (in the lab, with the gone pod's address on the
  /// node's own bridge, a retransmitted SYN was translated afresh and often reached a live
  /// endpoint). Loss on the node's own path would delay its connections to every Service alike,
  /// so the node's other Services are the control.
  func unansweredByNode(_ service: String) -> Finding? {
    struct Tally {
      var neverAnswered = 0
      var answeredLate = 0
      var total = 0
      var share: Double { Double(neverAnswered + answeredLate) / Double(max(1, total)) }
    }
    var byNode: [String: Tally] = [:]
    var otherServices: [String: Tally] = [:]
    let failedClose: Set<String> = ["client_syn_repeat", "timeout", "server_reset", "icmp_unreachable"]
    func add(_ flow: FlowCount, to tally: inout Tally) {
      tally.total += flow.flows
      if failedClose.contains(flow.closeType) || (flow.closeType == "in_progress" && flow.synRetransmitted) {
        tally.neverAnswered += flow.flows
      } else if flow.synRetransmitted {
        tally.answeredLate += flow.flows
      }
    }
    for flow in flowCounts where flow.serverKind == "service" && flow.observationPoint == "c" {
      if flow.serverService == service {
        if countsAsClient(flow.clientPod, of: service) { add(flow, to: &byNode[flow.node, default: Tally()]) }
      } else {
        add(flow, to: &otherServices[flow.node, default: Tally()])
      }
    }
    guard let worst = byNode.sorted(by: { $0.key < $1.key }).max(by: { $0.value.share < $1.value.share }),
      worst.value.share > 0.05
    else { return nil }
    let tally = worst.value
    let others = byNode.filter { $0.key != worst.key }.map(\.value.share)
    let othersShare = others.isEmpty ? 0 : others.reduce(0, +) / Double(others.count)
    // Too few connections to other Services say nothing either way.
    let control = otherServices[worst.key].flatMap { $0.total >= 10 ? $0.share : nil }
    let single = othersShare * 3 < tally.share && (control ?? 0) * 3 < tally.share
    let neverAnsweredShare = Double(tally.neverAnswered) / Double(max(1, tally.total))
    guard single || neverAnsweredShare > 0.05 else { return nil }
    var evidence = [
      String(
        format:
          "from %@: %d of %d connections to %@ had their SYN unanswered (%.0f%%): %d never answered, %d answered only after a retransmitted SYN; other nodes %.1f%%",
        worst.key, tally.neverAnswered + tally.answeredLate, tally.total, service, tally.share * 100,
        tally.neverAnswered, tally.answeredLate, othersShare * 100)
    ]
    if let control {
      evidence.append(
        String(format: "%@'s connections to other Services: %.1f%% with an unanswered SYN", worst.key, control * 100))
    }
    return Finding(
      component: single ? "node \(worst.key) kube-proxy" : "service \(service)", kind: "connections unanswered",
      step: "service", score: single ? 0.88 : 0.6, evidence: evidence,
      next: single
        ? "iptables-save -t nat on \(worst.key): KUBE-SEP rules of \(service) pointing at a pod that is gone"
        : "the Service's endpoints and every node's rules")
  }

  /// 5. Ingress: the controllers' answers, a 503 for a rule whose backend does not exist, and a
  /// controller without ready endpoints behind its NodePort.
  func ingressStep() throws -> StepOutcome {
    var evidence: [String] = []
    var status = StepResult.Status.skipped
    var findings: [Finding] = []
    let controllers = ingressControllerPods
    let answers = try input.store.requestCounts(
      protocolName: "http", observationPoint: "s", from: window.lowerBound, to: window.upperBound
    ).filter { controllers.contains($0.serverPod) }
    if !answers.isEmpty {
      status = .ok
      var byController: [String: (total: Int, failed: Int, codes: [String: Int])] = [:]
      for answer in answers {
        var entry = byController[answer.serverPod] ?? (0, 0, [:])
        entry.total += answer.count
        if let code = answer.code, code >= 500 { entry.failed += answer.count }
        entry.codes[answer.code.map(String.init) ?? answer.status, default: 0] += answer.count
        byController[answer.serverPod] = entry
      }
      for (controller, entry) in byController.sorted(by: { $0.key < $1.key }) {
        evidence.append(
          "\(controller): \(entry.total) requests, "
            + entry.codes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        guard entry.failed * 2 > entry.total, (entry.codes["503"] ?? 0) * 2 > entry.total else { continue }
        status = .failed
        // A 503 without any upstream call: the rule points at a backend that does not exist.
        for object in input.objects {
          guard case .ingress(let ingress) = object else { continue }
          let namespace = ingress.metadata?.namespace ?? "default"
          for rule in ingress.spec?.rules ?? [] {
            for rulePath in rule.http?.paths ?? [] {
              guard let backend = rulePath.backend?.service, let name = backend.name else { continue }
              let service = serviceObject("\(namespace)/\(name)")
              let ports = service?.spec?.ports?.compactMap(\.port) ?? []
              guard service == nil || (backend.port?.number.map { !ports.contains($0) } ?? false) else { continue }
              findings.append(
                Finding(
                  component: "ingress \(namespace)/\(ingress.metadata?.name ?? "")",
                  kind: "rule points at a missing backend", step: "ingress", score: 0.98,
                  evidence: [
                    "\(entry.codes["503"] ?? 0) of \(entry.total) requests answered 503 by \(controller)",
                    "rule \(rule.host ?? "*")\(rulePath.path ?? "/") → \(name):\(backend.port?.number.map(String.init) ?? "?"); the Service has ports \(ports)",
                  ], next: "fix the Ingress backend"))
            }
          }
        }
      }
    }
    // A controller with no ready endpoints behind its NodePort.
    let controllerService = "kube-system/ingress-nginx-controller"
    if let controllerEndpoints = endpoints(of: controllerService), controllerEndpoints.ready == 0 {
      status = .failed
      let failed = connectionFailures(to: controllerService).values.reduce(0, +)
      findings.append(
        Finding(
          component: "ingress controller \(controllerService)", kind: "ingress down", step: "ingress", score: 0.93,
          evidence: ["no ready endpoints behind the controller's NodePort; \(failed) connections failed"],
          next: "the controller pod"))
    }
    if status == .skipped { evidence = ["no requests through an ingress controller captured"] }
    return StepOutcome(step: StepResult(step: "ingress", status: status, evidence: evidence), findings: findings)
  }

  /// 6. Path: where packets are lost (retransmissions per uplink, packets that vanished between
  /// a node's uplink and its pods) and where failing requests' traces break.
  func pathStep() throws -> StepOutcome {
    var evidence: [String] = []
    var status = StepResult.Status.ok
    var findings: [Finding] = []
    // Loss on a link shows as retransmissions on every uplink the flows cross; the node whose
    // own external traffic (to or from outside the cluster, crossing no other node) retransmits
    // is the one whose uplink loses packets.
    var uplinks: [String: (retransmitted: Int, packets: Int, externalRetransmitted: Int, externalPackets: Int)] = [:]
    for flow in flowCounts
    where flow.observationPoint == "c-nd" || flow.observationPoint == "s-nd"
      || ((flow.observationPoint == "c" || flow.observationPoint == "s") && flow.interface == "eth0")
    {
      let retransmitted = flow.retransmissions
      let external = flow.clientKind == "external" || flow.serverKind == "external"
      var entry = uplinks[flow.node] ?? (0, 0, 0, 0)
      entry.retransmitted += retransmitted
      entry.packets += flow.packets
      if external {
        entry.externalRetransmitted += retransmitted
        entry.externalPackets += flow.packets
      }
      uplinks[flow.node] = entry
    }
    var lossyNodes: [(node: String, share: Double, external: Double)] = []
    for (node, entry) in uplinks.sorted(by: { $0.key < $1.key }) {
      let share = Double(entry.retransmitted) / Double(max(1, entry.packets))
      let external = Double(entry.externalRetransmitted) / Double(max(1, entry.externalPackets))
      evidence.append(
        String(
          format: "%@ uplink: %.1f%% of packets retransmitted (%.1f%% of its traffic with outside the cluster)", node,
          share * 100, external * 100))
      if share > thresholds.retransmissionShare { lossyNodes.append((node, share, external)) }
    }
    // Where packets vanish: the same connection counted at a node's uplink and at its pod's veth
    // (both captured on that node, one clock). Packets that passed the uplink capture but never
    // reached the veth, or left the veth but never the uplink, were dropped inside that node.
    for entry in pathLoss where entry.packets > 0 {
      evidence.append(
        "\(entry.node): \(entry.lostPackets) of \(entry.packets) packets vanished between its uplink and its pods")
    }
    let dropShares = Dictionary(
      pathLoss.map { ($0.node, Double($0.lostPackets) / Double(max(1, $0.packets))) }, uniquingKeysWith: +)
    if let worst = dropShares.sorted(by: { $0.key < $1.key }).max(by: { $0.value < $1.value }),
      worst.value > thresholds.retransmissionShare / 2,
      dropShares.filter({ $0.key != worst.key }).allSatisfy({ $0.value * 3 < worst.value })
    {
      status = .failed
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
    if !lossyNodes.isEmpty {
      status = .failed
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
    }
    // Traces of the target's failed requests, where its pods answered any (the search walks
    // back from the newest request: through all of a healthy window's).
    let served = total(input.service)
    let assembler = TraceAssembler(source: input.store)
    let failing =
      served.serverErrors + served.timeouts == 0
      ? []
      : try input.store.candidates(
        service: input.service, onlyErrors: true, slowerThanMicros: nil, since: window.lowerBound, limit: 5)
    var traced: [(example: ExampleTrace, depth: Int, spans: Int)] = []
    for request in failing where !request.xRequestID.isEmpty && request.startMicros <= window.upperBound {
      guard let trace = try assembler.assemble(xRequestID: request.xRequestID) else { continue }
      if let breakPoint = trace.breakPoint, traced.count < 3 {
        evidence.append("trace \(request.xRequestID): break point at span \(breakPoint.span): \(breakPoint.reason)")
      }
      traced.append(
        (
          ExampleTrace(xRequestID: request.xRequestID, summary: trace.summary),
          trace.breakPoint.map { trace.spans[$0.span].depth } ?? -1, trace.spans.count
        ))
    }
    // The examples that show the most: the deepest break points (a request cut by the capture's
    // start lacks its first hops and breaks shallower).
    let examples = traced.enumerated().sorted {
      ($0.element.depth, $0.element.spans, -$0.offset) > ($1.element.depth, $1.element.spans, -$1.offset)
    }.prefix(2).map(\.element.example)
    return StepOutcome(
      step: StepResult(step: "path", status: status, evidence: evidence), findings: findings,
      examples: Array(examples))
  }

  /// Traces of the target's slowest requests of the window (above its p99), for a verdict about
  /// latency that no failed request shows.
  func slowExamples() throws -> [ExampleTrace] {
    let served = total(input.service)
    guard served.requests > 0 else { return [] }
    // The histogram's p99 is a bucket's midpoint, up to 6.25% above the requests in it.
    let threshold = served.histogram.quantile(0.99) * 15 / 16
    let assembler = TraceAssembler(source: input.store)
    var examples: [ExampleTrace] = []
    for request in try input.store.candidates(
      service: input.service, onlyErrors: false, slowerThanMicros: threshold, since: window.lowerBound, limit: 4)
    where !request.xRequestID.isEmpty && request.startMicros <= window.upperBound && examples.count < 2 {
      if let trace = try assembler.assemble(xRequestID: request.xRequestID) {
        examples.append(ExampleTrace(xRequestID: request.xRequestID, summary: trace.summary))
      }
    }
    return examples
  }
}
