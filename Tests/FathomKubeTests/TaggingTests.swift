import FathomRecords
import Foundation
import Testing

@testable import FathomKube

@Suite struct TaggingTests {
  static let objects = """
    {"kind": "List", "apiVersion": "v1", "items": [
      {"kind": "Node", "metadata": {"name": "node-1"}, "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.11"}]}},
      {"kind": "Node", "metadata": {"name": "node-2"}, "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.12"}]}},
      {"kind": "ReplicaSet", "metadata": {"name": "web-7d4b9", "namespace": "shop",
        "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}]}},
      {"kind": "Pod", "metadata": {"name": "web-7d4b9-abcde", "namespace": "shop", "labels": {"app": "web"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d4b9", "controller": true}]},
       "spec": {"nodeName": "node-2", "containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]},
       "status": {"phase": "Running", "podIP": "10.244.2.3", "hostIP": "172.30.0.12"}},
      {"kind": "Pod", "metadata": {"name": "client-x", "namespace": "shop", "labels": {"app": "client"}},
       "spec": {"nodeName": "node-1"}, "status": {"phase": "Running", "podIP": "10.244.1.6"}},
      {"kind": "Pod", "metadata": {"name": "edge", "namespace": "kube-system", "labels": {"app": "edge"}},
       "spec": {"nodeName": "node-2", "hostNetwork": true, "containers": [{"name": "nginx", "ports": [{"containerPort": 80}]}]},
       "status": {"phase": "Running", "podIP": "172.30.0.12", "hostIP": "172.30.0.12"}},
      {"kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
       "spec": {"type": "NodePort", "clusterIP": "10.96.100.3", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30081}]}},
      {"kind": "Ingress", "metadata": {"name": "site", "namespace": "shop"},
       "spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [
         {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
         {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}}]}}
    ]}
    """

  func index() throws -> ClusterIndex { ClusterIndex(snapshot: try KubeDecoder.decode(Self.objects)) }

  @Test func addressesResolveToPodsServicesNodesAndNodePorts() throws {
    let index = try index()
    let web = index.identify(ip: "10.244.2.3", port: 8080, transport: "TCP", at: 0, asServer: true)
    #expect(web.kind == .pod)
    #expect(index.resource(web.pod)?.name == "web-7d4b9-abcde")
    #expect(index.resource(web.workload)?.name == "web" && index.resource(web.workload)?.detail == "Deployment")
    #expect(index.resource(web.node)?.name == "node-2")
    // The Service's named targetPort resolves through the container's port name.
    #expect(index.resource(web.service)?.name == "web")
    let clusterIP = index.identify(ip: "10.96.100.3", port: 80, transport: "TCP", at: 0, asServer: true)
    #expect(clusterIP.kind == .service && index.resource(clusterIP.service)?.name == "web")
    let nodePort = index.identify(ip: "172.30.0.11", port: 30081, transport: "TCP", at: 0, asServer: true)
    #expect(nodePort.kind == .nodePort && index.resource(nodePort.node)?.name == "node-1")
    let hostNetwork = index.identify(ip: "172.30.0.12", port: 80, transport: "TCP", at: 0, asServer: true)
    #expect(hostNetwork.kind == .pod && index.resource(hostNetwork.pod)?.name == "edge")
    #expect(index.identify(ip: "172.30.0.12", port: 22, transport: "TCP", at: 0, asServer: true).kind == .node)
    #expect(index.identify(ip: "8.8.8.8", port: 53, transport: "UDP", at: 0, asServer: true) == .external)
    #expect(
      index.ingressRule(host: "shop.example.com", path: "/api/v1", at: 0).map { index.resource($0.service)?.name }
        == "api")
    #expect(
      index.ingressRule(host: "shop.example.com:30080", path: "/cart", at: 0).map { index.resource($0.service)?.name }
        == "web")
    #expect(index.ingressRule(host: "other.example.com", path: "/", at: 0) == nil)
  }

  @Test func observationPointsFollowTheInterface() throws {
    let index = try index()
    let tagger = AutoTagger(index: index)
    let client = IPAddress("10.244.1.6")!
    let web = IPAddress("10.244.2.3")!
    func point(_ node: String, podVeth: String? = nil, pod: String? = nil) -> CapturePoint {
      var point = CapturePoint(node: node)
      if let podVeth, let pod { point.podInterfaces[podVeth] = pod }
      return point
    }
    func observe(
      _ point: CapturePoint, _ interface: String, server: IPAddress = IPAddress("10.244.2.3")!, port: UInt16 = 8080
    ) -> ObservationPoint {
      tagger.tags(
        clientIP: client, clientPort: 40000, serverIP: server, serverPort: port, transport: "TCP", interface: interface,
        at: 0, point: point
      ).observationPoint
    }
    #expect(
      observe(
        point("node-1", podVeth: "veth1", pod: "shop/client-x"), "veth1", server: IPAddress("10.96.100.3")!, port: 80)
        == .client)
    #expect(observe(point("node-1"), "eth0") == .clientNode)
    #expect(observe(point("node-2"), "eth0") == .serverNode)
    #expect(observe(point("node-2", podVeth: "veth2", pod: "shop/web-7d4b9-abcde"), "veth2") == .server)
    #expect(observe(CapturePoint(node: nil), "eth0") == .rest)
    _ = web
    // The external client reaching the hostNetwork ingress on node-2's uplink: that is the pod's own NIC.
    let external = tagger.tags(
      clientIP: IPAddress("172.30.0.100")!, clientPort: 50000, serverIP: IPAddress("172.30.0.12")!, serverPort: 80,
      transport: "TCP", interface: "eth0", at: 0, point: point("node-2"))
    #expect(external.observationPoint == .server && external.client == .external)
  }

  /// Pods come and go; an IP reused later belongs to the pod that had it at the record's time.
  @Test func reusedIPsResolveByTime() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-kube-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    func pod(_ name: String) -> String {
      "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"\(name)\",\"namespace\":\"shop\"},\"spec\":{\"nodeName\":\"node-1\"},\"status\":{\"phase\":\"Running\",\"podIP\":\"10.244.1.9\"}}"
    }
    let log = [
      "{\"time\":\"2026-11-27T10:00:00.000000Z\",\"type\":\"ADDED\",\"object\":\(pod("old"))}",
      "{\"time\":\"2026-11-27T10:05:00.000000Z\",\"type\":\"DELETED\",\"object\":\(pod("old"))}",
      "{\"time\":\"2026-11-27T10:05:00.500000Z\",\"type\":\"ADDED\",\"object\":\(pod("new"))}",
    ].joined(separator: "\n")
    let path = directory.appendingPathComponent("events.jsonl").path
    try log.write(toFile: path, atomically: true, encoding: .utf8)
    let index = try ClusterIndex(eventLog: path)
    let base = try #require(ClusterIndex.micros("2026-11-27T10:00:00.000000Z"))
    func name(at offset: Int64) -> String? {
      let identity = index.identify(ip: "10.244.1.9", port: 1, transport: "TCP", at: base + offset, asServer: false)
      return identity.kind == .pod ? index.resource(identity.pod)?.name : nil
    }
    #expect(name(at: 60_000_000) == "old")
    #expect(name(at: 300_200_000) == nil)
    #expect(name(at: 301_000_000) == "new")
    #expect(ClusterIndex.micros("2026-11-27T10:05:00.500001Z")! - base == 300_500_001)
  }
}
