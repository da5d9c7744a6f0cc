import FathomHTTP
import FathomKube
import FathomRecords
import Foundation
import Testing

@testable import FathomStore

/// The enum columns ClickHouse stores as `Enum8`: their codes are stored data, so the definitions
/// are pinned here; a store made before them converts, and one that lacks a name gains it.
@Suite struct ClickHouseEnumTests {
  /// Changing one of these changes what rows already stored mean: add cases with new codes only.
  @Test func codesArePinned() {
    #expect(
      ApplicationProtocol.clickHouseType == "Enum8('' = 0, 'http' = 1, 'http2' = 2, 'grpc' = 3, 'dns' = 4, 'redis' = 5)"
    )
    #expect(L4Protocol.clickHouseType == "Enum8('' = 0, 'tcp' = 1, 'udp' = 2, 'icmp' = 3, 'icmpv6' = 4)")
    #expect(
      ObservationPoint.clickHouseType
        == "Enum8('' = 0, 'c' = 1, 'c-nd' = 2, 's-nd' = 3, 's' = 4, 'local' = 5, 'rest' = 6)")
    #expect(
      EndpointIdentity.Kind.clickHouseType
        == "Enum8('' = 0, 'pod' = 1, 'node' = 2, 'service' = 3, 'node_port' = 4, 'external' = 5)")
    #expect(
      RequestStatus.clickHouseType
        == "Enum8('' = 0, 'ok' = 1, 'client_error' = 2, 'server_error' = 3, 'timeout' = 4, 'unknown' = 5, 'parse_failed' = 6)"
    )
    #expect(
      FlowStatus.clickHouseType == "Enum8('' = 0, 'ok' = 1, 'client_error' = 2, 'server_error' = 3, 'timeout' = 4)")
    #expect(
      CloseType.clickHouseType
        == "Enum8('' = 0, 'finish' = 1, 'client_rst' = 2, 'server_rst' = 3, 'timeout' = 4, 'client_syn_repeat' = 5, "
        + "'server_synack_repeat' = 6, 'server_reset' = 7, 'server_queue_lack' = 8, 'client_source_port_reuse' = 9, "
        + "'client_half_close' = 10, 'server_half_close' = 11, 'client_establish_reset' = 12, "
        + "'server_establish_reset' = 13, 'forced_report' = 14, 'in_progress' = 15, 'evicted' = 16, 'idle' = 17, "
        + "'icmp_unreachable' = 18)")
  }

  /// ClickHouse and SQLite spell every case the same, so queries are one text for both.
  @Test func storedNamesAreTheRecordsNames() {
    #expect(ObservationPoint.allCases.allSatisfy { $0.storedName.description == $0.rawValue })
    #expect(EndpointIdentity.Kind.allCases.allSatisfy { $0.storedName.description == $0.rawValue })
    #expect(CloseType.allCases.allSatisfy { $0.storedName.description == $0.rawValue })
    #expect(FlowStatus.allCases.allSatisfy { $0.storedName.description == $0.rawValue })
  }

  @Test func definitionsParseAndExtend() throws {
    let cases = ClickHouseEnum.cases(of: ObservationPoint.self)
    let parsed = try #require(ClickHouseEnum.parse(ObservationPoint.clickHouseType))
    #expect(parsed.map(\.name) == cases.map(\.name) && parsed.map(\.code) == cases.map(\.code))
    let quoted = try #require(ClickHouseEnum.parse("Enum8('it\\'s' = -3, 'a b' = 7)"))
    #expect(quoted.map(\.name) == ["it's", "a b"] && quoted.map(\.code) == [-3, 7])
    #expect(ClickHouseEnum.parse("String") == nil)
    #expect(ClickHouseEnum.parse("Enum8('a' = x)") == nil)
    #expect(ClickHouseEnum.parse("Enum8('a' = 1") == nil)

    // A table with every name (and more) needs nothing; one without some gains them.
    #expect(try ClickHouseEnum.extended(cases + [("future", 100)], toHold: cases) == nil)
    let union = try #require(try ClickHouseEnum.extended(Array(cases.prefix(3)) + [("future", 100)], toHold: cases))
    #expect(union.map(\.name) == cases.map(\.name) + ["future"])
    // A name with another code, or a code with another name: rows no conversion can keep.
    #expect(throws: ClickHouseEnum.Conflict.self) { try ClickHouseEnum.extended([("c", 9)], toHold: cases) }
    #expect(throws: ClickHouseEnum.Conflict.self) { try ClickHouseEnum.extended([("other", 1)], toHold: cases) }
  }

  /// One byte a row into an `Enum8` column; the name into a String column (an old table's
  /// sorting key); nil as the empty name.
  @Test func nativeLayoutOfEnumColumns() {
    var block = NativeBlock()
    block.configure([
      ("p", ObservationPoint.clickHouseType), ("q", "String"), ("a", ApplicationProtocol.clickHouseType),
    ])
    block.field(ObservationPoint.serverNode)
    block.field(ObservationPoint.serverNode)
    block.field(ApplicationProtocol?.none)
    block.field(ObservationPoint.server)
    block.field(ObservationPoint.rest)
    block.field(ApplicationProtocol?.some(.redis))
    var body = OutputBuffer()
    block.write(to: &body)
    var expected: [UInt8] = [3, 2]
    func header(_ name: String, _ type: String) {
      expected += [UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(type.utf8.count)] + Array(type.utf8)
    }
    header("p", ObservationPoint.clickHouseType)
    expected += [3, 4]
    header("q", "String")
    expected += [4] + Array("s-nd".utf8) + [4] + Array("rest".utf8)
    header("a", ApplicationProtocol.clickHouseType)
    expected += [0, 5]
    #expect(body.bytes == expected)
  }
}

/// A column the table computes (`ALIAS`) stays in the writers' order but is not sent.
@Test func computedColumnsAreNotSent() {
  var block = NativeBlock()
  block.configure([("a", "UInt16"), ("b", "ALIAS"), ("c", "String")])
  for row in 0..<2 {
    block.field(UInt64(row + 1))
    block.field(Int64(99))
    block.field("x")
  }
  var body = OutputBuffer()
  block.write(to: &body)
  let expected: [UInt8] =
    [2, 2] + [1] + Array("a".utf8) + [6] + Array("UInt16".utf8) + [1, 0, 2, 0] + [1] + Array("c".utf8) + [6]
    + Array("String".utf8) + [1, 0x78, 1, 0x78]
  #expect(body.bytes == expected)
}

/// Stores made before the enum columns (schema v2: every one a String) and stores whose enums
/// lack or contradict a name, against the real servers.
@Suite final class ClickHouseEnumMigrationTests {
  static let kinds = StoreKind.available.filter { $0 != .sqlite }

  /// Creates what schema v2 made: the same tables with every enum column a String.
  func makeVersion2(_ kind: StoreKind, _ name: String) throws -> ClickHouseStore.Target {
    let target = try #require(kind.clickHouseTarget(name))
    let db = target.database
    let cluster = target.cluster != nil
    let servers = cluster ? target.shards : [target.url]
    let suffix = cluster ? "_local" : ""
    for server in Set(servers + [target.url]) { try sql("CREATE DATABASE \(db)", on: server) }
    try sql(
      "CREATE TABLE \(db).schema_migrations (version UInt32, applied DateTime DEFAULT now()) ENGINE = TinyLog",
      on: target.url)
    try sql("INSERT INTO \(db).schema_migrations (version) VALUES (1), (2)", on: target.url)
    try sql(
      "CREATE TABLE \(db).sources (id UInt64, path String, size Int64, modified Int64, completed UInt8, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY id",
      on: target.url)
    try sql(
      "CREATE TABLE \(db).resources (id UInt64, kind String, namespace String, name String, labels String, detail String, workload String, valid_from Int64, valid_to Int64, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY id",
      on: target.url)
    for table in ClickHouseStore.insertTables {
      let columns = table.columns.map { ($0.0, $0.1.hasPrefix("Enum8(") ? "String" : $0.1) }
      for server in servers {
        let ddl =
          table.name.contains("rollup")
          ? "CREATE TABLE \(db).\(table.name)\(suffix) (\(columns.map { "\($0.0) \($0.1)" }.joined(separator: ", "))) ENGINE = MergeTree() PARTITION BY intDiv(interval_start, 14400) ORDER BY (server_service, interval_start)"
          : ClickHouseStore.recordTable(
            "\(db).\(table.name)\(suffix)", columns, order: table.sortingKey.joined(separator: ", "))
        try sql(ddl, on: server)
      }
      if let clusterName = target.cluster {
        try sql(
          "CREATE TABLE \(db).\(table.name) AS \(db).\(table.name)_local ENGINE = Distributed(\(clusterName), \(db), \(table.name)_local, rand())",
          on: target.url)
      }
    }
    return target
  }

  /// Runs a statement the way a v2 Fathom (or a user) would, apart from any store.
  @discardableResult func sql(_ text: String, on server: String) throws -> String {
    let response = try Array(text.utf8).withUnsafeBytes {
      try CurlClient.perform(CurlClient.Request(url: server, body: $0))
    }
    let body = String(decoding: response.body, as: UTF8.self)
    guard response.status == 200 else { throw ClickHouseStore.Failure(message: body) }
    return body.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  func types(_ store: ClickHouseStore, table: String, on server: String) throws -> [String: String] {
    var types: [String: String] = [:]
    for row in try store.rows(
      "SELECT name, type FROM system.columns WHERE database = '\(store.target.database)' AND table = '\(table)'",
      on: server) where row.count == 2
    {
      types[row[0]] = row[1]
    }
    return types
  }

  @Test(arguments: kinds) func aVersion2StoreConvertsAndKeepsItsRows(_ kind: StoreKind) throws {
    defer { kind.drop("enums_v2") }
    let target = try makeVersion2(kind, "enums_v2")
    let db = target.database
    // A row as v2 wrote it: names in String columns.
    try sql(
      """
      INSERT INTO \(db).requests (source_id, start_us, end_us, duration_us, protocol, observation_point, client_kind,
        server_kind, status, client_ip, method) VALUES (7, 1000, 2000, 1000, 'dns', 's', 'pod', 'service', 'timeout',
        '10.0.0.1', 'A')
      """, on: target.url + "/?insert_distributed_sync=1")
    let oldID = try sql("SELECT \(ClickHouseStore.requestIDExpression) FROM \(db).requests", on: target.url)

    let store = try ClickHouseStore(target)
    let places = target.cluster == nil ? [target.url] : target.shards
    for server in places {
      let requests = try types(store, table: target.cluster == nil ? "requests" : "requests_local", on: server)
      #expect(
        requests["status"] == RequestStatus.clickHouseType && requests["protocol"] == ApplicationProtocol.clickHouseType
      )
      #expect(requests["client_kind"] == EndpointIdentity.Kind.clickHouseType)
      // Part of the sorting key: 18.16 cannot convert it, so it stays a String and takes names.
      #expect(requests["observation_point"] == "String")
      let flows = try types(store, table: target.cluster == nil ? "flows" : "flows_local", on: server)
      #expect(
        flows["observation_point"] == ObservationPoint.clickHouseType && flows["close_type"] == CloseType.clickHouseType
      )
    }
    #expect(
      try types(store, table: "request_rollup_1s", on: target.url)["protocol"] == ApplicationProtocol.clickHouseType)
    #expect(try store.rows("SELECT max(version) FROM \(db).schema_migrations").first?.first == "3")
    // Made before v3: `end_us` stays stored, and inserts send it.
    #expect(
      try store.rows(
        "SELECT count() FROM system.columns WHERE database = '\(db)' AND table = 'requests' AND name = 'end_us' AND default_kind = ''"
      ) == [["1"]])

    // The old row reads as before, under the same id; new rows go into both kinds of column.
    let oldBits = try #require(UInt64(oldID))
    let before = try #require(try store.request(id: Int64(bitPattern: oldBits)))
    #expect(before.protocolName == "dns" && before.status == "timeout" && before.observationPoint == "s")
    guard case .read(let source, _) = try store.beginSource(path: "enums.pcap", size: 1, modified: 1) else {
      Issue.record("source not accepted")
      return
    }
    var request = RequestLog(
      startMicros: 3_000, endMicros: 4_000, durationMicros: 1_000, applicationProtocol: .dns,
      clientIP: IPAddress("10.0.0.1")!, clientPort: 1, serverIP: IPAddress("10.0.0.2")!, serverPort: 53, flowID: 1)
    request.method = "A"
    request.status = .serverError
    var tags = RecordTags()
    tags.observationPoint = .server
    tags.client = EndpointIdentity(kind: .pod)
    let tagged = TaggedRequest(request: request, tags: tags)
    try store.write(requests: [tagged], source: source, ids: [:])
    var flow = FlowLog(
      startMicros: 3_000, endMicros: 4_000, l4Protocol: .udp, clientIP: request.clientIP, clientPort: 1,
      serverIP: request.serverIP, serverPort: 53)
    flow.closeType = .icmpUnreachable
    try store.write(flows: [TaggedFlow(flow: flow, tags: tags)], source: source, ids: [:])
    var rollups = RollupBuilder()
    rollups.add(tagged)
    try store.write(rollups: rollups, source: source, ids: [:])
    try store.finishSource(source)
    let both = try store.requests(protocolName: "dns", observationPoint: "s", from: 0, to: 10_000)
    #expect(both.map(\.status).sorted() == ["server_error", "timeout"])
    #expect(try store.requests(protocolName: "nonsense", observationPoint: "s", from: 0, to: 10_000).isEmpty)
    #expect(
      try store.rows("SELECT close_type, protocol, client_kind FROM \(db).flows") == [
        ["icmp_unreachable", "udp", "pod"]
      ])
    #expect(
      try store.rows("SELECT protocol, observation_point, requests FROM \(db).request_rollup_1s") == [
        ["dns", "s", "1"]
      ])
    #expect(try store.rows("SELECT end_us FROM \(db).requests WHERE start_us = 3000") == [["4000"]])
  }

  /// A table whose enum lacks a name this build writes gains it when a store opens; one that
  /// gives a name another code is a clear error, not rows that read as something else.
  @Test func enumsGainNewNamesAndRefuseOtherCodes() throws {
    guard Self.kinds.contains(.clickhouse) else { return }
    let kind = StoreKind.clickhouse
    defer { kind.drop("enums_extend") }
    let store = try #require(try kind.make("enums_extend", directory: NSTemporaryDirectory()) as? ClickHouseStore)
    let db = store.target.database
    // As if written by a build before `parse_failed` and with a name of a later one.
    try store.execute(
      "ALTER TABLE \(db).requests MODIFY COLUMN status Enum8('' = 0, 'ok' = 1, 'client_error' = 2, 'server_error' = 3, 'timeout' = 4, 'unknown' = 5, 'later' = 100)"
    )
    _ = try kind.make("enums_extend", directory: NSTemporaryDirectory())
    let status = try types(store, table: "requests", on: store.target.url)["status"]
    #expect(status == RequestStatus.clickHouseType.dropLast() + ", 'later' = 100)")

    try store.execute("ALTER TABLE \(db).flows MODIFY COLUMN status Enum8('' = 0, 'fine' = 1)")
    let failure = #expect(throws: ClickHouseStore.Failure.self) {
      _ = try kind.make("enums_extend", directory: NSTemporaryDirectory())
    }
    #expect(failure?.message.contains("flows.status") == true && failure?.message.contains("'fine'") == true)
  }
}
