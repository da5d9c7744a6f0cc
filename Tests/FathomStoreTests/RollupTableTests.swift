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
  }
}
