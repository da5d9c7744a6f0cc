extension Topology {
  /// The lab `fathom lab up` builds without `--topology`: two nodes; `shop` with frontend (2) →
  /// checkout (2) → payment (1) and checkout → redis; cluster DNS and two ingress controllers (one
  /// per deployment mode) in `kube-system`; an external client. `fathom lab topology` prints it.
  public static let defaultYAML = """
    cluster:
      domain: cluster.local
      podNetwork: 10.244
      serviceNetwork: 10.96
      dnsServiceIP: 10.96.0.10
      nodeNetwork: 172.30.0
      nodeMonitorGracePeriod: 10
    nodes:
      - name: node-1
      - name: node-2
    namespaces: [kube-system, shop]
    deployments:
      - {name: coredns, namespace: kube-system, program: dns, replicas: 1, port: 53, cpu: 200m, memory: 64Mi}
      # Ingress controller, mode `pod`: a pod behind the NodePort Service ingress-nginx-controller.
      - {name: ingress-nginx-controller, namespace: kube-system, program: ingress, replicas: 1, port: 80,
         cpu: 500m, memory: 128Mi}
      # Ingress controller, mode `hostNetwork`: nginx in node-2's network namespace on port 80.
      - {name: ingress-edge, namespace: kube-system, program: ingress, replicas: 1, port: 80, node: node-2,
         hostNetwork: true}
      - {name: frontend, namespace: shop, program: web, replicas: 2, port: 8080, cpu: 500m, memory: 128Mi,
         calls: ["http://checkout:8080/checkout"]}
      # `payment.shop` has fewer than 5 dots: the resolver tries the search path first
      # (payment.shop.shop.svc.cluster.local → NXDOMAIN), as real pods do.
      - {name: checkout, namespace: shop, program: web, replicas: 2, port: 8080, cpu: 500m, memory: 128Mi,
         calls: ["http://payment.shop:8080/pay"], redis: "redis:6379"}
      - {name: payment, namespace: shop, program: web, replicas: 1, port: 8080, cpu: 500m, memory: 128Mi}
      - {name: redis, namespace: shop, program: redis, replicas: 1, port: 6379, cpu: 500m, memory: 256Mi}
      - {name: loadgen, namespace: shop, program: client, replicas: 2}
    services:
      - name: kube-dns
        namespace: kube-system
        clusterIP: 10.96.0.10
        selector: {app: coredns}
        ports:
          - {name: dns, port: 53, protocol: UDP}
          - {name: dns-tcp, port: 53, protocol: TCP}
      - name: ingress-nginx-controller
        namespace: kube-system
        type: NodePort
        selector: {app: ingress-nginx-controller}
        ports: [{name: http, port: 80, targetPort: 80, nodePort: 30080}]
      - name: frontend
        namespace: shop
        type: NodePort
        selector: {app: frontend}
        ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081}]
      - {name: checkout, namespace: shop, selector: {app: checkout}, ports: [{name: http, port: 8080}]}
      - {name: payment, namespace: shop, selector: {app: payment}, ports: [{name: http, port: 8080}]}
      - {name: redis, namespace: shop, selector: {app: redis}, ports: [{name: redis, port: 6379}]}
    ingresses:
      - name: web
        namespace: shop
        rules:
          - host: shop.example.com
            paths: [{path: /, pathType: Prefix, service: frontend, port: 80}]
          - host: shop-edge.example.com
            paths: [{path: /, pathType: Prefix, service: frontend, port: 80}]
    externalDNS:
      - {name: shop.example.com, node: node-1}
      - {name: shop-edge.example.com, node: node-2}
    load:
      clientDeployment: loadgen
      clientNamespace: shop
      rate: 5
      inCluster:
        - {path: service-short-name, url: "http://frontend/"}
        - {path: service-fqdn, url: "http://frontend.shop.svc.cluster.local/"}
      external:
        - {path: nodeport, url: "http://node-2:30081/"}
        - {path: ingress-pod, url: "http://shop.example.com:30080/"}
        - {path: ingress-hostnetwork, url: "http://shop-edge.example.com/"}
    """
}
