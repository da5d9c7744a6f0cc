import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The lab's demo HTTP service (`fathom lab serve`), one process per pod. For each request it
/// spends some CPU, calls its downstream services by DNS name (re-resolving every
/// `resolveInterval`), increments a Redis counter, and answers JSON. It propagates X-Request-ID
/// and traceparent (new span per call). Latency, error rate and CPU work per request are read
/// from a control file the lab's faults write, so the wire shows a real slow or failing pod.
///
/// Answers: 200; 500 when the control file's error rate fires or a dependency answered 5xx;
/// 502 when a dependency could not be reached (DNS, connect, timeout); 404 for unknown paths
/// other than the service's own; `/healthz` always 200.
public final class DemoService: @unchecked Sendable {
  public struct Options: Sendable {
    public var name: String
    public var pod: String
    public var port: Int
    public var calls: [String]
    public var redis: String?
    public var controlFile: String?
    public var resolveInterval: Double = 2
    public var maxConnections = 256

    public init(name: String, pod: String, port: Int, calls: [String], redis: String?, controlFile: String?) {
      self.name = name
      self.pod = pod
      self.port = port
      self.calls = calls
      self.redis = redis
      self.controlFile = controlFile
    }
  }

  struct Control {
    var latencyMillis = 0
    var errorRate = 0.0
    var workMicros = 2000
  }

  let options: Options
  let lock = NSLock()
  var control = Control()
  var controlCheckedAt = 0.0
  var controlModified = 0
  var connections = 0
  var refused = 0
  var resolved: [String: (ip: String, at: Double)] = [:]

  public init(options: Options) { self.options = options }

  /// Serves until the process is killed.
  public func run() throws -> Never {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard listener >= 0 else { throw LabError.command("socket: \(String(cString: strerror(errno)))") }
    var yes: Int32 = 1
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(options.port).bigEndian)
    address.sin_addr = in_addr(s_addr: INADDR_ANY)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard bound == 0, listen(listener, 1024) == 0 else {
      throw LabError.command("cannot listen on port \(options.port): \(String(cString: strerror(errno)))")
    }
    FileHandle.standardOutput.write(
      Data(
        "\(options.pod): \(options.name) listening on :\(options.port), calls \(options.calls), redis \(options.redis ?? "-")\n"
          .utf8))
    while true {
      let client = accept(listener, nil, nil)
      guard client >= 0 else { continue }
      let admitted = lock.withLock { () -> Bool in
        guard connections < options.maxConnections else {
          refused += 1
          return false
        }
        connections += 1
        return true
      }
      guard admitted else {
        close(client)
        continue
      }
      Thread.detachNewThread { [self] in
        serve(client)
        close(client)
        lock.withLock { connections -= 1 }
      }
    }
  }

  func serve(_ fd: Int32) {
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var pending: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16_384)
    while true {
      guard let end = HTTPHead.headEnd(pending) else {
        guard pending.count < 65_536 else { return }
        let count = read(fd, &buffer, buffer.count)
        if count <= 0 { return }
        pending.append(contentsOf: buffer[0..<count])
        continue
      }
      let head = String(decoding: pending[0..<end], as: UTF8.self)
      let lines = head.split(separator: "\r\n")
      let requestLine = lines.first?.split(separator: " ") ?? []
      let bodyLength = HTTPHead.header("content-length", in: lines).flatMap { Int($0) } ?? 0
      // Discard the request body; the demo API takes none.
      var needed = end + bodyLength
      while pending.count < needed {
        let count = read(fd, &buffer, buffer.count)
        if count <= 0 { return }
        pending.append(contentsOf: buffer[0..<count])
      }
      pending.removeFirst(needed)
      needed = 0
      let path = requestLine.count >= 2 ? String(requestLine[1]) : "/"
      let version = requestLine.count >= 3 ? String(requestLine[2]) : "HTTP/1.0"
      let connectionHeader = HTTPHead.header("connection", in: lines)?.lowercased()
      let keepAlive = version == "HTTP/1.1" ? connectionHeader != "close" : connectionHeader == "keep-alive"
      let requestID = HTTPHead.header("x-request-id", in: lines) ?? TraceIDs.requestID()
      let traceID = HTTPHead.header("traceparent", in: lines).flatMap(TraceIDs.traceID) ?? TraceIDs.hex(16)
      let (status, body) = handle(path: path, requestID: requestID, traceID: traceID)
      let reason = [200: "OK", 404: "Not Found", 500: "Internal Server Error", 502: "Bad Gateway"][status] ?? "Status"
      let response =
        "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
        + "X-Request-ID: \(requestID)\r\nConnection: \(keepAlive ? "keep-alive" : "close")\r\n\r\n\(body)"
      guard Socket.writeAll(fd, response), keepAlive else { return }
    }
  }

  func handle(path: String, requestID: String, traceID: String) -> (Int, String) {
    if path == "/healthz" { return (200, "{\"status\":\"ok\"}") }
    let control = currentControl()
    burnCPU(micros: control.workMicros)
    var outcomes: [String] = []
    var status = 200
    for url in options.calls {
      guard let target = HTTPClient.Target(url: url) else { continue }
      let ip = resolve(target.host)
      var response: HTTPClient.Response
      switch ip {
      case .success(let address):
        response = HTTPClient().get(
          target,
          headers: [
            ("X-Request-ID", requestID),
            ("traceparent", TraceIDs.traceparent(traceID: traceID, spanID: TraceIDs.hex(8))),
          ], resolvedIP: address)
      case .failure(let failure):
        response = HTTPClient.Response(status: nil, error: failure.message)
      }
      if let code = response.status {
        outcomes.append("{\"url\":\"\(url)\",\"status\":\(code)}")
        if code >= 500 { status = max(status, 500) }
      } else {
        outcomes.append("{\"url\":\"\(url)\",\"error\":\"\(response.error ?? "?")\"}")
        status = 502
      }
    }
    if let redis = options.redis {
      if let error = Redis.increment(address: redis, key: "\(options.name):requests", resolve: resolve) {
        outcomes.append("{\"redis\":\"\(redis)\",\"error\":\"\(error)\"}")
        status = max(status, 500)
      }
    }
    if control.latencyMillis > 0 { usleep(UInt32(control.latencyMillis) * 1000) }
    if status == 200, control.errorRate > 0, Double.random(in: 0..<1) < control.errorRate { status = 500 }
    let body =
      "{\"service\":\"\(options.name)\",\"pod\":\"\(options.pod)\",\"path\":\"\(path)\",\"request_id\":\"\(requestID)\",\"calls\":[\(outcomes.joined(separator: ","))]}"
    return (status, body)
  }

  /// Resolves with a short cache, so the service re-resolves every few seconds as real clients do.
  func resolve(_ host: String) -> Result<String, Resolver.Failure> {
    let time = now()
    if let cached = lock.withLock({ resolved[host] }), time - cached.at < options.resolveInterval {
      return .success(cached.ip)
    }
    let result = Resolver.resolve(host)
    if case .success(let ip) = result { lock.withLock { resolved[host] = (ip, time) } }
    return result
  }

  func currentControl() -> Control {
    lock.withLock {
      let time = now()
      guard let path = options.controlFile, time - controlCheckedAt >= 1 else { return control }
      controlCheckedAt = time
      var info = stat()
      guard stat(path, &info) == 0 else {
        control = Control()
        return control
      }
      guard info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec != controlModified else { return control }
      controlModified = info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec
      var next = Control()
      for line in (Files.read(path) ?? "").split(separator: "\n") {
        let pair = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard pair.count == 2 else { continue }
        switch pair[0] {
        case "latency_ms": next.latencyMillis = Int(pair[1]) ?? 0
        case "error_rate": next.errorRate = Double(pair[1]) ?? 0
        case "work_us": next.workMicros = Int(pair[1]) ?? next.workMicros
        default: break
        }
      }
      control = next
      return control
    }
  }

  /// Spends CPU time (not wall time), so a tight CPU limit shows as throttling.
  func burnCPU(micros: Int) {
    guard micros > 0 else { return }
    var usage = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &usage)
    let deadline = Int(usage.tv_sec) * 1_000_000 + Int(usage.tv_nsec) / 1000 + micros
    var accumulator: UInt64 = 0x9e37_79b9
    while true {
      for _ in 0..<2000 { accumulator = accumulator &* 6_364_136_223_846_793_005 &+ 1 }
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &usage)
      if Int(usage.tv_sec) * 1_000_000 + Int(usage.tv_nsec) / 1000 >= deadline { break }
    }
    if accumulator == 42 { print("") }
  }
}

/// One Redis command per request over a fresh connection (RESP2), enough for the demo.
enum Redis {
  /// Sends `INCR key`; returns an error text, or nil on an integer reply.
  static func increment(
    address: String, key: String, resolve: (String) -> Result<String, Resolver.Failure>
  ) -> String? {
    let parts = address.split(separator: ":")
    guard parts.count == 2, let port = Int(parts[1]) else { return "bad address \(address)" }
    let ip: String
    switch resolve(String(parts[0])) {
    case .success(let address): ip = address
    case .failure(let failure): return failure.message
    }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return "socket" }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var sockaddress = sockaddr_in()
    sockaddress.sin_family = sa_family_t(AF_INET)
    sockaddress.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, ip, &sockaddress.sin_addr)
    let connected = withUnsafePointer(to: &sockaddress) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard connected == 0 else { return "connect: \(String(cString: strerror(errno)))" }
    guard Socket.writeAll(fd, "*2\r\n$4\r\nINCR\r\n$\(key.utf8.count)\r\n\(key)\r\n") else { return "send failed" }
    var buffer = [UInt8](repeating: 0, count: 512)
    let count = read(fd, &buffer, buffer.count)
    guard count > 0 else { return count == 0 ? "closed" : "timeout" }
    return buffer[0] == UInt8(ascii: ":")
      ? nil : String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
  }
}
