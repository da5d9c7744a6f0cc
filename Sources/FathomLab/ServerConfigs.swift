/// Configuration files of the real servers the lab runs: dnsmasq as cluster DNS and as the
/// external DNS, nginx as ingress controller. Pure text; the reconciler writes and reloads them.
public enum ServerConfigs {
  /// dnsmasq as the cluster DNS pod: answers the records in `hostsFile`, NXDOMAIN for any other
  /// name under the cluster domain, and no recursion (the lab has no upstream).
  public static func clusterDNS(listen ip: String, hostsFile: String, domain: String, log: String) -> String {
    """
    port=53
    listen-address=\(ip)
    bind-interfaces
    no-resolv
    no-hosts
    no-negcache
    addn-hosts=\(hostsFile)
    local=/\(domain)/
    user=root
    log-facility=\(log)

    """
  }

  public static func hosts(_ records: [(name: String, ip: String)]) -> String {
    records.map { "\($0.ip) \($0.name)\n" }.joined()
  }

  /// dnsmasq outside the cluster, answering the ingress hosts with node IPs.
  public static func externalDNS(listen ip: String, records: [(name: String, ip: String)], log: String) -> String {
    var text = """
      port=53
      listen-address=\(ip)
      bind-interfaces
      no-resolv
      no-hosts
      user=root
      log-facility=\(log)

      """
    var domains = Set<String>()
    for record in records {
      text += "host-record=\(record.name),\(record.ip)\n"
      if let dot = record.name.firstIndex(of: ".") {
        domains.insert(String(record.name[record.name.index(after: dot)...]))
      }
    }
    for domain in domains.sorted() { text += "local=/\(domain)/\n" }
    return text
  }

  /// An nginx ingress controller for every Ingress in the topology, as ingress-nginx configures
  /// it: one server per host, one location per path, X-Request-ID passed on or generated, the
  /// Service's ClusterIP as upstream (ingress → Service → pod). A backend Service or port that does
  /// not exist gets `503`, as ingress-nginx answers for a backend without endpoints. Unknown
  /// hosts get the default backend's 404.
  public static func ingressNginx(
    listen: String, ingresses: [Topology.Ingress], view: ClusterView, directory: String
  ) -> String {
    var servers = ""
    var hosts: [String: [(Topology.Ingress, Topology.IngressPath)]] = [:]
    var hostOrder: [String] = []
    for ingress in ingresses {
      for rule in ingress.rules {
        if hosts[rule.host] == nil { hostOrder.append(rule.host) }
        hosts[rule.host, default: []] += rule.paths.map { (ingress, $0) }
      }
    }
    for host in hostOrder {
      servers += "  server {\n    listen \(listen);\n    server_name \(host);\n"
      for (ingress, path) in hosts[host]! {
        let location: String
        switch path.pathType ?? "Prefix" {
        case "Exact": location = "= \(path.path)"
        default: location = path.path
        }
        servers += "    location \(location) {\n"
        servers += "      set $ingress_name \"\(ingress.namespace)/\(ingress.name)\";\n"
        servers += "      set $service_name \"\(ingress.namespace)/\(path.service):\(path.port)\";\n"
        if let service = view.service(ingress.namespace, path.service),
          service.service.ports.contains(where: { $0.port == path.port })
        {
          servers += """
                  proxy_set_header Host $host;
                  proxy_set_header X-Request-ID $fathom_request_id;
                  proxy_set_header X-Real-IP $remote_addr;
                  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                  proxy_set_header X-Forwarded-Host $host;
                  proxy_set_header Connection "";
                  proxy_pass http://\(service.clusterIP):\(path.port);

            """
        } else {
          servers += "      return 503;\n"
        }
        servers += "    }\n"
      }
      servers += "  }\n"
    }
    return """
      user root;
      worker_processes 1;
      pid \(directory)/nginx.pid;
      error_log \(directory)/error.log;
      events { worker_connections 1024; }
      http {
        client_body_temp_path \(directory)/tmp;
        proxy_temp_path \(directory)/tmp;
        fastcgi_temp_path \(directory)/tmp;
        uwsgi_temp_path \(directory)/tmp;
        scgi_temp_path \(directory)/tmp;
        map $http_x_request_id $fathom_request_id {
          default $http_x_request_id;
          "" $request_id;
        }
        log_format upstreaminfo '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
                                '$request_time $fathom_request_id $ingress_name $service_name '
                                '$upstream_addr $upstream_status $upstream_response_time';
        access_log \(directory)/access.log upstreaminfo;
        proxy_http_version 1.1;
        proxy_connect_timeout 5s;
        proxy_read_timeout 10s;
        proxy_send_timeout 10s;
        keepalive_timeout 30s;
        server {
          listen \(listen) default_server;
          set $ingress_name "-";
          set $service_name "-";
          location / { return 404; }
        }
      \(servers)}

      """
  }
}
