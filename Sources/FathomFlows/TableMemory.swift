import CMemory

/// Memory for the per-source tables looked up at random on every packet (flow entries and
/// slots, protocol sessions): on transparent huge pages where the system allows it. Measured on
/// the bench capture, huge pages under these tables and the heap took 5–10% off `fathom
/// requests` (TLB misses and page faults of a table touched at random).
public enum TableMemory {
  /// Uninitialised memory for `count` elements; free it with `free`.
  public static func allocate<Element>(_: Element.Type, count: Int) -> UnsafeMutablePointer<Element> {
    let bytes = MemoryLayout<Element>.stride * max(count, 1)
    guard let raw = fathom_allocate_table(bytes) else { fatalError("out of memory for a table of \(bytes) bytes") }
    return raw.bindMemory(to: Element.self, capacity: max(count, 1))
  }

  /// Frees memory from `allocate` (its elements deinitialised first by the owner).
  public static func free<Element>(_ table: UnsafeMutablePointer<Element>) {
    fathom_free_table(UnsafeMutableRawPointer(table))
  }
}
