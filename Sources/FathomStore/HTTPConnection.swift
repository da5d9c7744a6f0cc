import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// One keep-alive HTTP/1.1 connection over a plain socket, for ClickHouse's `http://` interface:
/// the batches are large and many, and URLSession spent more CPU in thread hand-offs than the
/// whole encoding (measured: 10 s of system time per million records). Used by one thread at a
/// time: `ClickHouseStore` checks a connection out of its idle pool for each request.
final class HTTPConnection: @unchecked Sendable {
  let host: String
  let port: UInt16
  private var fd: Int32 = -1
  private var pending: [UInt8] = []
  /// The send and receive limit set on the socket, in seconds (0: none set yet).
  private var socketTimeout = 0

  struct Failure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
  }

  init?(url: URL) {
    guard url.scheme == "http", let host = url.host else { return nil }
    self.host = host
    port = UInt16(url.port ?? 80)
  }

  deinit { if fd >= 0 { close(fd) } }

  /// POSTs `body` to `target` (path and query); returns the status and the response body.
  func post(_ target: String, body: UnsafeRawBufferPointer, authorization: String? = nil, timeout: Int = 60) throws -> (
    status: Int, body: Data
  ) {
    // A kept-alive connection the server closed meanwhile fails on first use: retry once, fresh.
    for attempt in 0..<2 {
      do {
        if fd < 0 { try connect() }
        // Per request: a kept-alive socket may come from one with another limit.
        if timeout != socketTimeout {
          var time = timeval(tv_sec: timeout, tv_usec: 0)
          setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
          setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
          socketTimeout = timeout
        }
        return try exchange(target, body: body, authorization: authorization)
      } catch {
        close(fd)
        fd = -1
        pending.removeAll()
        if attempt == 1 { throw error }
      }
    }
    throw Failure(message: "unreachable")
  }

  private func connect() throws {
    var hints = addrinfo()
    hints.ai_family = AF_INET
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var result: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, String(port), &hints, &result) == 0, let address = result else {
      throw Failure(message: "cannot resolve \(host)")
    }
    defer { freeaddrinfo(result) }
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard socket >= 0 else { throw Failure(message: "socket: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    guard Glibc.connect(socket, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 else {
      let reason = String(cString: strerror(errno))
      close(socket)
      throw Failure(message: "connect \(host):\(port): \(reason)")
    }
    fd = socket
    socketTimeout = 0
  }

  private func sendAll(_ bytes: UnsafeRawBufferPointer) throws {
    var offset = 0
    while offset < bytes.count {
      let sent = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
      if sent < 0 {
        if errno == EINTR { continue }
        throw Failure(message: "send: \(String(cString: strerror(errno)))")
      }
      offset += sent
    }
  }

  private func fill() throws {
    var buffer = [UInt8](repeating: 0, count: 65_536)
    let count = read(fd, &buffer, buffer.count)
    if count > 0 {
      pending.append(contentsOf: buffer[0..<count])
      return
    }
    throw Failure(message: count == 0 ? "connection closed" : "recv: \(String(cString: strerror(errno)))")
  }

  private func line() throws -> String {
    while true {
      if let end = pending.firstIndex(of: 10) {
        let text = String(decoding: pending[0..<end], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        pending.removeFirst(end + 1)
        return text
      }
      try fill()
    }
  }

  private func take(_ count: Int) throws -> [UInt8] {
    while pending.count < count { try fill() }
    let bytes = Array(pending[0..<count])
    pending.removeFirst(count)
    return bytes
  }

  private func exchange(_ target: String, body: UnsafeRawBufferPointer, authorization: String?) throws -> (
    status: Int, body: Data
  ) {
    let credentials = authorization.map { "Authorization: \($0)\r\n" } ?? ""
    let head =
      "POST \(target) HTTP/1.1\r\nHost: \(host):\(port)\r\n\(credentials)Content-Length: \(body.count)\r\nConnection: keep-alive\r\n\r\n"
    try Array(head.utf8).withUnsafeBytes { try sendAll($0) }
    try sendAll(body)

    let statusLine = try line()
    let parts = statusLine.split(separator: " ")
    guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
      throw Failure(message: "bad status line \(statusLine.prefix(80))")
    }
    var length: Int?
    var chunked = false
    var closes = false
    while true {
      let header = try line()
      if header.isEmpty { break }
      guard let colon = header.firstIndex(of: ":") else { continue }
      let name = header[..<colon].lowercased()
      let value = header[header.index(after: colon)...].trimmingCharacters(in: .whitespaces).lowercased()
      if name == "content-length" { length = Int(value) }
      if name == "transfer-encoding" && value.contains("chunked") { chunked = true }
      if name == "connection" && value == "close" { closes = true }
    }
    var response: [UInt8] = []
    if chunked {
      while true {
        let sizeLine = try line()
        guard let size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16) else {
          throw Failure(message: "bad chunk size \(sizeLine.prefix(20))")
        }
        if size == 0 {
          while try !line().isEmpty {}  // trailers
          break
        }
        response += try take(size)
        _ = try take(2)
      }
    } else if let length {
      response = try take(length)
    } else {
      closes = true
      while true {
        do { try fill() } catch { break }
      }
      response = pending
      pending.removeAll()
    }
    if closes {
      close(fd)
      fd = -1
    }
    return (status, Data(response))
  }
}
