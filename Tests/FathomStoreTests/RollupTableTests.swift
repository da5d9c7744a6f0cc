import FathomKube
import FathomRecords
import Foundation
import Testing

@testable import FathomStore

@Suite struct RollupTableTests {
  /// Keys from a small space (many equal keys, colliding slots) through several growths: the
  /// table agrees with a Dictionary on every value and keeps insertion order.
  @Test func agreesWithADictionaryThroughGrowth() {
    var table = RollupTable<FlowRollupKey, FlowRollup>()
    var model: [FlowRollupKey: UInt64] = [:]
    var order: [FlowRollupKey] = []
    var seed: UInt64 = 42
    for _ in 0..<20_000 {
      seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      let key = FlowRollupKey(
        intervalStart: Int64(seed >> 60), clientPod: Int32(seed >> 50 & 31), serverPod: Int32(seed >> 40 & 7),
        serverService: 1, observationPoint: UInt8(seed >> 30 & 1), l4Protocol: 6)
      let position = table.position(of: key) { FlowRollup() }
      table.values[position].bytes += 1
      if model[key] == nil { order.append(key) }
      model[key, default: 0] += 1
    }
    #expect(table.count == model.count && table.keys == order)
    for (key, count) in model { #expect(table[key]?.bytes == count) }
    let taken = table.take { $0.intervalStart < 8 }
    #expect(taken.count + table.count == model.count)
    #expect(taken.keys.allSatisfy { $0.intervalStart < 8 } && table.keys.allSatisfy { $0.intervalStart >= 8 })
    for (key, count) in model { #expect((taken[key] ?? table[key])?.bytes == count) }
  }

  /// SQLite inserts many rows per statement: counts that fill statements exactly, leave a
  /// remainder, or fit in one short statement all arrive whole, in order and with their values.
  @Test(arguments: [1, 22, 23, 24, 46, 1_000])
  func sqliteStoresEveryRowWhateverTheStatementBoundary(_ count: Int) throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-rows-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try SQLiteStore(path: directory.appendingPathComponent("rows.sqlite").path)
    guard case .read(let source, _) = try store.beginSource(path: "rows", size: 1, modified: 1) else {
      Issue.record("source not read")
      return
    }
    let requests = (0..<count).map { index in
      var request = RequestLog(
        startMicros: Int64(index), endMicros: Int64(index) + 7, durationMicros: 7, applicationProtocol: .http,
        clientIP: IPAddress("10.0.0.1")!, clientPort: UInt16(index % 60_000), serverIP: IPAddress("10.0.0.2")!,
        serverPort: 80, flowID: UInt64(index))
      request.resource = "/item/\(index)"
      request.code = index % 2 == 0 ? 200 : nil
      return TaggedRequest(request: request, tags: RecordTags())
    }
    try store.write(requests: requests[...], source: source, ids: [:])
    let rows = try store.query("SELECT start_us, resource, code FROM requests ORDER BY rowid").rows
    #expect(rows.count == count)
    #expect(rows.first == ["0", "/item/0", "200"])
    let last = count - 1
    #expect(rows.last == ["\(last)", "/item/\(last)", last % 2 == 0 ? "200" : "NULL"])
  }
}
