import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A minimal blocking HTTP/1.1 client over POSIX sockets, used by the demo services and the load
/// generator. Names are resolved with the system resolver (getaddrinfo), so inside a lab pod the
/// pod's resolv.conf (search path, ndots:5) produces the DNS traffic a real client would.
public struct HTTPClient: Sendable {
  public struct Target: Sendable {
    public var host: String
    public var port: Int
    public var path: String

    /// Parses `http://host[:port][/path]`.
    public init?(url: String) {
      guard url.hasPrefix("http://") else { return nil }
      let rest = url.dropFirst(7)
      let slash = rest.firstIndex(of: "/") ?? rest.endIndex
      let authority = rest[rest.startIndex..<slash]
      path = slash == rest.endIndex ? "/" : String(rest[slash...])
      if let colon = authority.lastIndex(of: ":") {
        guard let port = Int(authority[authority.index(after: colon)...]) else { return nil }
        host = String(authority[authority.startIndex..<colon])
        self.port = port
      } else {
        host = String(authority)
        port = 80
      }
      guard !host.isEmpty else { return nil }
    }

    var hostHeader: String { port == 80 ? host : "\(host):\(port)" }
  }

  public struct Response: Sendable {
    public var status: Int?
    /// Why no status was received: `dns: ...`, `connect: ...`, `timeout`, `reset`, ...
    public var error: String?
    public var serverIP: String?
    public var body: String = ""
    public var durationMicros: Int = 0
  }

  public var connectTimeout: Double = 3
  public var responseTimeout: Double = 10

  public init() {}

  public func get(_ target: Target, headers: [(String, String)], resolvedIP: String? = nil) -> Response {
    let start = now()
    var response = perform(target, headers: headers, resolvedIP: resolvedIP)
    response.durationMicros = Int((now() - start) * 1_000_000)
    return response
  }

  private func perform(_ target: Target, headers: [(String, String)], resolvedIP: String?) -> Response {
    var response = Response()
    let ip: String
    if let resolvedIP {
      ip = resolvedIP
    } else {
      switch Resolver.resolve(target.host) {
      case .success(let address): ip = address
      case .failure(let error):
        response.error = error.message
        return response
      }
    }
    response.serverIP = ip
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else {
      response.error = "socket: \(String(cString: strerror(errno)))"
      return response
    }
    defer { close(fd) }
    // On Linux, SO_SNDTIMEO also bounds connect().
    setTimeout(fd, SO_SNDTIMEO, connectTimeout)
    setTimeout(fd, SO_RCVTIMEO, responseTimeout)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(target.port).bigEndian)
    inet_pton(AF_INET, ip, &address.sin_addr)
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard connected == 0 else {
      response.error =
        errno == EINPROGRESS || errno == EAGAIN ? "connect: timeout" : "connect: \(String(cString: strerror(errno)))"
      return response
    }
    var request = "GET \(target.path) HTTP/1.1\r\nHost: \(target.hostHeader)\r\nUser-Agent: fathom-lab/1\r\n"
    for (name, value) in headers { request += "\(name): \(value)\r\n" }
    request += "Connection: close\r\n\r\n"
    guard Socket.writeAll(fd, request) else {
      response.error = "send: \(String(cString: strerror(errno)))"
      return response
    }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16_384)
    while received.count < 1 << 20 {
      let count = read(fd, &buffer, buffer.count)
      if count > 0 {
        received.append(contentsOf: buffer[0..<count])
        if let (status, complete) = HTTPHead.parseResponse(received), complete {
          response.status = status
          break
        }
        continue
      }
      if count == 0 { break }
      if errno == EINTR { continue }
      response.error = errno == EAGAIN || errno == EWOULDBLOCK ? "timeout" : "recv: \(String(cString: strerror(errno)))"
      break
    }
    if response.status == nil {
      if let (status, _) = HTTPHead.parseResponse(received) {
        response.status = status
      } else if response.error == nil {
        response.error = received.isEmpty ? "closed without a response" : "malformed response"
      }
    }
    if let split = HTTPHead.headEnd(received) {
      response.body = String(decoding: received[split...].prefix(4096), as: UTF8.self)
    }
    return response
  }

  func setTimeout(_ fd: Int32, _ option: Int32, _ seconds: Double) {
    var value = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
    setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size))
  }
}

/// The system resolver (IPv4), with the error a user would see.
public enum Resolver {
  public struct Failure: Error, Sendable {
    public var message: String
  }

  public static func resolve(_ host: String) -> Result<String, Failure> {
    var literal = in_addr()
    if inet_pton(AF_INET, host, &literal) == 1 { return .success(host) }
    var hints = addrinfo()
    hints.ai_family = AF_INET
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var result: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host, nil, &hints, &result)
    guard status == 0, let first = result else {
      return .failure(Failure(message: "dns: \(String(cString: gai_strerror(status)))"))
    }
    defer { freeaddrinfo(result) }
    var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
    let ip = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address -> String in
      var raw = address.pointee.sin_addr
      inet_ntop(AF_INET, &raw, &text, socklen_t(INET_ADDRSTRLEN))
      return String(cString: text)
    }
    return .success(ip)
  }
}

/// Just enough HTTP/1 head parsing for the lab's own client and server.
enum HTTPHead {
  static func headEnd(_ bytes: [UInt8]) -> Int? {
    guard bytes.count >= 4 else { return nil }
    for index in 0...(bytes.count - 4)
    where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
      return index + 4
    }
    return nil
  }

  /// Status code, and whether the whole body (by Content-Length) has arrived.
  static func parseResponse(_ bytes: [UInt8]) -> (Int, Bool)? {
    guard let end = headEnd(bytes) else { return nil }
    let head = String(decoding: bytes[0..<end], as: UTF8.self)
    let lines = head.split(separator: "\r\n")
    guard let statusLine = lines.first else { return nil }
    let parts = statusLine.split(separator: " ")
    guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let status = Int(parts[1]) else { return nil }
    let length = header("content-length", in: lines).flatMap { Int($0) }
    if let length { return (status, bytes.count - end >= length) }
    return (status, false)
  }

  static func header(_ name: String, in lines: [Substring]) -> String? {
    for line in lines.dropFirst() {
      guard let colon = line.firstIndex(of: ":") else { continue }
      if line[line.startIndex..<colon].lowercased() == name {
        return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
      }
    }
    return nil
  }
}

enum Socket {
  static func writeAll(_ fd: Int32, _ text: String) -> Bool {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
      let written = bytes.withUnsafeMutableBytes {
        send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
      }
      if written < 0 {
        if errno == EINTR { continue }
        return false
      }
      offset += written
    }
    return true
  }
}

/// W3C trace context and X-Request-ID values.
public enum TraceIDs {
  public static func hex(_ bytes: Int) -> String {
    var text = ""
    for _ in 0..<bytes { text += String(format: "%02x", UInt8.random(in: 0...255)) }
    return text
  }

  /// A random UUID, the shape ingress-nginx and most clients use for X-Request-ID.
  public static func requestID() -> String {
    let raw = hex(16)
    let characters = Array(raw)
    return
      "\(String(characters[0..<8]))-\(String(characters[8..<12]))-4\(String(characters[13..<16]))-a\(String(characters[17..<20]))-\(String(characters[20..<32]))"
  }

  /// `00-<trace id>-<span id>-01`.
  public static func traceparent(traceID: String, spanID: String) -> String { "00-\(traceID)-\(spanID)-01" }

  /// The trace id of a `traceparent` header, if well formed.
  public static func traceID(ofTraceparent value: String) -> String? {
    let parts = value.split(separator: "-")
    guard parts.count == 4, parts[1].count == 32 else { return nil }
    return String(parts[1])
  }
}
