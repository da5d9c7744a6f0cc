import FathomTestSupport
import Foundation
import Testing

@testable import FathomKube

/// No Kubernetes API server can run here, so the live source is tested against a small HTTP server
/// inside this test that replays real list responses (VictoriaMetrics' recorded PodLists) and
/// scripted watch streams: events, a bookmark, then `410 Gone`, which must make the client list
/// again and report what disappeared.
final class ReplayAPIServer: @unchecked Sendable {
  let listener: Int32
  let port: UInt16
  let lock = NSLock()
  var requests: [String] = []
  var authorizations: [String] = []
  var stopped = false
  /// When set, every request is answered with this status and a Kubernetes Status object.
  let refusal: Int?
  let firstList: String
  let secondList: String

  init(refuseWith refusal: Int? = nil) throws {
    self.refusal = refusal
    let fixtures = KubeTestData.root.appendingPathComponent("victoriametrics")
    firstList = try String(contentsOf: fixtures.appendingPathComponent("pod__L28__PodList.json"), encoding: .utf8)
      .replacingOccurrences(of: "\"resourceVersion\": \"72425\"", with: "\"resourceVersion\": \"100\"")
    secondList = try String(
      contentsOf: fixtures.appendingPathComponent("api_watcher__L200__PodList.json"), encoding: .utf8
    )
    .replacingOccurrences(of: "\"resourceVersion\": \"72425\"", with: "\"resourceVersion\": \"200\"")
    (listener, port) = LoopbackSocket.bind(listening: true)
    Thread.detachNewThread { [self] in serve() }
  }

  func stop() {
    lock.withLock { stopped = true }
    shutdown(listener, Int32(SHUT_RDWR))
    close(listener)
  }

  func serve() {
    while true {
      let client = accept(listener, nil, nil)
      guard client >= 0 else { return }
      Thread.detachNewThread { [self] in handle(client) }
    }
  }

  func handle(_ fd: Int32) {
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 8192)
    let count = read(fd, &buffer, buffer.count)
    guard count > 0 else { return }
    let head = String(decoding: buffer[0..<count], as: UTF8.self)
    let target = head.split(separator: " ").dropFirst().first.map(String.init) ?? ""
    let authorization = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("authorization:") }
      .map { $0.dropFirst("authorization:".count).trimmingCharacters(in: .whitespaces) }
    let listCount = lock.withLock { () -> Int in
      requests.append(target)
      if let authorization { authorizations.append(authorization) }
      return requests.filter { !$0.contains("watch=1") }.count
    }
    func respond(_ body: String, stream: Bool = false) {
      let header =
        stream
        ? "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        : "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
      var bytes = Array((header + body).utf8)
      _ = bytes.withUnsafeMutableBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
    if let refusal {
      let body =
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"pods is forbidden: User \\\"system:anonymous\\\" cannot list resource \\\"pods\\\" in API group \\\"\\\" at the cluster scope\",\"reason\":\"Forbidden\",\"code\":\(refusal)}"
      var bytes = Array(
        "HTTP/1.1 \(refusal) Forbidden\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
          .utf8)
      _ = bytes.withUnsafeMutableBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    } else if !target.contains("watch=1") {
      respond(listCount == 1 ? firstList : secondList)
    } else if target.contains("resourceVersion=100") {
      // A change to the listed pod, then a bookmark moving the version on; the stream ends.
      let modified =
        "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"etcd-m01\",\"namespace\":\"kube-system\",\"resourceVersion\":\"120\",\"labels\":{\"tier\":\"changed\"}},\"spec\":{\"nodeName\":\"test-node\"},\"status\":{\"phase\":\"Running\",\"podIP\":\"172.17.0.2\"}}}\n"
      let bookmark =
        "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"150\"}}}\n"
      respond(modified + bookmark, stream: true)
    } else if target.contains("resourceVersion=150") {
      respond(
        "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"too old resource version: 150 (180)\",\"reason\":\"Expired\",\"code\":410}}\n",
        stream: true)
    } else {
      usleep(200_000)
      respond("", stream: true)
    }
  }
}

/// Events and warnings of one run of the live source against a server, until `done` holds or 10 s.
final class SourceRun: @unchecked Sendable {
  let lock = NSLock()
  var events: [(String, String)] = []
  var warnings: [String] = []
  var counters = KubeAPISource.Counters()

  init(config: KubeAPIConfig, until done: (SourceRun) -> Bool, seconds: Double = 10) {
    let source = KubeAPISource(
      config: config, warn: { [self] message in lock.withLock { warnings.append(message) } }
    ) { [self] type, object in
      let name = (object["metadata"] as? [String: Any])?["name"] as? String ?? "?"
      lock.withLock { events.append((type, name)) }
    }
    let finished = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      source.run(resources: [.init(path: "/api/v1/pods", kind: "Pod")], watchTimeoutSeconds: 5)
      finished.signal()
    }
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline, !done(self) { usleep(50_000) }
    source.stop()
    _ = finished.wait(timeout: .now() + 5)
    counters = source.counters
  }

  var seen: [(String, String)] { lock.withLock { events } }
  var warned: [String] { lock.withLock { warnings } }
  var sawRelist: Bool { lock.withLock { events.contains { $0 == ("DELETED", "etcd-m01") } } }
}

@Suite(.enabled(if: KubeTestData.available)) struct KubeAPISourceTests {
  @Test func listWatchBookmarkGoneRelist() throws {
    let server = try ReplayAPIServer()
    defer { server.stop() }
    let run = SourceRun(config: KubeAPIConfig(server: "http://127.0.0.1:\(server.port)", token: "t0ken")) {
      $0.sawRelist
    }
    let seen = run.seen
    // List → ADDED; watch → MODIFIED; bookmark moves the version; 410 → re-list: the new pod is
    // ADDED and the one no longer listed DELETED.
    #expect(seen.first.map { $0 == ("ADDED", "etcd-m01") } == true, "\(seen)")
    #expect(seen.contains { $0 == ("MODIFIED", "etcd-m01") })
    #expect(seen.contains { $0 == ("ADDED", "stack-name-1") })
    #expect(seen.contains { $0 == ("DELETED", "etcd-m01") })
    #expect(run.counters.bookmarks == 1 && run.counters.relistsAfterGone >= 1 && run.counters.lists >= 2)
    let requests = server.lock.withLock { server.requests }
    #expect(
      requests.contains {
        $0.contains("watch=1") && $0.contains("allowWatchBookmarks=true") && $0.contains("resourceVersion=100")
      })
    #expect(requests.contains { $0.contains("resourceVersion=150") })
    #expect(server.lock.withLock { server.authorizations }.allSatisfy { $0 == "Bearer t0ken" })
  }

  @Test func refusedRequestIsReportedWithTheServersReason() throws {
    let server = try ReplayAPIServer(refuseWith: 403)
    defer { server.stop() }
    let run = SourceRun(config: KubeAPIConfig(server: "http://127.0.0.1:\(server.port)")) { !$0.warned.isEmpty }
    #expect(run.seen.isEmpty)
    #expect(
      run.warned.first?.contains("HTTP 403: pods is forbidden: User \"system:anonymous\" cannot list") == true,
      "\(run.warned)")
  }

  /// `fathom kube snapshot`: each resource listed once; the items get the kind and apiVersion
  /// their list response left out, so the List file decodes like `kubectl get -o json` output.
  @Test func snapshotListsOnceIntoADecodableList() throws {
    let server = try ReplayAPIServer()
    defer { server.stop() }
    let source = KubeAPISource(config: KubeAPIConfig(server: "http://127.0.0.1:\(server.port)")) { _, _ in }
    let (objects, failures) = source.snapshot(resources: [.init(path: "/api/v1/pods", kind: "Pod")])
    #expect(failures.isEmpty)
    #expect(objects.allSatisfy { $0["kind"] as? String == "Pod" && $0["apiVersion"] as? String == "v1" })
    let list = try JSONSerialization.data(withJSONObject: ["apiVersion": "v1", "kind": "List", "items": objects])
    let decoded = try KubeDecoder.decode(String(decoding: list, as: UTF8.self))
    let direct = try KubeDecoder.decode(server.firstList, source: "PodList")
    #expect(!decoded.isEmpty && decoded.count == direct.count)
    #expect(server.lock.withLock { server.requests }.allSatisfy { !$0.contains("watch=1") })
    #expect(KubeAPISource.Resource(path: "/apis/apps/v1/deployments", kind: "Deployment").apiVersion == "apps/v1")

    let refusing = try ReplayAPIServer(refuseWith: 403)
    defer { refusing.stop() }
    let refused = KubeAPISource(config: KubeAPIConfig(server: "http://127.0.0.1:\(refusing.port)")) { _, _ in }
      .snapshot(resources: [.init(path: "/api/v1/pods", kind: "Pod")])
    #expect(refused.objects.isEmpty && refused.failures.first?.message.contains("HTTP 403") == true)
  }

  @Test func kubeconfigCurrentContext() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("kubeconfig-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try """
    apiVersion: v1
    kind: Config
    current-context: lab
    clusters:
    - name: other
      cluster: {server: "https://10.0.0.1:6443"}
    - name: lab-cluster
      cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
    contexts:
    - name: lab
      context: {cluster: lab-cluster, user: admin}
    users:
    - name: admin
      user: {token: abc123}
    """.write(toFile: path, atomically: true, encoding: .utf8)
    let config = try KubeAPIConfig.kubeconfig(path)
    #expect(config.server == "https://127.0.0.1:6443" && config.token == "abc123" && config.tls.insecureSkipVerify)
    #expect(throws: KubeDecoder.Failure.self) { try KubeAPIConfig.kubeconfig("/nonexistent/kubeconfig") }
  }
}
