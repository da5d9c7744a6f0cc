import FathomFlows
import FathomProtocols
import FathomRecords
import FathomTestSupport
import FathomWire
import Testing

/// HTTP/2 frames built by hand: HPACK blocks use literal (non-Huffman) strings.
enum H2 {
  static func frame(type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
    let length = payload.count
    return [UInt8(length >> 16), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF), type, flags] + be32(stream)
      + payload
  }

  /// Literal header field without indexing, new name.
  static func literal(_ name: String, _ value: String) -> [UInt8] {
    [0x00, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
  }

  /// Literal with incremental indexing, new name (enters the dynamic table).
  static func indexed(_ name: String, _ value: String) -> [UInt8] {
    [0x40, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
  }

  static func grpcRequest(stream: UInt32, path: String, dynamic: Bool) -> [UInt8] {
    // :method POST is static index 3; content-type enters the table the first time.
    let block: [UInt8] =
      [0x83] + literal(":path", path) + literal(":authority", "cart:7070")
      + (dynamic ? [0xBE] : indexed("content-type", "application/grpc"))
    return frame(type: 1, flags: 0x4, stream: stream, block)
      + frame(type: 0, flags: 0x1, stream: stream, [0, 0, 0, 0, 0])
  }

  static func grpcResponse(stream: UInt32, status: String) -> [UInt8] {
    let headers = [0x88] + literal("content-type", "application/grpc")  // :status 200
    let trailers = literal("grpc-status", status) + literal("grpc-message", status == "0" ? "" : "boom")
    return frame(type: 1, flags: 0x4, stream: stream, headers)
      + frame(type: 0, flags: 0, stream: stream, [0, 0, 0, 0, 1, 7])
      + frame(type: 1, flags: 0x5, stream: stream, trailers)
  }
}

@Suite struct HTTP2Tests {
  @Test func grpcCallsWithStatusClassesAndTheDynamicTable() throws {
    let x = Exchange(serverPort: 7070)
    x.handshake()
    x.send(Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + H2.frame(type: 4, flags: 0, stream: 0, []))
    x.send(H2.grpcRequest(stream: 1, path: "/shop.Cart/Get", dynamic: false))
    x.send(H2.grpcRequest(stream: 3, path: "/shop.Cart/Add", dynamic: true))  // refers to the table
    x.send(H2.grpcRequest(stream: 5, path: "/shop.Cart/Empty", dynamic: true))
    x.send(H2.grpcResponse(stream: 1, status: "0"), fromClient: false)
    x.send(H2.grpcResponse(stream: 3, status: "5"), fromClient: false)  // NOT_FOUND: the client's fault
    x.send(H2.grpcResponse(stream: 5, status: "14"), fromClient: false)  // UNAVAILABLE: the server's
    x.finish(closed: true)
    let grpc = x.records.sorted { $0.transactionID ?? 0 < $1.transactionID ?? 0 }
    #expect(grpc.map(\.applicationProtocol) == [.grpc, .grpc, .grpc])
    #expect(grpc.map(\.endpoint) == ["/shop.Cart/Get", "/shop.Cart/Add", "/shop.Cart/Empty"])
    #expect(grpc.map(\.status) == [.ok, .clientError, .serverError])
    #expect(grpc.map(\.code) == [0, 5, 14])
    #expect(grpc[2].errorMessage == "boom" && grpc[0].domain == "cart:7070")
  }

  @Test func resetStreamsAndGoAway() throws {
    let x = Exchange(serverPort: 8080)
    x.handshake()
    x.send(Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8))
    let get = [0x82, 0x84] + H2.literal(":authority", "web")  // GET /
    x.send(
      H2.frame(type: 1, flags: 0x5, stream: 1, get) + H2.frame(type: 1, flags: 0x5, stream: 3, get)
        + H2.frame(type: 1, flags: 0x5, stream: 5, get))
    x.send(H2.frame(type: 3, flags: 0, stream: 1, be32(2)), fromClient: false)  // RST_STREAM INTERNAL_ERROR
    x.send(H2.frame(type: 7, flags: 0, stream: 0, be32(3) + be32(0)), fromClient: false)  // GOAWAY, last 3
    x.send(H2.frame(type: 1, flags: 0x5, stream: 3, [0x8D]), fromClient: false)  // :status 404
    x.finish(closed: true)
    let byStream = Dictionary(uniqueKeysWithValues: x.records.map { ($0.transactionID ?? 0, $0) })
    #expect(byStream[1]?.status == .serverError && byStream[1]?.errorMessage == "RST_STREAM 2")
    #expect(byStream[5]?.status == .serverError && byStream[5]?.errorMessage == "GOAWAY")
    #expect(byStream[3]?.code == 404 && byStream[3]?.status == .clientError)
    #expect(x.records.allSatisfy { $0.applicationProtocol == .http2 && $0.method == "GET" })
  }

  @Test func h2cUpgradeHandsOverToHTTP2() throws {
    let x = Exchange()
    x.handshake()
    x.send(
      "GET / HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    )
    // The server's first HTTP/2 frame (SETTINGS) starts in the 101's segment and ends in the next:
    // dropping the leftover would misalign every later frame.
    let settings = H2.frame(type: 4, flags: 0, stream: 0, [])
    x.send(
      Array("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".utf8)
        + settings.prefix(5), fromClient: false)
    x.send(
      Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        + H2.frame(type: 1, flags: 0x5, stream: 3, [0x82, 0x84] + H2.literal(":authority", "web")))
    x.send(
      Array(settings.dropFirst(5)) + H2.frame(type: 1, flags: 0x5, stream: 1, [0x89])
        + H2.frame(type: 1, flags: 0x5, stream: 3, [0x88]), fromClient: false)
    x.finish(closed: true)
    // The upgraded request is answered on stream 1 (204), the next one on stream 3 (200).
    let records = x.records.sorted { ($0.transactionID ?? 0) < ($1.transactionID ?? 0) }
    #expect(records.map(\.applicationProtocol) == [.http2, .http2])
    #expect(records.map(\.code) == [204, 200])
    #expect(records.first?.resource == "/" && records.first?.domain == "web")
  }

  @Test func webSocketUpgradeStopsCleanly() throws {
    let x = Exchange()
    x.handshake()
    x.send("GET /ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    x.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", fromClient: false)
    x.send([0x81, 0x85, 1, 2, 3, 4, 0x48, 0x65, 0x6c, 0x6c, 0x6f])  // a masked text frame
    x.send([0x81, 0x02, 0x68, 0x69], fromClient: false)
    x.finish(closed: true)
    #expect(x.records.map(\.code) == [101])
    #expect(x.requests.counters.parseFailures == 0)
  }
}
