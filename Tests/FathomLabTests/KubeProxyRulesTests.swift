import Foundation
import Testing

@testable import FathomLab

@Suite struct KubeProxyRulesTests {
  let service = ServicePortRule(
    namespace: "ns1", service: "svc1", portName: "p80", transport: "TCP", clusterIP: "10.20.30.41", port: 80,
    nodePort: nil, endpoints: [.init(ip: "10.180.0.1", port: 80)])

  /// Chain names from kube-proxy's own iptables proxier tests (pkg/proxy/iptables/proxier_test.go).
  @Test func chainNamesEqualKubeProxys() {
    #expect(KubeProxyRules.serviceChain(service) == "KUBE-SVC-XPGD46QRK7WJZT7O")
    #expect(KubeProxyRules.endpointChain(service, .init(ip: "10.180.0.1", port: 80)) == "KUBE-SEP-SXIVWICOYRO3J4NJ")
  }

  @Test func sha256KnownAnswers() {
    let empty = SHA256.digest([]).map { String(format: "%02x", $0) }.joined()
    #expect(empty == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    let abc = SHA256.digest(Array("abc".utf8)).map { String(format: "%02x", $0) }.joined()
    #expect(abc == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    let twoBlocks = SHA256.digest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
    #expect(
      twoBlocks.map { String(format: "%02x", $0) }.joined()
        == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    #expect(SHA256.base32(Array("foobar".utf8)) == "MZXW6YTBOI======")
  }

  @Test func probabilitiesSplitEvenly() {
    let endpoints = (1...3).map { ServicePortRule.Endpoint(ip: "10.244.1.\($0)", port: 8080) }
    var rule = service
    rule.endpoints = endpoints
    let text = KubeProxyRules.render([rule], clusterCIDR: "10.244.0.0/16")
    let chain = KubeProxyRules.serviceChain(rule)
    let picks = text.split(separator: "\n").filter { $0.hasPrefix("-A \(chain) ") && $0.contains("KUBE-SEP-") }
    #expect(picks.count == 3)
    #expect(picks[0].contains("--probability 0.3333333333"))
    #expect(picks[1].contains("--probability 0.5000000000"))
    #expect(!picks[2].contains("statistic"))
    for endpoint in endpoints {
      let sep = KubeProxyRules.endpointChain(rule, endpoint)
      #expect(text.contains("-A \(sep) -m comment --comment ns1/svc1:p80 -s \(endpoint.ip) -j KUBE-MARK-MASQ"))
      #expect(
        text.contains(
          "-A \(sep) -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination \(endpoint.ip):8080"))
    }
    #expect(text.contains("! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"))
  }

  @Test func serviceWithoutEndpointsIsRejected() {
    var rule = service
    rule.endpoints = []
    rule.nodePort = 30081
    let text = KubeProxyRules.render([rule], clusterCIDR: "10.244.0.0/16")
    #expect(
      text.contains(
        "-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 has no endpoints\" -m tcp -p tcp -d 10.20.30.41 --dport 80 -j REJECT"
      ))
    #expect(
      text.contains(
        "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns1/svc1:p80 has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30081 -j REJECT"
      ))
    #expect(!text.contains("KUBE-SVC-"))
  }

  @Test func nodePortGoesThroughExternalChainAndNodePortsIsLast() {
    var rule = service
    rule.nodePort = 30081
    let text = KubeProxyRules.render([rule], clusterCIDR: "10.244.0.0/16")
    let ext = KubeProxyRules.externalChain(rule)
    #expect(ext.hasPrefix("KUBE-EXT-XPGD46QRK7WJZT7O"))
    #expect(text.contains("-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 30081 -j \(ext)"))
    #expect(text.contains("-A \(ext) -j \(KubeProxyRules.serviceChain(rule))"))
    let natServices = text.split(separator: "\n").filter {
      $0.hasPrefix("-A KUBE-SERVICES") && text.range(of: "*nat")!.lowerBound < text.range(of: String($0))!.lowerBound
    }
    #expect(natServices.last?.contains("-j KUBE-NODEPORTS") == true)
    #expect(
      text.contains(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE"))
  }

  /// The rules load into a real iptables (root only; CI has it), in a namespace of our own.
  @Test(.enabled(if: getuid() == 0)) func rulesLoadIntoIptables() throws {
    // Not under the lab's prefix (`fl-`): a lab test running beside this one tears down every
    // namespace with it, killing iptables-restore mid-load (seen as "exit 9": SIGKILL).
    let name = "fathom-test-rules-\(getpid())"
    try Shell.run(["ip", "netns", "add", name])
    defer { Shell.attempt(["ip", "netns", "del", name]) }
    var rule = service
    rule.nodePort = 30081
    var empty = service
    empty.service = "svc2"
    empty.endpoints = []
    let text = KubeProxyRules.render([rule, empty], clusterCIDR: "10.244.0.0/16")
    try Shell.inNamespace(name, ["iptables-restore"], input: text)
    let saved = try Shell.inNamespace(name, ["iptables-save", "-t", "nat"])
    #expect(saved.contains("KUBE-SVC-XPGD46QRK7WJZT7O"))
    #expect(saved.contains("--to-destination 10.180.0.1:80"))
  }
}

@Suite struct TopologyTests {
  @Test func defaultTopologyHasTheIssuesShape() throws {
    let topology = try Topology.parse(yaml: Topology.defaultYAML)
    let plan = LabPlan(topology)
    #expect(plan.nodes.map(\.name) == ["node-1", "node-2"])
    func replicas(_ name: String) -> Int { plan.pods.filter { $0.deployment.name == name }.count }
    #expect(
      replicas("frontend") == 2 && replicas("checkout") == 2 && replicas("payment") == 1 && replicas("redis") == 1)
    #expect(plan.services["kube-system/kube-dns"]?.clusterIP == "10.96.0.10")
    // Both ingress modes: a pod behind a NodePort Service and a hostNetwork pod.
    let ingress = plan.pods.filter { $0.deployment.program == .ingress }
    #expect(Set(ingress.map(\.hostNetwork)) == [true, false])
    #expect(ingress.first { $0.hostNetwork }?.ip == plan.node(named: "node-2")?.ip)
    // Pods spread over both nodes, each in its node's pod subnet, with a CNI-style veth name.
    for pod in plan.pods where !pod.hostNetwork {
      let node = plan.node(named: pod.node)!
      #expect(pod.ip.hasPrefix("10.244.\(node.index)."))
      #expect(pod.hostVeth.count == 12 && pod.hostVeth.hasPrefix("veth"))
    }
    #expect(Set(plan.pods.filter { $0.deployment.name == "frontend" }.map(\.node)).count == 2)
    let podIPs = plan.pods.filter { !$0.hostNetwork }.map(\.ip)
    #expect(Set(podIPs).count == podIPs.count)
  }

  @Test func badTopologiesAreRejectedWithAReason() {
    let yaml = Topology.defaultYAML.replacingOccurrences(
      of: "replicas: 2, port: 8080, cpu: 500m, memory: 128Mi,\n     calls: [\"http://checkout",
      with: "replicas: 2, port: 8080, cpu: lots, memory: 128Mi,\n     calls: [\"http://checkout")
    #expect(throws: LabError.self) { try Topology.parse(yaml: yaml) }
    #expect(throws: LabError.self) { try Topology.parse(yaml: "nodes: [") }
    #expect(Quantity.millicores("500m") == 500 && Quantity.millicores("2") == 2000)
    #expect(Quantity.bytes("128Mi") == 134_217_728 && Quantity.bytes("1G") == 1_000_000_000)
  }
}

@Suite struct KubeObjectsTests {
  func state(readyAll: Bool) throws -> LabState {
    var state = LabState(topology: try Topology.parse(yaml: Topology.defaultYAML))
    for key in state.pods.keys { state.pods[key]?.ready = readyAll }
    return state
  }

  @Test func everyKindIsRenderedWithEndpointsFromSelectors() throws {
    let state = try state(readyAll: true)
    let objects = KubeObjects.render(state)
    let kinds = Set(objects.map { $0.key.split(separator: "/")[0] })
    #expect(
      kinds == [
        "Namespace", "Node", "Pod", "Service", "Endpoints", "EndpointSlice", "Ingress", "Deployment", "ReplicaSet",
      ])
    let checkout = objects.first { $0.key == "Endpoints/shop/checkout" }!.object
    let subsets = checkout["subsets"] as! [[String: Any]]
    #expect((subsets[0]["addresses"] as! [[String: Any]]).count == 2)
  }

  @Test func eventLogReplaysStateAtAnyTime() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-lab-events-\(getpid())").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let events = "\(directory)/events.jsonl"
    var state = try state(readyAll: true)
    let first = KubeObjects.recordChanges(&state, last: [:], eventsPath: events)
    let between = now()
    usleep(20_000)
    state.topology.services[state.topology.services.firstIndex { $0.name == "payment" }!].selector = [
      "app": "payment-v2"
    ]
    _ = KubeObjects.recordChanges(&state, last: first, eventsPath: events)
    func paymentAddresses(_ list: [String: Any]) -> Int {
      let items = list["items"] as! [[String: Any]]
      let endpoints = items.first {
        ($0["kind"] as? String) == "Endpoints" && (($0["metadata"] as? [String: Any])?["name"] as? String) == "payment"
      }!
      let subsets = endpoints["subsets"] as! [[String: Any]]
      return subsets.first.map { ($0["addresses"] as? [Any])?.count ?? 0 } ?? 0
    }
    #expect(paymentAddresses(try KubeObjects.list(eventsPath: events, at: between)) == 1)
    #expect(paymentAddresses(try KubeObjects.list(eventsPath: events, at: nil)) == 0)
  }

  /// kubectl itself reads the objects offline and finds every one.
  @Test(.enabled(if: (try? Shell.resolve("kubectl")) != nil)) func kubectlReadsTheList() throws {
    let state = try state(readyAll: true)
    let objects = KubeObjects.render(state)
    let list: [String: Any] = ["apiVersion": "v1", "kind": "List", "items": objects.map(\.object)]
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-lab-objects-\(getpid()).json").path
    try KubeObjects.json(list).write(toFile: path, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: path) }
    let output = try Shell.run(["kubectl", "label", "--local", "-f", path, "check=1", "-o", "name"])
    let names = output.split(separator: "\n")
    #expect(names.count == objects.count)
    #expect(names.contains("service/checkout"))
    #expect(names.contains { $0.hasPrefix("endpointslice.discovery.k8s.io/") })
    #expect(names.contains("ingress.networking.k8s.io/web"))
  }
}
