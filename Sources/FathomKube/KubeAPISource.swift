import Foundation
import Yams

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// Where and how to reach a Kubernetes API server.
public struct KubeAPIConfig: Sendable {
  public var server: String
  public var token: String?
  /// Skip TLS verification (kubeconfig `insecure-skip-tls-verify`).
  public var insecure = false

  public init(server: String, token: String? = nil) {
    self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
    self.token = token
  }

  /// The current context of a kubeconfig file: its cluster's server, and its user's bearer token
  /// (`token` or `tokenFile`). Client certificates and custom CAs are not supported yet.
  public static func kubeconfig(_ path: String) throws -> KubeAPIConfig {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
      let root = try Yams.load(yaml: text) as? [String: Any]
    else { throw KubeDecoder.Failure(message: "cannot read kubeconfig \(path)") }
    func named(_ key: String, _ name: String?) -> [String: Any]? {
      (root[key] as? [[String: Any]])?.first { $0["name"] as? String == name }
    }
    let contextName = root["current-context"] as? String
    let context = named("contexts", contextName)?["context"] as? [String: Any]
    guard
      let cluster = named("clusters", context?["cluster"] as? String)?["cluster"] as? [String: Any]
        ?? (root["clusters"] as? [[String: Any]])?.first?["cluster"] as? [String: Any],
      let server = cluster["server"] as? String
    else {
      throw KubeDecoder.Failure(message: "kubeconfig \(path): no cluster server for context \(contextName ?? "-")")
    }
    var config = KubeAPIConfig(server: server)
    config.insecure = cluster["insecure-skip-tls-verify"] as? Bool ?? false
    if let user = named("users", context?["user"] as? String)?["user"] as? [String: Any] {
      if let token = user["token"] as? String {
        config.token = token
      } else if let file = user["tokenFile"] as? String {
        config.token = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(
          in: .whitespacesAndNewlines)
      }
    }
    return config
  }

  /// A pod's own service account (KUBERNETES_SERVICE_HOST/PORT and the mounted token).
  public static func inCluster() throws -> KubeAPIConfig {
    let environment = ProcessInfo.processInfo.environment
    guard let host = environment["KUBERNETES_SERVICE_HOST"], let port = environment["KUBERNETES_SERVICE_PORT"] else {
      throw KubeDecoder.Failure(message: "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    }
    let token = try? String(contentsOfFile: "/var/run/secrets/kubernetes.io/serviceaccount/token", encoding: .utf8)
    let bracketed = host.contains(":") ? "[\(host)]" : host
    return KubeAPIConfig(
      server: "https://\(bracketed):\(port)", token: token?.trimmingCharacters(in: .whitespacesAndNewlines))
  }
}

/// The live API as a source of watch events: per resource, list (paged) then watch from the
/// list's resourceVersion with bookmarks; a `410 Gone` (the version expired) re-lists; a broken
/// connection reconnects with exponential back-off (0.5 s doubling to 30 s). Every object is
/// reported as a watch-style event (`ADDED`/`MODIFIED`/`DELETED`), the lab's event-log format.
public final class KubeAPISource: @unchecked Sendable {
  public struct Resource: Sendable {
    public var path: String
    public var kind: String
    public static let tagging: [Resource] = [
      .init(path: "/api/v1/namespaces", kind: "Namespace"), .init(path: "/api/v1/nodes", kind: "Node"),
      .init(path: "/api/v1/pods", kind: "Pod"), .init(path: "/api/v1/services", kind: "Service"),
      .init(path: "/api/v1/endpoints", kind: "Endpoints"),
      .init(path: "/apis/discovery.k8s.io/v1/endpointslices", kind: "EndpointSlice"),
      .init(path: "/apis/networking.k8s.io/v1/ingresses", kind: "Ingress"),
      .init(path: "/apis/apps/v1/deployments", kind: "Deployment"),
      .init(path: "/apis/apps/v1/replicasets", kind: "ReplicaSet"),
      .init(path: "/apis/apps/v1/daemonsets", kind: "DaemonSet"),
      .init(path: "/apis/apps/v1/statefulsets", kind: "StatefulSet"),
    ]
  }

  public struct Counters: Sendable {
    public var lists = 0
    public var relistsAfterGone = 0
    public var watches = 0
    public var reconnects = 0
    public var events = 0
    public var bookmarks = 0
  }

  let config: KubeAPIConfig
  let session: URLSession
  let lock = NSLock()
  var stopping = false
  public private(set) var counters = Counters()
  /// Called for every event, from the watching threads (one per resource).
  let emit: @Sendable (_ type: String, _ object: [String: Any]) -> Void

  public init(config: KubeAPIConfig, emit: @escaping @Sendable (_ type: String, _ object: [String: Any]) -> Void) {
    self.config = config
    self.emit = emit
    let configuration = URLSessionConfiguration.ephemeral
    configuration.timeoutIntervalForRequest = 330
    session = URLSession(configuration: configuration)
  }

  public func stop() { lock.withLock { stopping = true } }
  var isStopping: Bool { lock.withLock { stopping } }

  func count(_ update: (inout Counters) -> Void) { lock.withLock { update(&counters) } }

  /// Runs list+watch for every resource until `stop()`, each on its own thread; returns when all
  /// have stopped.
  public func run(resources: [Resource] = Resource.tagging, watchTimeoutSeconds: Int = 300) {
    let group = DispatchGroup()
    for resource in resources {
      group.enter()
      Thread.detachNewThread { [self] in
        follow(resource, watchTimeoutSeconds: watchTimeoutSeconds)
        group.leave()
      }
    }
    group.wait()
  }

  func follow(_ resource: Resource, watchTimeoutSeconds: Int) {
    var backoff = 0.5
    var version: String?
    var known: [String: [String: Any]] = [:]
    while !isStopping {
      do {
        if version == nil {
          let (objects, listVersion) = try list(resource)
          count { $0.lists += 1 }
          // After a re-list, report what changed against what was known.
          var current: [String: [String: Any]] = [:]
          for object in objects {
            let key = Self.key(object)
            current[key] = object
            emit(known[key] == nil ? "ADDED" : "MODIFIED", object)
          }
          for (key, object) in known where current[key] == nil { emit("DELETED", object) }
          known = current
          version = listVersion
        }
        let outcome = try watch(resource, from: version!, timeout: watchTimeoutSeconds) { type, object in
          let key = Self.key(object)
          if type == "DELETED" { known[key] = nil } else { known[key] = object }
        }
        count { $0.watches += 1 }
        switch outcome {
        case .gone:
          count { $0.relistsAfterGone += 1 }
          version = nil
        case .ended(let latest):
          version = latest
        }
        backoff = 0.5
      } catch {
        if isStopping { break }
        count { $0.reconnects += 1 }
        Thread.sleep(forTimeInterval: backoff)
        backoff = min(30, backoff * 2)
      }
    }
  }

  static func key(_ object: [String: Any]) -> String {
    let meta = object["metadata"] as? [String: Any] ?? [:]
    return "\(meta["namespace"] as? String ?? "")/\(meta["name"] as? String ?? "")"
  }

  func request(_ path: String) -> URLRequest {
    var request = URLRequest(url: URL(string: config.server + path)!)
    if let token = config.token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
    request.setValue("application/json", forHTTPHeaderField: "Accept")
    return request
  }

  /// All objects of a resource (following `continue`) and the list's resourceVersion.
  func list(_ resource: Resource) throws -> ([[String: Any]], String) {
    var objects: [[String: Any]] = []
    var next: String?
    repeat {
      var path = "\(resource.path)?limit=500"
      if let next { path += "&continue=\(next.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? next)" }
      let (data, status) = try fetch(request(path))
      guard status == 200, let list = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
        throw KubeDecoder.Failure(message: "list \(resource.path): HTTP \(status)")
      }
      for var item in list["items"] as? [[String: Any]] ?? [] {
        item["kind"] = item["kind"] ?? resource.kind
        objects.append(item)
      }
      let meta = list["metadata"] as? [String: Any]
      next = (meta?["continue"] as? String).flatMap { $0.isEmpty ? nil : $0 }
      if next == nil { return (objects, meta?["resourceVersion"] as? String ?? "0") }
    } while true
  }

  func fetch(_ request: URLRequest) throws -> (Data, Int) {
    let (data, response, error) = BlockingHTTP.send(request, session: session)
    if let error { throw error }
    return (data ?? Data(), (response as? HTTPURLResponse)?.statusCode ?? 0)
  }

  enum WatchOutcome {
    case ended(String)
    case gone
  }

  /// One watch request, streamed line by line; returns the last resourceVersion seen.
  func watch(
    _ resource: Resource, from version: String, timeout: Int, update: (String, [String: Any]) -> Void
  ) throws -> WatchOutcome {
    let path = "\(resource.path)?watch=1&allowWatchBookmarks=true&resourceVersion=\(version)&timeoutSeconds=\(timeout)"
    let stream = LineStream()
    let delegateSession = URLSession(configuration: session.configuration, delegate: stream, delegateQueue: nil)
    defer { delegateSession.finishTasksAndInvalidate() }
    delegateSession.dataTask(with: request(path)).resume()
    var latest = version
    while let line = stream.nextLine() {
      if isStopping { break }
      guard let event = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any],
        let type = event["type"] as? String, var object = event["object"] as? [String: Any]
      else { continue }
      let objectVersion = (object["metadata"] as? [String: Any])?["resourceVersion"] as? String
      switch type {
      case "BOOKMARK":
        count { $0.bookmarks += 1 }
        if let objectVersion { latest = objectVersion }
      case "ERROR":
        // A Status object; 410 Gone means the version is too old: re-list.
        if object["code"] as? Int == 410 { return .gone }
        throw KubeDecoder.Failure(message: "watch \(resource.path): \(object["message"] as? String ?? "error")")
      default:
        object["kind"] = object["kind"] ?? resource.kind
        if let objectVersion { latest = objectVersion }
        update(type, object)
        count { $0.events += 1 }
        emit(type, object)
      }
    }
    if let status = stream.status, status == 410 { return .gone }
    if let status = stream.status, status != 200 {
      throw KubeDecoder.Failure(message: "watch \(resource.path): HTTP \(status)")
    }
    if let error = stream.error { throw error }
    return .ended(latest)
  }
}

/// One URLSession request, waited for: the API source and the ClickHouse store are synchronous.
public enum BlockingHTTP {
  public static func send(_ request: URLRequest, session: URLSession) -> (Data?, URLResponse?, Error?) {
    final class Box: @unchecked Sendable {
      var result: (Data?, URLResponse?, Error?) = (nil, nil, nil)
    }
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    session.dataTask(with: request) { data, response, error in
      box.result = (data, response, error)
      done.signal()
    }.resume()
    done.wait()
    return box.result
  }
}

/// Splits a streamed response body into lines as it arrives.
final class LineStream: NSObject, URLSessionDataDelegate, @unchecked Sendable {
  private let condition = NSCondition()
  private var buffer = Data()
  private var finished = false
  private(set) var status: Int?
  private(set) var error: Error?

  func urlSession(
    _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
  ) {
    condition.withLock { status = (response as? HTTPURLResponse)?.statusCode }
    completionHandler(.allow)
  }

  func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
    condition.withLock {
      buffer.append(data)
      condition.broadcast()
    }
  }

  func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
    condition.withLock {
      self.error = error
      finished = true
      condition.broadcast()
    }
  }

  /// The next complete line, or nil at the end of the stream.
  func nextLine() -> Data? {
    condition.lock()
    defer { condition.unlock() }
    while true {
      if let newline = buffer.firstIndex(of: 10) {
        let line = buffer[buffer.startIndex..<newline]
        buffer.removeSubrange(buffer.startIndex...newline)
        if line.isEmpty { continue }
        return Data(line)
      }
      if finished {
        guard !buffer.isEmpty else { return nil }
        let rest = buffer
        buffer.removeAll()
        return rest
      }
      condition.wait()
    }
  }
}
