import FathomKube
import FathomRecords
import Testing

@testable import FathomAnalyze

/// The DNAT linking window: the same connection before DNAT (to a Service) and after (to a pod),
/// seen on two captures, is linked both ways while both are held; what cannot link is not held.
@Suite struct DNATLinkerTests {
  func request(
    server: EndpointIdentity.Kind, startMicros: Int64, port: UInt16 = 40000, sequence: UInt32 = 7
  ) -> TaggedRequest {
    var request = RequestLog(
      startMicros: startMicros, endMicros: startMicros + 1000, durationMicros: 1000, applicationProtocol: .http,
      clientIP: IPAddress("10.244.1.6")!, clientPort: port, serverIP: IPAddress("10.96.0.20")!, serverPort: 80,
      flowID: 1)
    request.requestTCPSequence = sequence
    var tags = RecordTags()
    switch server {
    case .service: tags.server = EndpointIdentity(kind: .service, service: 5)
    case .pod: tags.server = EndpointIdentity(kind: .pod, pod: 9, service: 5)
    default: tags.server = EndpointIdentity(kind: server)
    }
    return TaggedRequest(request: request, tags: tags)
  }

  func drain(_ linker: inout DNATLinker<TaggedRequest>, before mark: Int64) -> [(Int, TaggedRequest)] {
    var out: [(Int, TaggedRequest)] = []
    linker.release(before: mark) { out.append(($0, $1)) }
    return out
  }

  @Test func partnersLinkBothWaysAndLeaveOnlyPastTheWatermark() {
    var linker = DNATLinker<TaggedRequest>.requests()
    linker.add(request(server: .service, startMicros: 1_000_000), source: 0, stamp: 10)
    linker.add(request(server: .pod, startMicros: 1_500_000), source: 1, stamp: 20)
    #expect(drain(&linker, before: 10).isEmpty)
    let first = drain(&linker, before: 11)
    #expect(first.count == 1 && first[0].0 == 0 && first[0].1.tags.answeredBy == 9)
    let second = drain(&linker, before: 21)
    #expect(second.count == 1 && second[0].1.tags.requestedService == 5)
    #expect(linker.count == 0)
  }

  @Test func whatCannotLinkIsNotHeldAndReleasedRecordsDoNotLink() {
    var linker = DNATLinker<TaggedRequest>.requests()
    linker.add(request(server: .external, startMicros: 1_000_000), source: 0, stamp: 100)
    #expect(drain(&linker, before: .min).count == 1)  // handed over at once
    linker.add(request(server: .service, startMicros: 1_000_000), source: 0, stamp: 10)
    #expect(drain(&linker, before: 11).first?.1.tags.answeredBy == 0)
    // Its partner comes after it left the window: not linked (the window must cover the skew).
    linker.add(request(server: .pod, startMicros: 1_000_000), source: 1, stamp: 12)
    #expect(drain(&linker, before: 13).first?.1.tags.requestedService == 0)
  }

  @Test func keepAliveRequestsAndDistantStartsStayApart() {
    var linker = DNATLinker<TaggedRequest>.requests()
    linker.add(request(server: .service, startMicros: 1_000_000, sequence: 1), source: 0, stamp: 1)
    linker.add(request(server: .pod, startMicros: 1_000_000, sequence: 2), source: 1, stamp: 1)
    linker.add(request(server: .pod, startMicros: 9_000_000, sequence: 1), source: 1, stamp: 1)
    var released: [TaggedRequest] = []
    linker.releaseAll { released.append($1) }
    #expect(released.count == 3 && released.allSatisfy { $0.tags.answeredBy == 0 && $0.tags.requestedService == 0 })
  }

  /// Many records through the chunked store: all come out once, in order, links intact.
  @Test func manyRecordsComeOutOnceInOrder() {
    var linker = DNATLinker<TaggedRequest>.requests()
    var released: [TaggedRequest] = []
    for index in 0..<20_000 {
      let start = Int64(index) * 10_000_000
      linker.add(request(server: .service, startMicros: start, port: UInt16(index % 60_000)), source: 0, stamp: start)
      linker.add(request(server: .pod, startMicros: start, port: UInt16(index % 60_000)), source: 1, stamp: start)
      if index % 1000 == 999 { linker.release(before: start - 50_000_000) { released.append($1) } }
    }
    linker.releaseAll { released.append($1) }
    #expect(released.count == 40_000 && linker.count == 0)
    #expect(zip(released, released.dropFirst()).allSatisfy { $0.request.startMicros <= $1.request.startMicros })
    #expect(released.allSatisfy { $0.tags.answeredBy == 9 || $0.tags.requestedService == 5 })
  }
}
