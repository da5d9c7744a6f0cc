import FathomHTTP
import Foundation
import Yams

/// Where and how to reach a Kubernetes API server.
public struct KubeAPIConfig: Sendable {
  public var server: String
  public var token: String?
  /// A file holding the bearer token, read again for every request: service-account tokens are
  /// rotated by the kubelet while Fathom runs.
  public var tokenFile: String?
  public var tls = TLSSettings()
  /// kubeconfig `proxy-url`: an HTTP(S) or SOCKS proxy in front of the API server.
  public var proxyURL: String?

  public init(server: String, token: String? = nil) {
    self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
    self.token = token
  }

  /// The user's `exec` credential plugin, run for a token or a client certificate.
  public var execPlugin: ExecCredentialPlugin?

  /// The token to send now: `token`, else the current contents of `tokenFile`, else the exec
  /// plugin's token.
  func currentToken() throws -> String? {
    if let token { return token }
    if let tokenFile {
      guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
        throw KubeDecoder.Failure(message: "cannot read the token file \(tokenFile)")
      }
      return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    return try execPlugin?.credential().token
  }

  /// The client certificate and key to present now: the configured ones, else the exec plugin's.
  func currentClientCertificate() throws -> (certificate: [UInt8], key: [UInt8])? {
    if let certificate = tls.clientCertificatePEM, let key = tls.clientKeyPEM { return (certificate, key) }
    guard let credential = try execPlugin?.credential(), let certificate = credential.clientCertificatePEM,
      let key = credential.clientKeyPEM
    else { return nil }
    return (certificate, key)
  }

  /// The current context of a kubeconfig file: its cluster's server and TLS settings
  /// (`certificate-authority(-data)`, `insecure-skip-tls-verify`, `proxy-url`) and its user's
  /// credentials (`token`, `tokenFile`, `client-certificate(-data)` with `client-key(-data)`).
  /// Relative file paths are relative to the kubeconfig's folder, as kubectl reads them.
  /// An `exec` plugin is run for credentials when they are first needed (ExecCredentialPlugin).
  /// Credentials Fathom cannot use (auth providers, basic auth) are a clear error
  /// rather than an anonymous request the server would refuse with a bare 401.
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
    let folder = (path as NSString).deletingLastPathComponent
    func material(_ fileKey: String, _ dataKey: String, in section: [String: Any]) throws -> [UInt8]? {
      if let encoded = section[dataKey] as? String {
        guard let data = Data(base64Encoded: encoded, options: .ignoreUnknownCharacters) else {
          throw KubeDecoder.Failure(message: "kubeconfig \(path): \(dataKey) is not base64")
        }
        return try pem([UInt8](data), named: dataKey, in: path)
      }
      guard let file = section[fileKey] as? String else { return nil }
      let resolved = file.hasPrefix("/") ? file : (folder as NSString).appendingPathComponent(file)
      guard let data = FileManager.default.contents(atPath: resolved) else {
        throw KubeDecoder.Failure(message: "kubeconfig \(path): cannot read \(fileKey) \(resolved)")
      }
      return try pem([UInt8](data), named: fileKey, in: path)
    }

    var config = KubeAPIConfig(server: server)
    config.tls.insecureSkipVerify = cluster["insecure-skip-tls-verify"] as? Bool ?? false
    config.tls.certificateAuthorityPEM = try material(
      "certificate-authority", "certificate-authority-data", in: cluster)
    config.proxyURL = cluster["proxy-url"] as? String
    if let serverName = cluster["tls-server-name"] as? String {
      throw KubeDecoder.Failure(
        message:
          "kubeconfig \(path): tls-server-name (\(serverName)) is not supported; use a server URL whose host the certificate names"
      )
    }
    if let user = named("users", context?["user"] as? String)?["user"] as? [String: Any] {
      if let exec = user["exec"] as? [String: Any] {
        config.execPlugin = try ExecCredentialPlugin(exec: exec, kubeconfigFolder: folder)
      }
      if user["auth-provider"] != nil || user["username"] != nil {
        throw KubeDecoder.Failure(
          message:
            "kubeconfig \(path): auth-provider and basic-auth users are not supported; use a token or a client certificate"
        )
      }
      config.token = user["token"] as? String
      if let file = user["tokenFile"] as? String {
        config.tokenFile = file.hasPrefix("/") ? file : (folder as NSString).appendingPathComponent(file)
      }
      config.tls.clientCertificatePEM = try material("client-certificate", "client-certificate-data", in: user)
      config.tls.clientKeyPEM = try material("client-key", "client-key-data", in: user)
      if (config.tls.clientCertificatePEM == nil) != (config.tls.clientKeyPEM == nil) {
        throw KubeDecoder.Failure(
          message: "kubeconfig \(path): a client certificate needs its key, and a key its certificate")
      }
    }
    return config
  }

  /// Checks that credential material is PEM text, so a wrong file is named here rather than as an
  /// opaque TLS failure later.
  static func pem(_ bytes: [UInt8], named key: String, in path: String) throws -> [UInt8] {
    guard String(decoding: bytes.prefix(64 * 1024), as: UTF8.self).contains("-----BEGIN ") else {
      throw KubeDecoder.Failure(message: "kubeconfig \(path): \(key) is not PEM")
    }
    return bytes
  }

  /// A pod's own service account: KUBERNETES_SERVICE_HOST/PORT, the mounted token (read again for
  /// every request) and the cluster's CA beside it.
  public static func inCluster(
    serviceAccount: String = "/var/run/secrets/kubernetes.io/serviceaccount",
    environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws -> KubeAPIConfig {
    guard let host = environment["KUBERNETES_SERVICE_HOST"], let port = environment["KUBERNETES_SERVICE_PORT"] else {
      throw KubeDecoder.Failure(message: "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    }
    let bracketed = host.contains(":") ? "[\(host)]" : host
    var config = KubeAPIConfig(server: "https://\(bracketed):\(port)")
    config.tokenFile = serviceAccount + "/token"
    guard let authority = FileManager.default.contents(atPath: serviceAccount + "/ca.crt") else {
      throw KubeDecoder.Failure(message: "in-cluster: cannot read \(serviceAccount)/ca.crt")
    }
    config.tls.certificateAuthorityPEM = [UInt8](authority)
    return config
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
    /// "v1" for /api/v1/..., "apps/v1" for /apis/apps/v1/...
    public var apiVersion: String {
      let parts = path.split(separator: "/")
      if parts.first == "api", parts.count > 1 { return String(parts[1]) }
      if parts.first == "apis", parts.count > 2 { return "\(parts[1])/\(parts[2])" }
      return "v1"
    }
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
  let client: APIServerClient
  let lock = NSLock()
  var stopping = false
  public private(set) var counters = Counters()
  /// Called for every event, from the watching threads (one per resource).
  let emit: @Sendable (_ type: String, _ object: [String: Any]) -> Void
  /// Called with each failure before the retry (TLS, HTTP 401/403, a broken stream, ...): the
  /// source keeps retrying, as Kubernetes' own clients do, but the user must see why.
  let warn: @Sendable (_ message: String) -> Void

  public init(
    config: KubeAPIConfig, warn: @escaping @Sendable (_ message: String) -> Void = { _ in },
    emit: @escaping @Sendable (_ type: String, _ object: [String: Any]) -> Void
  ) {
    self.config = config
    self.client = APIServerClient(config: config)
    self.warn = warn
    self.emit = emit
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
    var lastWarning: String?
    while !isStopping {
      do {
        if version == nil {
          let (objects, listVersion) = try list(resource)
          if isStopping { break }
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
        if isStopping { break }
        count { $0.watches += 1 }
        switch outcome {
        case .gone:
          count { $0.relistsAfterGone += 1 }
          version = nil
        case .ended(let latest):
          version = latest
        }
        backoff = 0.5
        lastWarning = nil
      } catch {
        if isStopping { break }
        count { $0.reconnects += 1 }
        // Once per distinct failure: a refused list is retried every 30 s for as long as it lasts.
        let message = "\(resource.kind): \(error)"
        if message != lastWarning { warn("\(message); retrying with back-off up to 30 s") }
        lastWarning = message
        // Sleeps in steps so stop() is not held up by a long back-off.
        let wake = Date().addingTimeInterval(backoff)
        while !isStopping, Date() < wake { Thread.sleep(forTimeInterval: min(0.1, max(0, wake.timeIntervalSinceNow))) }
        backoff = min(30, backoff * 2)
      }
    }
  }

  static func key(_ object: [String: Any]) -> String {
    let meta = object["metadata"] as? [String: Any] ?? [:]
    return "\(meta["namespace"] as? String ?? "")/\(meta["name"] as? String ?? "")"
  }

  /// Every resource listed once, for a snapshot file (`fathom kube snapshot`): the objects with
  /// their kind and apiVersion filled in (list items carry neither), and for each resource that
  /// could not be listed (a 403 for a namespaced service account, an API group the cluster lacks)
  /// why. Lists run one per thread, like the watches.
  public func snapshot(resources: [Resource] = Resource.tagging) -> (
    objects: [[String: Any]], failures: [(kind: String, message: String)]
  ) {
    final class Outcome: @unchecked Sendable {
      var objects: [[String: Any]] = []
      var failure: String?
    }
    let outcomes = resources.map { _ in Outcome() }
    DispatchQueue.concurrentPerform(iterations: resources.count) { position in
      let resource = resources[position]
      do {
        outcomes[position].objects = try list(resource).0.map { object in
          var object = object
          object["apiVersion"] = object["apiVersion"] ?? resource.apiVersion
          return object
        }
        count { $0.lists += 1 }
      } catch {
        outcomes[position].failure = "\(error)"
      }
    }
    let failures = zip(resources, outcomes).compactMap { resource, outcome in
      outcome.failure.map { (kind: resource.kind, message: $0) }
    }
    return (outcomes.flatMap(\.objects), failures)
  }

  /// All objects of a resource (following `continue`) and the list's resourceVersion.
  func list(_ resource: Resource) throws -> ([[String: Any]], String) {
    var objects: [[String: Any]] = []
    var next: String?
    repeat {
      var path = "\(resource.path)?limit=500"
      if let next { path += "&continue=\(next.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? next)" }
      var body: [UInt8] = []
      var tooLarge = false
      let status = try client.get(path, timeoutSeconds: 120, shouldStop: { isStopping }) { _, bytes in
        // A page holds at most 500 objects; far beyond that the server is not what it claims.
        guard body.count + bytes.count <= Self.maximumListPageBytes else {
          tooLarge = true
          return false
        }
        body.append(contentsOf: bytes)
        return true
      }
      if isStopping { return (objects, "0") }
      if tooLarge {
        throw KubeDecoder.Failure(message: "list \(resource.path): a page over \(Self.maximumListPageBytes) bytes")
      }
      guard status == 200 else {
        if status == 401 { config.execPlugin?.invalidate() }
        throw Self.failure("list \(resource.path)", status: status, body: body)
      }
      guard let list = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
        throw KubeDecoder.Failure(message: "list \(resource.path): the response is not a JSON list")
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

  static let maximumListPageBytes = 512 << 20
  /// One watch event is one object; a line longer than this is not an event.
  static let maximumWatchLineBytes = 64 << 20

  /// An HTTP error with the server's own reason (a Status object's message, e.g. "pods is
  /// forbidden: User \"x\" cannot list resource \"pods\"").
  static func failure(_ what: String, status: Int, body: [UInt8]) -> KubeDecoder.Failure {
    let object = (try? JSONSerialization.jsonObject(with: Data(body.prefix(64 * 1024)))) as? [String: Any]
    let reason = (object?["message"] as? String).map { ": \($0)" } ?? ""
    return KubeDecoder.Failure(message: "\(what): HTTP \(status)\(reason)")
  }

  enum WatchOutcome {
    case ended(String)
    case gone
  }

  /// One watch request, handled line by line as it streams in; returns the last resourceVersion
  /// seen, or `.gone` when the server says the version expired.
  func watch(
    _ resource: Resource, from version: String, timeout: Int, update: (String, [String: Any]) -> Void
  ) throws -> WatchOutcome {
    let path = "\(resource.path)?watch=1&allowWatchBookmarks=true&resourceVersion=\(version)&timeoutSeconds=\(timeout)"
    var latest = version
    var gone = false
    var failure: KubeDecoder.Failure?
    var line: [UInt8] = []
    var errorBody: [UInt8] = []

    /// Handles one complete line; false ends the watch.
    func handle(_ line: ArraySlice<UInt8>) -> Bool {
      guard !line.isEmpty,
        let event = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any],
        let type = event["type"] as? String, var object = event["object"] as? [String: Any]
      else { return true }
      let objectVersion = (object["metadata"] as? [String: Any])?["resourceVersion"] as? String
      switch type {
      case "BOOKMARK":
        count { $0.bookmarks += 1 }
        if let objectVersion { latest = objectVersion }
      case "ERROR":
        // A Status object; 410 Gone means the version is too old: re-list.
        if object["code"] as? Int == 410 {
          gone = true
        } else {
          failure = KubeDecoder.Failure(message: "watch \(resource.path): \(object["message"] as? String ?? "error")")
        }
        return false
      default:
        object["kind"] = object["kind"] ?? resource.kind
        if let objectVersion { latest = objectVersion }
        update(type, object)
        count { $0.events += 1 }
        emit(type, object)
      }
      return true
    }

    // The server may hold a quiet watch open until its own timeout: allow that plus a margin.
    let status = try client.get(path, timeoutSeconds: timeout + 30, shouldStop: { isStopping }) { status, bytes in
      guard status == 200 else {
        errorBody.append(contentsOf: bytes.prefix(max(0, 64 * 1024 - errorBody.count)))
        return true
      }
      var start = 0
      for (index, byte) in bytes.enumerated() where byte == UInt8(ascii: "\n") {
        line.append(contentsOf: bytes[start..<index])
        start = index + 1
        let keepGoing = handle(line[...])
        line.removeAll(keepingCapacity: true)
        if !keepGoing || isStopping { return false }
      }
      line.append(contentsOf: bytes[start...])
      if line.count > Self.maximumWatchLineBytes {
        failure = KubeDecoder.Failure(
          message: "watch \(resource.path): a line over \(Self.maximumWatchLineBytes) bytes")
        return false
      }
      return true
    }
    if status == 410 || gone { return .gone }
    if let failure { throw failure }
    guard status == 200 || isStopping else {
      if status == 401 { config.execPlugin?.invalidate() }
      throw Self.failure("watch \(resource.path)", status: status, body: errorBody)
    }
    if !line.isEmpty, !isStopping, !handle(line[...]) {
      if gone { return .gone }
      if let failure { throw failure }
    }
    return .ended(latest)
  }
}
