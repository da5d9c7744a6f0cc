import FathomHTTP
import FathomKube
import FathomRecords
import Foundation
import Testing

@testable import FathomStore

/// Request and trace ids stored as their bytes where they are hex or UUIDs, texts otherwise:
/// every id reads back exactly and is found by its text, also in rows written before.
@Suite struct ClickHouseIdentifierTests {
  static let ids = [
    "0123456789abcdef0123456789abcdef",  // nginx's $request_id, a W3C trace id
    "00f067aa0ba902b7",  // a W3C span id
    "9a4f2c1e-3b7d-4e8a-9c6f-1d2e3f4a5b6c",  // Envoy's X-Request-ID
    "0123456789ABCDEF0123456789ABCDEF",  // uppercase: kept as text, exactly
    "0123456789abcdef0123456789abcde",  // 31 digits
    "9a4f2c1e-3b7d-4e8a-9c6f-1d2e3f4a5b6g",  // not hex
    "9a4f2c1e+3b7d+4e8a+9c6f+1d2e3f4a5b6c",  // 36 characters, not a UUID
    "\u{1}0123456789abcdef",  // a text that starts like a stored form
    "",
    "req-42 ünïcode",
  ]

  @Test func everyIdRoundTrips() {
    for id in Self.ids {
      let stored = StoredIdentifier.encoded(id)
      #expect(StoredIdentifier.decode(stored) == id, "\(id)")
      // ClickHouse's hex() is uppercase.
      let hex = stored.map { String(format: "%02X", $0) }.joined()
      #expect(StoredIdentifier.decode(hex: hex) == id, "\(id)")
    }
  }

  @Test func hexAndUUIDsTakeHalf() {
    #expect(
      StoredIdentifier.encoded(Self.ids[0]) == [1]
        + (0..<2).flatMap { _ in [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef] })
    #expect(StoredIdentifier.encoded(Self.ids[1]).count == 9)
    #expect(StoredIdentifier.encoded(Self.ids[2]).first == 2 && StoredIdentifier.encoded(Self.ids[2]).count == 17)
    for text in Self.ids[3...6] + [Self.ids[9]] {
      #expect(StoredIdentifier.encoded(text) == Array(text.utf8), "\(text)")
    }
    #expect(StoredIdentifier.encoded(Self.ids[7]) == [0] + Array(Self.ids[7].utf8))
  }

  /// The eight-digits-at-a-time decoding against a digit-by-digit reference: every byte value at
  /// every position of a 32-digit id.
  @Test func wordDecodingAgreesWithAReference() {
    let base = Array("0123456789abcdef0123456789abcdef".utf8)
    for position in 0..<32 {
      for value in 0...255 {
        var digits = base
        digits[position] = UInt8(value)
        let isHex = (0x30...0x39).contains(value) || (0x61...0x66).contains(value)
        let expected: [UInt8]? =
          isHex
          ? stride(from: 0, to: 32, by: 2).map {
            StoredIdentifier.nibble(digits[$0])! << 4 | StoredIdentifier.nibble(digits[$0 + 1])!
          } : nil
        let stored = digits.withUnsafeBytes { StoredIdentifier.encoded($0) }
        if let expected {
          #expect(stored == [1] + expected, "byte \(value) at \(position)")
        } else {
          // Kept as text (marked when it starts with a byte below 3).
          #expect(stored == (position == 0 && value < 3 ? [0] : []) + digits, "byte \(value) at \(position)")
        }
      }
    }
  }

  /// Written through the store and, for the rows from before, as plain text: each lookup finds
  /// its rows and reads the ids back as they were.
  @Test(arguments: StoreKind.available.filter { $0 != .sqlite }) func lookupsFindBothForms(_ kind: StoreKind) throws {
    defer { kind.drop("identifiers") }
    let store = try #require(try kind.make("identifiers", directory: NSTemporaryDirectory()) as? ClickHouseStore)
    guard case .read(let source, _) = try store.beginSource(path: "ids.pcap", size: 1, modified: 1) else {
      Issue.record("source not accepted")
      return
    }
    var records: [TaggedRequest] = []
    for (index, id) in Self.ids.enumerated() where !id.isEmpty {
      var request = RequestLog(
        startMicros: 1_000 + Int64(index), endMicros: 2_000, durationMicros: 1_000, applicationProtocol: .http,
        clientIP: IPAddress("10.0.0.1")!, clientPort: UInt16(40_000 + index), serverIP: IPAddress("10.0.0.2")!,
        serverPort: 80, flowID: UInt64(index))
      request.method = "GET"
      request.requestID = id
      request.traceID = id
      request.spanID = id
      records.append(TaggedRequest(request: request, tags: RecordTags()))
    }
    // A response-only X-Request-ID.
    var answered = records[0]
    answered.request.requestID = ""
    answered.request.traceID = ""
    answered.request.spanID = ""
    answered.request.responseRequestID = "fedcba9876543210fedcba9876543210"
    answered.request.startMicros = 5_000
    records.append(answered)
    try store.write(requests: records, source: source, ids: [:])
    try store.finishSource(source)
    // As a store before this change wrote it: the id as text.
    let old = "abcdefabcdefabcdefabcdefabcdef12"
    try store.execute(
      "INSERT INTO \(store.target.database).requests (source_id, start_us, method, x_request_id_req, trace_id) VALUES (1, 9000, 'GET', '\(old)', '\(old)')",
      on: store.target.url + "/?insert_distributed_sync=1")

    for id in Self.ids where !id.isEmpty {
      let found = try store.requests(xRequestID: id)
      #expect(found.map(\.xRequestID) == [id], "\(id)")
      #expect(try store.requests(traceID: id).map(\.traceID) == [id], "\(id)")
    }
    // Stored as bytes: 1 + 16 for the 32 digits, 1 + 8 for the span id's 16.
    #expect(
      try store.rows(
        "SELECT length(x_request_id_req), length(span_id) FROM \(store.target.database).requests WHERE start_us = 1000"
      ) == [["17", "17"]])
    #expect(
      try store.rows(
        "SELECT length(x_request_id_req) FROM \(store.target.database).requests WHERE start_us = 1001") == [["9"]])
    #expect(try store.requests(xRequestID: "fedcba9876543210fedcba9876543210").map(\.startMicros) == [5_000])
    #expect(try store.requests(xRequestID: old).map(\.xRequestID) == [old])
    #expect(try store.requests(traceID: old).map(\.traceID) == [old])
    #expect(try store.requests(xRequestID: "0123456789abcdef0123456789abcdee").isEmpty)
    // A new store computes a request's end from its start and duration instead of storing it.
    let db = store.target.database
    let table = kind == .clickhouseCluster ? "requests_local" : "requests"
    #expect(
      try store.rows(
        "SELECT default_kind FROM system.columns WHERE database = '\(db)' AND table = '\(table)' AND name = 'end_us'",
        on: kind == .clickhouseCluster ? store.target.shards[1] : store.target.url) == [["ALIAS"]])
    #expect(try store.rows("SELECT end_us FROM \(db).requests WHERE start_us = 1000") == [["2000"]])
  }
}
