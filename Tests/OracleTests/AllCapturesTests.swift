import FathomCapture
import FathomPipeline
import Foundation
import Testing

/// Every capture in ../shared/testdata opens and is read to the end, or fails with a clear error;
/// none crashes or hangs. Files are recognised by content (some carry the wrong extension).
@Suite struct AllCapturesTests {
  static let captureMagics: Set<UInt32> = [
    0xA1B2_C3D4, 0xD4C3_B2A1, 0xA1B2_3C4D, 0x4D3C_B2A1, 0xA1B2_CD34, 0x34CD_B2A1, 0x0A0D_0D0A,
  ]

  static func captureFiles() -> [String] {
    guard let walker = FileManager.default.enumerator(atPath: TestData.root.path) else { return [] }
    var result: [String] = []
    for case let relative as String in walker {
      let path = TestData.root.appendingPathComponent(relative).path
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
        continue
      }
      guard let handle = FileHandle(forReadingAtPath: path) else { continue }
      let head = handle.readData(ofLength: 4)
      try? handle.close()
      guard head.count == 4 else { continue }
      let magic = head.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
      let named = [".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz"].contains { relative.hasSuffix($0) }
      if captureMagics.contains(magic) || captureMagics.contains(magic.byteSwapped) || named { result.append(relative) }
    }
    return result.sorted()
  }

  @Test func everyCaptureOpensOrFailsClearly() throws {
    try #require(TestData.available, "../shared/testdata is missing")
    let files = Self.captureFiles()
    #expect(files.count > 400, "expected the whole test corpus, found \(files.count) captures")
    var opened = 0
    var refused: [String] = []
    var packets: UInt64 = 0
    for relative in files {
      do {
        let (_, summary) = try FlowPipeline.flows(file: TestData.path(relative), options: TestData.wholeFlowOptions)
        opened += 1
        packets += summary.capture.packets
      } catch let error as CaptureError {
        // A refusal must say which file and why.
        #expect(error.description.contains(relative), "unclear error: \(error)")
        refused.append("\(relative): \(error)")
      }
    }
    print("captures: \(opened) read, \(refused.count) refused, \(packets) packets")
    for line in refused { print("  refused \(line)") }
    #expect(opened + refused.count == files.count)
  }
}
