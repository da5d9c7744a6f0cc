import FathomKube
import FathomRecords
import FathomStore
import FathomTracing
import Foundation

/// Ingest and query speed of a store on synthetic tagged requests (`fathom store-bench`, part of
/// `make bench`): 20 Services × 5 pods, one hour of requests, 1% server errors, latencies spread
/// over three decades. Lookup keys are random, as real ones are: each request carries TCP
/// sequence numbers and an X-Request-ID of 32 hex digits (nginx's `$request_id`), half of them a
/// W3C trace and span id. Tagging is not timed (it is a separate stage); writing the records,
/// building and writing their rollups, and completing the source (until every record is
/// stored) is.
public enum StoreBenchmark {
  public struct Result: Sendable {
    public var records: Int
    public var ingestSeconds: Double
    public var redMillis: Double
    public var red: AnalysisSummary.ServiceRow?
    /// Assembling the trace of one request by its X-Request-ID (stores that are a TraceSource).
    public var traceMillis: Double?
    /// CPU time of this process (every thread) while ingesting: the client's share, apart from
    /// a server's (ClickHouse shares this machine's cores in `make bench`).
    public var ingestCPUSeconds: Double
    public var recordsPerSecond: Double { Double(records) / ingestSeconds }
  }

  public static func run(store: RecordStore, records: Int, progress: (String) -> Void) throws -> Result {
    let base: Int64 = 1_764_000_000_000_000 - 1_764_000_000_000_000 % 3_600_000_000
    var resources: [Resource] = []
    for service in 0..<20 {
      resources.append(
        Resource(
          id: Int32(service + 1), kind: .service, namespace: "bench", name: "service-\(service)", labels: [:],
          detail: "ClusterIP", workload: "", validFromMicros: base, validToMicros: base + 3_600_000_000))
    }
    for pod in 0..<100 {
      resources.append(
        Resource(
          id: Int32(21 + pod), kind: .pod, namespace: "bench", name: "service-\(pod / 5)-pod-\(pod % 5)",
          labels: ["app": "service-\(pod / 5)"], detail: "node-\(pod % 4)", workload: "Deployment/service-\(pod / 5)",
          validFromMicros: base, validToMicros: base + 3_600_000_000))
    }
    let ids = try store.register(resources)
    guard
      case .read(let source, _) = try store.beginSource(
        path: "store-bench-\(UUID().uuidString)", size: Int64(records), modified: 0)
    else { throw KubeDecoder.Failure(message: "store-bench: source not accepted") }

    // Every batch is made before the clock starts, so the time is the store's alone and no
    // untimed work overlaps a store's background sending.
    let batch = 10_000
    var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
    let step = max(1, 3_600_000_000 / Int64(records))
    var batches: [[TaggedRequest]] = []
    var tracedID = ""
    for first in stride(from: 0, to: records, by: batch) {
      var requests: [TaggedRequest] = []
      requests.reserveCapacity(min(batch, records - first))
      for index in first..<min(first + batch, records) {
        seed = seed &* 6_364_136_223_846_793_005 &+ 1442_695_040_888_963_407
        let pod = Int32(seed >> 33) % 100
        let duration = Int64(100 + (seed >> 40) % 1000) * (1 + Int64((seed >> 20) % 100 == 0 ? 100 : 0))
        var request = RequestLog(
          startMicros: base + Int64(index) * step, endMicros: base + Int64(index) * step + duration,
          durationMicros: duration,
          applicationProtocol: .http, clientIP: IPAddress(ipv4: 0x0af4_0106),
          clientPort: UInt16(truncatingIfNeeded: index),
          serverIP: IPAddress(ipv4: 0x0af4_0200 | UInt32(pod)), serverPort: 8080, flowID: UInt64(index))
        request.method = "GET"
        request.resource = "/api/items/\(index % 50)"
        request.endpoint = "/api/items"
        request.domain = "service-\(pod / 5)"
        request.status = (seed >> 50) % 100 == 0 ? .serverError : .ok
        request.code = request.status == .ok ? 200 : 503
        request.requestTCPSequence = UInt32(truncatingIfNeeded: seed >> 7)
        request.responseTCPSequence = UInt32(truncatingIfNeeded: seed >> 29)
        request.requestID = randomHex(&seed, digits: 32)
        if index == records / 2 { tracedID = request.requestID }
        if index % 2 == 0 {
          request.traceID = randomHex(&seed, digits: 32)
          request.spanID = randomHex(&seed, digits: 16)
        }
        var tags = RecordTags()
        tags.observationPoint = .server
        tags.server = EndpointIdentity(kind: .pod, pod: 21 + pod, service: 1 + pod / 5)
        tags.client = EndpointIdentity(kind: .pod, pod: 21 + (pod + 7) % 100)
        requests.append(TaggedRequest(request: request, tags: tags))
      }
      batches.append(requests)
    }

    let start = Date()
    let startCPU = processCPUSeconds()
    // Rollups as `fathom analyze` writes them: closed intervals while records arrive, the rest at
    // the end.
    var rollups = SourceRollups(source: source)
    var written = 0
    for requests in batches {
      try store.write(requests: requests, source: source, ids: ids)
      for index in requests.indices { rollups.add(requests[index]) }
      try rollups.writeClosed(to: store, ids: ids)
      written += requests.count
      if written % 1_000_000 == 0 || written == records {
        progress("\(written) records, \(Int(Double(written) / Date().timeIntervalSince(start))) records/s")
      }
    }
    try rollups.writeAll(to: store, ids: ids)
    // Complete means stored: a store that sends in the background (ClickHouse) finishes here.
    try store.finishSource(source)
    let ingest = Date().timeIntervalSince(start)
    let ingestCPU = processCPUSeconds() - startCPU
    let queryStart = Date()
    let red = try store.red(namespace: "bench", name: "service-3", fromMicros: base, toMicros: base + 3_600_000_000)
    let redMillis = Date().timeIntervalSince(queryStart) * 1000
    var traceMillis: Double?
    if let source = store as? TraceSource {
      let traceStart = Date()
      // A lookup that finds nothing is fast and wrong: the bench fails instead of timing it.
      guard try TraceAssembler(source: source).assemble(xRequestID: tracedID) != nil else {
        throw KubeDecoder.Failure(message: "store-bench: the request with X-Request-ID \(tracedID) was not found")
      }
      traceMillis = Date().timeIntervalSince(traceStart) * 1000
    }
    return Result(
      records: records, ingestSeconds: ingest, redMillis: redMillis, red: red, traceMillis: traceMillis,
      ingestCPUSeconds: ingestCPU)
  }

  /// User and system CPU time of the process so far.
  static func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
  }

  /// `digits` lowercase hex digits from the generator (64 bits per step).
  static func randomHex(_ seed: inout UInt64, digits: Int) -> String {
    let hex = Array("0123456789abcdef".utf8)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(digits)
    var word: UInt64 = 0
    for index in 0..<digits {
      if index % 16 == 0 {
        seed = seed &* 6_364_136_223_846_793_005 &+ 1442_695_040_888_963_407
        word = seed ^ (seed >> 29)
      }
      bytes.append(hex[Int(word & 15)])
      word >>= 4
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}
