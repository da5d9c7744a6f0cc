import FathomFlows
import FathomProtocols
import FathomWire

#if canImport(Glibc)
  import Glibc
#endif

// libFuzzer entry point: each input is one frame, its first byte choosing the link type; frames go
// through the decoder, the flow table and the protocol parsers (HTTP/1, DNS, Redis), so payloads
// that look like those protocols exercise them.
// `make fuzz` builds this with -sanitize=fuzzer -DFUZZING (libFuzzer supplies main); the plain
// build replays inputs given as file arguments, which is how a crash input is reproduced.

nonisolated(unsafe) var decoder = PacketDecoder()
nonisolated(unsafe) var meter = FlowMeter()
nonisolated(unsafe) var requests = RequestMeter()
nonisolated(unsafe) var packet = DecodedPacket()
nonisolated(unsafe) var clock: Int64 = 0
let linkTypes: [UInt32] = [0, 1, 9, 101, 105, 108, 113, 127, 228, 229, 239, 276]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  guard size > 0 else { return 0 }
  let linkType = linkTypes[Int(data[0]) % linkTypes.count]
  let frame = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
  clock += 1_000_000
  if decoder.decode(frame, linkType: linkType, wireLength: size - 1, timestampNanos: clock, into: &packet) == .transport
  {
    let context = meter.process(packet, capturePoint: 0)
    var ended = meter.drain()
    requests.annotate(&ended)
    requests.process(packet, context: context, capturePoint: 0)
    _ = requests.drain()
  }
  return 0
}

#if FUZZING
  // SwiftPM links executables with `main` aliased to `<module>_main`; hand control to libFuzzer's
  // driver from there.
  @_silgen_name("LLVMFuzzerRunDriver")
  func libFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32
  ) -> Int32

  @_cdecl("FathomDecodeFuzz_main")
  func fuzzMain(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
  ) -> Int32 {
    var count = argc
    var arguments = argv
    return libFuzzerRunDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
  }
#else
  @main
  enum ReplayInputs {
    static func main() {
      for path in CommandLine.arguments.dropFirst() {
        guard let file = fopen(path, "rb") else {
          print("\(path): cannot open")
          continue
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
          let read = fread(&chunk, 1, chunk.count, file)
          if read <= 0 { break }
          bytes.append(contentsOf: chunk[0..<read])
        }
        fclose(file)
        _ = bytes.withUnsafeBufferPointer { fuzzOneInput($0.baseAddress!, $0.count) }
        print("\(path): decoded without a crash")
      }
    }
  }
#endif
