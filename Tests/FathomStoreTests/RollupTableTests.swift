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
    func counts(_ table: RollupTable<FlowRollupKey, FlowRollup>) -> [FlowRollupKey: UInt64] {
      Dictionary(uniqueKeysWithValues: zip(table.keys, table.values.map(\.bytes)))
    }
    #expect(table.count == model.count && table.keys == order)
    #expect(counts(table) == model)
    let taken = table.take { $0.intervalStart < 8 }
    #expect(taken.count + table.count == model.count)
    #expect(taken.keys.allSatisfy { $0.intervalStart < 8 } && table.keys.allSatisfy { $0.intervalStart >= 8 })
    #expect(counts(taken).merging(counts(table)) { $0 + $1 } == model)
    #expect(table.keys == order.filter { $0.intervalStart >= 8 })
  }

  /// Rollups that own storage (histograms) are moved between tables whole: taking twice and
  /// adding after each take leaves every histogram with its own samples, and both tables find
  /// their keys.
  @Test func takeMovesHistograms() {
    var table = RollupTable<RequestRollupKey, RequestRollup>()
    func key(_ interval: Int64, _ pod: Int32) -> RequestRollupKey {
      RequestRollupKey(
        intervalStart: interval, clientPod: pod, clientService: 0, serverPod: 1, serverService: 2, protocolCode: 0,
        observationPoint: 0, endpoint: 0)
    }
    for interval in Int64(0)..<300 {
      for pod in Int32(0)..<5 {
        let position = table.position(of: key(interval, pod)) { RequestRollup() }
        for sample in 0...Int64(pod) { table.values[position].histogram.add(interval * 10 + sample) }
      }
    }
    let early = table.take { $0.intervalStart < 100 }
    let middle = table.take { $0.intervalStart < 200 }
    for pod in Int32(0)..<5 {
      let position = table.position(of: key(299, pod)) { RequestRollup() }
      table.values[position].histogram.add(1)
    }
    #expect(early.count == 500 && middle.count == 500 && table.count == 500)
    for (part, range, extra) in [(early, 0..<100, 0), (middle, 100..<200, 0), (table, 200..<300, 1)] {
      for (key, rollup) in part {
        #expect(range.contains(Int(key.intervalStart)))
        let expected = UInt64(key.clientPod) + 1 + UInt64(key.intervalStart == 299 ? extra : 0)
        #expect(rollup.histogram.total == expected, "\(key)")
      }
    }
    var copy = middle
    #expect(copy.position(of: key(150, 3)) { RequestRollup() } < 500 && copy.count == 500)
  }
}
