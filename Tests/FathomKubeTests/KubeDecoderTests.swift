import Foundation
import Testing

@testable import FathomKube

/// ../shared/testdata/k8s: real objects from kubernetes/api, VictoriaMetrics, k9s, popeye and
/// kubectl-neat (see its MANIFEST.md).
enum KubeTestData {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/testdata/k8s")
  static var available: Bool { FileManager.default.fileExists(atPath: root.path) }
  static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

  /// MANIFEST rows: path and the expected kind and object count (nil count: the file is not a
  /// Kubernetes object the manifest could name).
  static func manifest() -> [(path: String, kind: String, count: Int?)] {
    guard let text = try? String(contentsOfFile: path("MANIFEST.md"), encoding: .utf8) else { return [] }
    var rows: [(String, String, Int?)] = []
    for line in text.split(separator: "\n") where line.hasPrefix("| ") && !line.hasPrefix("| file") {
      let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
      guard cells.count >= 2, cells[0].contains("/") else { continue }
      let file = cells[0]
      let description = cells[1]
      // "Pod", "List[2:Pod]", "PodList[1:?]", "ServiceList[0:]", "?", "?[1:?]"
      if let open = description.firstIndex(of: "[") {
        let listKind = String(description[..<open])
        let inner = description[description.index(after: open)..<description.index(before: description.endIndex)]
        let parts = inner.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let count = Int(parts[0])
        var kind = parts.count > 1 ? parts[1] : "?"
        if kind == "?" || kind.isEmpty, listKind.hasSuffix("List"), listKind != "List" {
          kind = String(listKind.dropLast(4))
        }
        rows.append((file, kind, listKind == "?" ? nil : count))
      } else {
        rows.append((file, description, description == "?" ? nil : 1))
      }
    }
    return rows
  }
}

@Suite(.enabled(if: KubeTestData.available)) struct KubeDecoderTests {
  /// Every file the manifest names decodes to the kind and number of objects it lists; the
  /// malformed inputs are rejected with a message naming the bad field.
  @Test func manifestKindsAndCounts() throws {
    let rows = KubeTestData.manifest()
    #expect(rows.count > 150)
    var decoded = 0
    for row in rows {
      let file = KubeTestData.path(row.path)
      if row.path.contains("MUST_FAIL") {
        #expect(throws: KubeDecoder.Failure.self, "\(row.path) must be rejected") { try KubeDecoder.decode(file: file) }
        do {
          _ = try KubeDecoder.decode(file: file)
        } catch {
          #expect("\(error)".contains("metadata"), "\(row.path): \(error)")
        }
        continue
      }
      guard let count = row.count else { continue }
      let objects: [KubeObject]
      do {
        objects = try KubeDecoder.decode(file: file, kindHint: row.kind == "?" ? nil : row.kind)
      } catch {
        Issue.record("\(row.path): \(error)")
        continue
      }
      #expect(objects.count == count, "\(row.path): \(objects.count) objects, manifest says \(count)")
      if row.kind != "?" {
        #expect(objects.allSatisfy { $0.kind == row.kind }, "\(row.path): kinds \(Set(objects.map(\.kind)))")
      }
      decoded += 1
    }
    #expect(decoded > 140)
  }

  /// kubernetes/api's round-trip fixtures set every field: JSON and YAML of a kind decode to the
  /// same object.
  @Test(arguments: [
    "core.v1.Pod", "core.v1.Service", "core.v1.Endpoints", "discovery.k8s.io.v1.EndpointSlice", "core.v1.Node",
    "core.v1.Namespace", "networking.k8s.io.v1.Ingress", "apps.v1.Deployment", "apps.v1.ReplicaSet",
    "apps.v1.DaemonSet", "apps.v1.StatefulSet",
  ])
  func jsonAndYAMLAgree(_ name: String) throws {
    let json = try KubeDecoder.decode(file: KubeTestData.path("kubernetes-api/testdata/HEAD/\(name).json"))
    let yaml = try KubeDecoder.decode(file: KubeTestData.path("kubernetes-api/testdata/HEAD/\(name).yaml"))
    #expect(json.count == 1)
    #expect(json == yaml)
    #expect(json.first?.metadata?.name == "nameValue")
  }

  @Test(arguments: ["list1", "pod1", "service1", "pv1", "secret1", "role"])
  func kubectlNeatRawJSONAndYAMLAgree(_ name: String) throws {
    let json = try KubeDecoder.decode(file: KubeTestData.path("kubectl-neat/test/fixtures/\(name)-raw.json"))
    let yaml = try KubeDecoder.decode(file: KubeTestData.path("kubectl-neat/test/fixtures/\(name)-raw.yaml"))
    #expect(!json.isEmpty)
    #expect(json == yaml)
  }

  /// The fields k9s's table rows show (render/*_test.go): the Kubernetes-derived columns.
  @Test func k9sRows() throws {
    func one(_ file: String) throws -> KubeObject {
      try #require(try KubeDecoder.decode(file: KubeTestData.path("k9s/internal/render/testdata/\(file)")).first)
    }
    guard case .service(let service) = try one("svc.json") else {
      Issue.record("svc.json")
      return
    }
    #expect(service.metadata?.namespace == "default" && service.metadata?.name == "dictionary1")
    #expect(service.spec?.type == "ClusterIP" && service.clusterIPs == ["10.47.248.116"])
    #expect(service.spec?.selector == ["app": "dictionary1"])
    #expect(service.spec?.ports?.first?.name == "http" && service.spec?.ports?.first?.port == 4001)

    guard case .endpointSlice(let slice) = try one("eps.json") else {
      Issue.record("eps.json")
      return
    }
    #expect(slice.metadata?.namespace == "blee" && slice.metadata?.name == "fred" && slice.addressType == "IPv4")
    #expect(slice.ports?.compactMap(\.port) == [4244])
    #expect(slice.endpoints?.flatMap { $0.addresses ?? [] } == ["172.20.0.2", "172.20.0.3"])

    guard case .endpoints(let endpoints) = try one("ep.json") else {
      Issue.record("ep.json")
      return
    }
    #expect(endpoints.metadata?.namespace == "ns-1" && endpoints.metadata?.name == "blee")
    let subset = try #require(endpoints.subsets?.first)
    #expect(subset.addresses?.compactMap(\.ip) == ["10.0.0.67"] && subset.ports?.compactMap(\.port) == [8080])

    guard case .pod(let pod) = try one("po.json") else {
      Issue.record("po.json")
      return
    }
    #expect(pod.ips == ["172.17.0.6"] && pod.spec?.nodeName == "minikube" && pod.status?.phase == "Running")
    #expect(pod.restarts == 0)

    guard case .pod(let sidecar) = try one("po_sidecar.json") else {
      Issue.record("po_sidecar.json")
      return
    }
    #expect(sidecar.ips == ["10.244.0.8"] && sidecar.spec?.nodeName == "kind-control-plane")
    #expect(sidecar.status?.containerStatuses?.count == 1 && sidecar.status?.initContainerStatuses?.count == 2)

    guard case .node(let node) = try one("no.json") else {
      Issue.record("no.json")
      return
    }
    #expect(node.metadata?.name == "minikube" && node.ready && node.internalIPs == ["192.168.64.107"])
  }

  /// VictoriaMetrics' Kubernetes discovery tests: the (IP, port, protocol) → object facts their
  /// expected label sets state.
  @Test func victoriaMetricsTargets() throws {
    let services = try KubeDecoder.decode(file: KubeTestData.path("victoriametrics/service__L29__ServiceList.json"))
    guard case .service(let kubeDNS) = services.first else {
      Issue.record("no Service")
      return
    }
    #expect(kubeDNS.metadata?.name == "kube-dns" && kubeDNS.metadata?.namespace == "kube-system")
    #expect(kubeDNS.clusterIPs == ["10.96.0.10"])
    let ports = kubeDNS.spec?.ports ?? []
    #expect(ports.contains { $0.name == "dns" && $0.protocol == "UDP" && $0.port == 53 })
    #expect(ports.contains { $0.name == "dns-tcp" && $0.protocol == "TCP" && $0.port == 53 })
    #expect(ports.contains { $0.name == "metrics" && $0.port == 9153 })

    let endpoints = try KubeDecoder.decode(
      file: KubeTestData.path("victoriametrics/endpoints__L29__EndpointsList.json"))
    guard case .endpoints(let dnsEndpoints) = endpoints.first else {
      Issue.record("no Endpoints")
      return
    }
    let addresses = dnsEndpoints.subsets?.flatMap { $0.addresses ?? [] } ?? []
    #expect(
      addresses.contains {
        $0.ip == "172.17.0.2" && $0.targetRef?.name == "coredns-6955765f44-lnp6t" && $0.nodeName == "test-node"
      })

    let pods = try KubeDecoder.decode(file: KubeTestData.path("victoriametrics/pod__L28__PodList.json"))
    guard case .pod(let etcd) = pods.first else {
      Issue.record("no Pod")
      return
    }
    #expect(etcd.metadata?.name == "etcd-m01" && etcd.spec?.nodeName == "test-node")
    #expect(etcd.spec?.hostNetwork == true && etcd.ips == ["172.17.0.2"])

    // A kind-less object is decoded only with a hint, and rejected with a clear message without.
    #expect(throws: KubeDecoder.Failure.self) {
      try KubeDecoder.decode(file: KubeTestData.path("victoriametrics/api_watcher__L522__obj.json"))
    }
    let hinted = try KubeDecoder.decode(
      file: KubeTestData.path("victoriametrics/api_watcher__L522__obj.json"), kindHint: "Service")
    #expect(hinted.first?.kind == "Service")
  }

  /// popeye's lists, cross-referenced: Service selectors → Pods, Endpoints → Pod targetRefs.
  @Test func popeyeCrossReferences() throws {
    let services = try KubeDecoder.decode(file: KubeTestData.path("popeye/internal/lint/testdata/core/svc/1.yaml"))
    let types = services.compactMap { object -> String? in
      if case .service(let service) = object { return service.spec?.type } else { return nil }
    }
    #expect(Set(types).isSuperset(of: ["NodePort", "ClusterIP", "ExternalName", "LoadBalancer"]))
    let nodePorts = services.compactMap { object -> Int? in
      if case .service(let service) = object {
        return service.spec?.ports?.compactMap(\.nodePort).first
      } else {
        return nil
      }
    }
    #expect(nodePorts.contains(30400))
    let endpoints = try KubeDecoder.decode(file: KubeTestData.path("popeye/internal/lint/testdata/core/ep/1.yaml"))
    let refs = endpoints.flatMap { object -> [ObjectReference] in
      if case .endpoints(let endpoints) = object {
        return endpoints.subsets?.flatMap { ($0.addresses ?? []).compactMap(\.targetRef) } ?? []
      }
      return []
    }
    #expect(refs.contains { $0.kind == "Pod" })
  }

  @Test func malformedInputIsAClearError() {
    #expect(throws: KubeDecoder.Failure.self) {
      try KubeDecoder.decode("{\"kind\": \"Pod\", \"spec\": {\"containers\": 3}}")
    }
    #expect(throws: KubeDecoder.Failure.self) { try KubeDecoder.decode("{\"kind\": ") }
    #expect(throws: KubeDecoder.Failure.self) { try KubeDecoder.decode("kind: Pod\nmetadata: [1, 2]\n") }
    #expect(throws: KubeDecoder.Failure.self) { try KubeDecoder.decode("- a\n- b\n") }
    // Several YAML documents in one stream.
    let stream = try? KubeDecoder.decode(
      "kind: Namespace\nmetadata: {name: a}\n---\nkind: Namespace\nmetadata: {name: b}\n")
    #expect(stream?.count == 2)
  }
}
