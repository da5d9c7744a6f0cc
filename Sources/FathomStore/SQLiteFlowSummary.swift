import GRDB

extension SQLiteStore {
  /// The flow summary counted in Swift over the raw columns in one scan: SQLite's GROUP BY
  /// sorts, which took 0.9 s for the counts alone on the 358k flows of a 10-minute lab
  /// recording. Matching is by integer keys and hashes of the address texts; strings are made
  /// once per group, not per flow.
  public func flowSummary(from: Int64, to: Int64) throws -> FlowSummary {
    /// One connection's packets at a node's uplink (outer) and at its pod's interface (inner).
    struct Leg {
      let node: Int64
      let inbound: Bool
      var outerC2S = 0
      var outerS2C = 0
      var innerC2S = 0
      var innerS2C = 0
      var outerFlows = 0
      var innerFlows = 0

      mutating func add(outer: Bool, c2s: Int, s2c: Int) {
        if outer {
          (outerC2S, outerS2C, outerFlows) = (outerC2S + c2s, outerS2C + s2c, outerFlows + 1)
        } else {
          (innerC2S, innerS2C, innerFlows) = (innerC2S + c2s, innerS2C + s2c, innerFlows + 1)
        }
      }
    }
    // Both tables key on a fingerprint of the row's key fields instead of hashing each field
    // (that doubled the scan's time): a window holds a few hundred thousand connections, and
    // two of them sharing a 64-bit fingerprint (odds below 1 in 10^8) would be counted as one.
    var counts: [UInt64: FlowCount] = [:]
    var legs: [UInt64: Leg] = [:]
    // A window over most of the store reads the table in order rather than through the time
    // index (twice as fast for a whole recording); a short one through the index.
    let span = try pool.read { db in
      try Row.fetchOne(db, sql: "SELECT MIN(start_us), MAX(start_us) FROM flows").flatMap { row -> Int64? in
        guard let first: Int64 = row[0], let last: Int64 = row[1] else { return nil }
        return last - first
      }
    }
    let wide = span.map { (to - from) * 2 >= $0 } ?? true
    let sql =
      "SELECT \(DiagnosisSQL.flowColumns) FROM flows \(wide ? "NOT INDEXED" : "") WHERE start_us <= ? AND end_us >= ?"
    let names = try scan(sql, [to, from]) { columns, names in
      let synRetransmissions = columns.int(18)
      let c2s = columns.int(15)
      let s2c = columns.int(16)
      let node = columns.int64(2)
      var key = Fingerprint()
      key.add(node)
      key.add(columns.textHash(3))
      key.add(columns.textHash(4))
      key.add(columns.textHash(9))
      key.add(columns.textHash(10))
      key.add(columns.textHash(14))
      key.add(columns.int64(11))
      key.add(columns.int64(13))
      key.add(UInt64(synRetransmissions > 0 ? 1 : 0))
      let retransmissions = columns.int(17) + synRetransmissions
      // One hash lookup per flow for each table.
      if let index = counts.index(forKey: key.value) {
        counts.values[index].flows += 1
        counts.values[index].packets += c2s + s2c
        counts.values[index].retransmissions += retransmissions
      } else {
        counts[key.value] = FlowCount(
          node: names.node(node), interface: columns.text(3), observationPoint: columns.text(4),
          clientKind: columns.text(9), serverKind: columns.text(10), clientPod: names.name(columns.int64(11)),
          serverService: names.name(columns.int64(13)), closeType: columns.text(14),
          synRetransmitted: synRetransmissions > 0, flows: 1, packets: c2s + s2c, retransmissions: retransmissions)
      }
      let outer: Bool
      let inbound: Bool
      if columns.textEquals(4, "s-nd") {
        (outer, inbound) = (true, true)
      } else if columns.textEquals(4, "s") {
        (outer, inbound) = (false, true)
      } else if columns.textEquals(4, "c-nd") {
        (outer, inbound) = (true, false)
      } else if columns.textEquals(4, "c") {
        (outer, inbound) = (false, false)
      } else {
        return
      }
      let start = columns.int64(0)
      // One connection at a node: inbound by both ends, outbound by the client (the uplink sees
      // the pod behind a ClusterIP), and the second it started in (a reused port is another).
      var leg = Fingerprint()
      leg.add(node)
      leg.add(UInt64(inbound ? 1 : 2))
      leg.add(columns.textHash(5))
      leg.add(columns.int64(6))
      if inbound {
        leg.add(columns.textHash(7))
        leg.add(columns.int64(8))
      }
      leg.add(start - start % 1_000_000)
      legs[leg.value, default: Leg(node: node, inbound: inbound)].add(outer: outer, c2s: c2s, s2c: s2c)
    }
    var loss: [Int64: (lost: Int, packets: Int)] = [:]
    // Only legs with as many flows on each side: a client port reused within the second for a
    // connection that never crossed the uplink makes the pairing ambiguous.
    for leg in legs.values where leg.outerFlows > 0 && leg.outerFlows == leg.innerFlows {
      let lost =
        leg.inbound
        ? max(leg.outerC2S - leg.innerC2S, 0) + max(leg.innerS2C - leg.outerS2C, 0)
        : max(leg.innerC2S - leg.outerC2S, 0) + max(leg.outerS2C - leg.innerS2C, 0)
      loss[leg.node, default: (0, 0)].lost += lost
      loss[leg.node, default: (0, 0)].packets += leg.outerC2S + leg.outerS2C
    }
    let pathLoss = loss.map {
      NodePathLoss(node: names.node($0.key), lostPackets: $0.value.lost, packets: $0.value.packets)
    }
    return FlowSummary(counts: Array(counts.values), pathLoss: pathLoss)
  }
}

/// A 64-bit fingerprint of several fields, mixed as they are added.
struct Fingerprint {
  private(set) var value: UInt64 = 0x9e37_79b9_7f4a_7c15

  mutating func add(_ field: UInt64) {
    value = (value ^ field) &* 0xff51_afd7_ed55_8ccd
    value ^= value >> 33
  }

  mutating func add(_ field: Int64) { add(UInt64(bitPattern: field)) }
}
