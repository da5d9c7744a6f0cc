import FathomTestSupport
import Foundation
import Testing

@testable import FathomStore

/// The keep-alive connection to ClickHouse: each request's time limit holds on a connection
/// reused from a request with another (a schema change may take an hour, an insert a minute).
@Suite struct HTTPConnectionTests {
  /// Answers the first request on a connection and never the second.
  final class SilentSecondServer: @unchecked Sendable {
    let listener: Int32
    let port: UInt16

    init() {
      (listener, port) = LoopbackSocket.bind(listening: true)
      Thread.detachNewThread { [self] in serve() }
    }

    func stop() {
      shutdown(listener, Int32(SHUT_RDWR))
      close(listener)
    }

    func serve() {
      let client = accept(listener, nil, nil)
      guard client >= 0 else { return }
      defer { close(client) }
      var buffer = [UInt8](repeating: 0, count: 4096)
      // Each request is small and arrives whole: headers and a 1-byte body.
      guard read(client, &buffer, buffer.count) > 0 else { return }
      let answer = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok".utf8)
      _ = answer.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
      _ = read(client, &buffer, buffer.count)
      sleep(10)
    }
  }

  @Test func eachRequestKeepsItsOwnTimeLimit() throws {
    let server = SilentSecondServer()
    defer { server.stop() }
    let connection = try #require(HTTPConnection(url: URL(string: "http://127.0.0.1:\(server.port)/")!))
    let body = Array("x".utf8)
    let first = try body.withUnsafeBytes { try connection.post("/", body: $0, timeout: 60) }
    #expect(first.status == 200 && String(decoding: first.body, as: UTF8.self) == "ok")
    // On the same socket, which was set to 60 s: this request's 1 s holds.
    let start = Date()
    #expect(throws: (any Error).self) {
      try body.withUnsafeBytes { _ = try connection.post("/", body: $0, timeout: 1) }
    }
    let waited = Date().timeIntervalSince(start)
    #expect(waited < 5, "waited \(waited) s")
  }
}
