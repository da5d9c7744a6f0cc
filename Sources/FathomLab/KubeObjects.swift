import Foundation

/// The lab's Kubernetes objects in their real JSON shape (core/v1, apps/v1, discovery.k8s.io/v1,
/// networking.k8s.io/v1), rendered from the lab's state; and the watch-style event log that lets
/// `lab objects --at TIME` replay the state at any instant.
public enum KubeObjects {
  public typealias Object = [String: Any]

  /// Every object, keyed `Kind/namespace/name` (namespace empty for cluster-scoped kinds).
  public static func render(_ state: LabState) -> [(key: String, object: Object)] {
    let view = ClusterView(state: state)
    let plan = view.plan
    let created = rfc3339(state.startedAt)
    var objects: [(String, Object)] = []
    func metadata(_ name: String, _ namespace: String?, uid: String, labels: [String: String] = [:]) -> Object {
      var meta: Object = ["name": name, "uid": uid, "creationTimestamp": created]
      if let namespace { meta["namespace"] = namespace }
      if !labels.isEmpty { meta["labels"] = labels }
      return meta
    }

    for namespace in state.topology.namespaces {
      objects.append(
        (
          "Namespace//\(namespace)",
          [
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": metadata(
              namespace, nil, uid: Names.uid("namespace/\(namespace)"),
              labels: ["kubernetes.io/metadata.name": namespace]),
            "status": ["phase": "Active"],
          ]
        ))
    }

    for node in plan.nodes {
      let runtime = state.nodes[node.name]
      let ready = runtime?.ready ?? true
      objects.append(
        (
          "Node//\(node.name)",
          [
            "apiVersion": "v1", "kind": "Node",
            "metadata": metadata(
              node.name, nil, uid: Names.uid("node/\(node.name)"),
              labels: ["kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"]),
            "spec": ["podCIDR": node.podCIDR, "podCIDRs": [node.podCIDR]],
            "status": [
              "addresses": [["type": "InternalIP", "address": node.ip], ["type": "Hostname", "address": node.name]],
              "conditions": [
                [
                  "type": "Ready", "status": ready ? "True" : "Unknown",
                  "reason": ready ? "KubeletReady" : "NodeStatusUnknown",
                  "message": ready ? "kubelet is posting ready status" : "Kubelet stopped posting node status.",
                ]
              ],
              "capacity": ["cpu": String(ProcessInfo.processInfo.activeProcessorCount), "pods": "110"],
            ],
          ]
        ))
    }

    for deployment in state.topology.deployments {
      let key = "\(deployment.namespace)/\(deployment.name)"
      let hash = Names.templateHash(key)
      let pods = plan.pods.filter { $0.deployment.name == deployment.name && $0.namespace == deployment.namespace }
      let readyCount = pods.filter { state.pods[$0.key]?.ready == true }.count
      let selector: Object = ["matchLabels": ["app": deployment.name]]
      var container: Object = [
        "name": deployment.name, "image": image(deployment.program),
        "resources": ["limits": limits(deployment, cpuOverride: nil)],
      ]
      if let port = deployment.port {
        container["ports"] = [["containerPort": port, "protocol": deployment.program == .dns ? "UDP" : "TCP"]]
      }
      var env: [Object] = []
      if let calls = deployment.calls { env.append(["name": "CALLS", "value": calls.joined(separator: ",")]) }
      if let redis = deployment.redis { env.append(["name": "REDIS", "value": redis]) }
      if !env.isEmpty { container["env"] = env }
      var podSpec: Object = ["containers": [container]]
      if deployment.hostNetwork == true {
        podSpec["hostNetwork"] = true
        podSpec["dnsPolicy"] = "ClusterFirstWithHostNet"
      }
      let template: Object = ["metadata": ["labels": ["app": deployment.name]], "spec": podSpec]
      objects.append(
        (
          "Deployment/\(deployment.namespace)/\(deployment.name)",
          [
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": metadata(
              deployment.name, deployment.namespace, uid: Names.uid("deployment/\(key)"),
              labels: ["app": deployment.name]),
            "spec": ["replicas": deployment.replicas, "selector": selector, "template": template],
            "status": [
              "replicas": deployment.replicas, "readyReplicas": readyCount, "availableReplicas": readyCount,
              "updatedReplicas": deployment.replicas,
            ],
          ]
        ))
      var replicaSetMeta = metadata(
        "\(deployment.name)-\(hash)", deployment.namespace, uid: Names.uid("replicaset/\(key)"),
        labels: ["app": deployment.name, "pod-template-hash": hash])
      replicaSetMeta["ownerReferences"] = [
        [
          "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment.name, "uid": Names.uid("deployment/\(key)"),
          "controller": true, "blockOwnerDeletion": true,
        ]
      ]
      objects.append(
        (
          "ReplicaSet/\(deployment.namespace)/\(deployment.name)-\(hash)",
          [
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": replicaSetMeta,
            "spec": [
              "replicas": deployment.replicas,
              "selector": ["matchLabels": ["app": deployment.name, "pod-template-hash": hash]], "template": template,
            ],
            "status": ["replicas": deployment.replicas, "readyReplicas": readyCount, "availableReplicas": readyCount],
          ]
        ))
    }

    for pod in plan.pods {
      let runtime = state.pods[pod.key] ?? LabState.PodRuntime()
      let node = plan.node(named: pod.node)!
      var meta = metadata(pod.name, pod.namespace, uid: pod.uid, labels: pod.labels)
      meta["ownerReferences"] = [
        [
          "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "\(pod.deployment.name)-\(pod.podTemplateHash)",
          "uid": Names.uid("replicaset/\(pod.namespace)/\(pod.deployment.name)"), "controller": true,
          "blockOwnerDeletion": true,
        ]
      ]
      var container: Object = [
        "name": pod.deployment.name, "image": image(pod.deployment.program),
        "resources": ["limits": limits(pod.deployment, cpuOverride: runtime.cpuOverride)],
      ]
      if let port = pod.deployment.port {
        container["ports"] = [["containerPort": port, "protocol": pod.deployment.program == .dns ? "UDP" : "TCP"]]
      }
      var spec: Object = ["nodeName": pod.node, "containers": [container]]
      if pod.hostNetwork {
        spec["hostNetwork"] = true
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
      }
      let running = runtime.pid != nil
      var containerStatus: Object = [
        "name": pod.deployment.name, "ready": runtime.ready, "restartCount": runtime.restarts,
        "image": image(pod.deployment.program), "started": running,
      ]
      if running, let started = runtime.startedAt {
        containerStatus["state"] = ["running": ["startedAt": rfc3339(started)]]
      } else {
        containerStatus["state"] = [
          "waiting": ["reason": runtime.restarts > 0 ? "CrashLoopBackOff" : "ContainerCreating"]
        ]
      }
      if let code = runtime.lastExitCode {
        containerStatus["lastState"] = [
          "terminated": ["exitCode": Int(code), "reason": runtime.lastTerminationReason ?? "Error"]
        ]
      }
      let readyText = runtime.ready ? "True" : "False"
      objects.append(
        (
          "Pod/\(pod.namespace)/\(pod.name)",
          [
            "apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": [
              "phase": "Running", "podIP": pod.ip, "podIPs": [["ip": pod.ip]], "hostIP": node.ip,
              "hostIPs": [["ip": node.ip]],
              "conditions": [
                ["type": "Ready", "status": readyText], ["type": "ContainersReady", "status": readyText],
                ["type": "PodScheduled", "status": "True"],
              ],
              "containerStatuses": [containerStatus],
            ],
          ]
        ))
    }

    for view in view.services {
      let service = view.service
      let key = view.key
      let type = service.type ?? "ClusterIP"
      let ports: [Object] = service.ports.map { port in
        var entry: Object = [
          "port": port.port, "targetPort": port.targetPort ?? port.port,
          "protocol": (port.protocol ?? "TCP").uppercased(),
        ]
        if let name = port.name { entry["name"] = name }
        if type != "ClusterIP", let nodePort = port.nodePort { entry["nodePort"] = nodePort }
        return entry
      }
      objects.append(
        (
          "Service/\(service.namespace)/\(service.name)",
          [
            "apiVersion": "v1", "kind": "Service",
            "metadata": metadata(service.name, service.namespace, uid: plan.services[key]!.uid),
            "spec": [
              "type": type, "clusterIP": view.clusterIP, "clusterIPs": [view.clusterIP], "selector": service.selector,
              "ports": ports,
            ],
          ]
        ))
      func address(_ pod: LabPlan.PodPlan) -> Object {
        [
          "ip": pod.ip, "nodeName": pod.node,
          "targetRef": ["kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid],
        ]
      }
      var subset: Object = [
        "ports": service.ports.map { port -> Object in
          var entry: Object = ["port": port.targetPort ?? port.port, "protocol": (port.protocol ?? "TCP").uppercased()]
          if let name = port.name { entry["name"] = name }
          return entry
        }
      ]
      if !view.ready.isEmpty { subset["addresses"] = view.ready.map(address) }
      if !view.notReady.isEmpty { subset["notReadyAddresses"] = view.notReady.map(address) }
      let hasAddresses = !view.ready.isEmpty || !view.notReady.isEmpty
      objects.append(
        (
          "Endpoints/\(service.namespace)/\(service.name)",
          [
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": metadata(service.name, service.namespace, uid: Names.uid("endpoints/\(key)")),
            "subsets": hasAddresses ? [subset] : [],
          ]
        ))
      let sliceName = "\(service.name)-\(Names.encode(Names.fnv("slice/\(key)"), length: 5))"
      let sliceEndpoints: [Object] = (view.ready.map { ($0, true) } + view.notReady.map { ($0, false) }).map {
        pod, ready in
        [
          "addresses": [pod.ip], "conditions": ["ready": ready, "serving": ready, "terminating": false],
          "nodeName": pod.node,
          "targetRef": ["kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid],
        ]
      }
      var sliceMeta = metadata(
        sliceName, service.namespace, uid: Names.uid("endpointslice/\(key)"),
        labels: [
          "kubernetes.io/service-name": service.name,
          "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        ])
      sliceMeta["ownerReferences"] = [
        [
          "apiVersion": "v1", "kind": "Service", "name": service.name, "uid": plan.services[key]!.uid,
          "controller": true,
        ]
      ]
      objects.append(
        (
          "EndpointSlice/\(service.namespace)/\(sliceName)",
          [
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": sliceMeta, "addressType": "IPv4",
            "endpoints": sliceEndpoints,
            "ports": service.ports.map { port -> Object in
              var entry: Object = [
                "port": port.targetPort ?? port.port, "protocol": (port.protocol ?? "TCP").uppercased(),
              ]
              if let name = port.name { entry["name"] = name }
              return entry
            },
          ]
        ))
    }

    for ingress in state.topology.ingresses {
      let rules: [Object] = ingress.rules.map { rule in
        [
          "host": rule.host,
          "http": [
            "paths": rule.paths.map { path -> Object in
              [
                "path": path.path, "pathType": path.pathType ?? "Prefix",
                "backend": ["service": ["name": path.service, "port": ["number": path.port]]],
              ]
            }
          ],
        ]
      }
      let ingressIPs = plan.topology.externalDNS.compactMap { plan.node(named: $0.node)?.ip }
      objects.append(
        (
          "Ingress/\(ingress.namespace)/\(ingress.name)",
          [
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": metadata(
              ingress.name, ingress.namespace, uid: Names.uid("ingress/\(ingress.namespace)/\(ingress.name)")),
            "spec": ["ingressClassName": "nginx", "rules": rules],
            "status": ["loadBalancer": ["ingress": Array(Set(ingressIPs)).sorted().map { ["ip": $0] }]],
          ]
        ))
    }
    return objects
  }

  static func image(_ program: Topology.Program) -> String {
    switch program {
    case .web: "fathom/lab-web:1"
    case .redis: "redis:7"
    case .dns: "dnsmasq:2"
    case .ingress: "nginx-ingress:1"
    case .client: "fathom/lab-client:1"
    }
  }

  static func limits(_ deployment: Topology.Deployment, cpuOverride: String?) -> [String: String] {
    var limits: [String: String] = [:]
    if let cpu = cpuOverride ?? deployment.cpu { limits["cpu"] = cpu }
    if let memory = deployment.memory { limits["memory"] = memory }
    return limits
  }

  /// Canonical JSON (sorted keys) of an object.
  public static func json(_ object: Any) -> String {
    guard
      let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    else { return "{}" }
    return String(decoding: data, as: UTF8.self)
  }

  /// Appends an event for every object that appeared, changed or disappeared since `last`
  /// (canonical JSON per key), numbering resourceVersions from the state. Returns the new `last`.
  public static func recordChanges(
    _ state: inout LabState, last: [String: String], eventsPath: String
  ) -> [String: String] {
    var current: [String: String] = [:]
    let time = now()
    for (key, object) in render(state) {
      let canonical = json(object)
      current[key] = canonical
      guard last[key] != canonical else { continue }
      state.resourceVersion += 1
      var stamped = object
      var meta = stamped["metadata"] as? Object ?? [:]
      meta["resourceVersion"] = String(state.resourceVersion)
      stamped["metadata"] = meta
      let type = last[key] == nil ? "ADDED" : "MODIFIED"
      Files.append(json(["time": rfc3339(time, fraction: true), "type": type, "object": stamped]), to: eventsPath)
    }
    for (key, canonical) in last where current[key] == nil {
      state.resourceVersion += 1
      if var object = (try? JSONSerialization.jsonObject(with: Data(canonical.utf8))) as? Object {
        var meta = object["metadata"] as? Object ?? [:]
        meta["resourceVersion"] = String(state.resourceVersion)
        object["metadata"] = meta
        Files.append(
          json(["time": rfc3339(time, fraction: true), "type": "DELETED", "object": object]), to: eventsPath)
      }
    }
    return current
  }

  /// The objects as they were at `time` (nil: the latest), replayed from the event log, as a
  /// kubectl-style `List`.
  public static func list(eventsPath: String, at time: Double?) throws -> Object {
    guard let text = Files.read(eventsPath) else { throw LabError.state("no event log at \(eventsPath)") }
    var objects: [String: Object] = [:]
    var order: [String] = []
    for line in text.split(separator: "\n") {
      guard let event = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? Object,
        let object = event["object"] as? Object, let type = event["type"] as? String,
        let stamp = (event["time"] as? String).flatMap(parseTime)
      else { continue }
      if let time, stamp > time { break }
      let meta = object["metadata"] as? Object ?? [:]
      let key = "\(object["kind"] ?? "")/\(meta["namespace"] ?? "")/\(meta["name"] ?? "")"
      if type == "DELETED" {
        objects[key] = nil
      } else {
        if objects[key] == nil && !order.contains(key) { order.append(key) }
        objects[key] = object
      }
    }
    return [
      "apiVersion": "v1", "kind": "List", "metadata": ["resourceVersion": ""],
      "items": order.compactMap { objects[$0] },
    ]
  }
}
