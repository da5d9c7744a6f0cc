import FathomPipeline
import FathomRecords
import Testing

/// DeepFlow's protocol-parser cases (flow_generator/{dns,http,redis}, HTTP/1, HTTP/2 and gRPC): the
/// parsed messages of each
/// `.result` golden file and the check_perf figures (request/response/error counts, rrt in µs)
/// of the upstream tests, as listed in the testdata MANIFEST.
@Suite struct DeepFlowProtocolTests {
  static let directory = "deepflow/agent/resources/test/flow_generator"

  struct Expected: Sendable, CustomStringConvertible {
    var method: String
    var resource: String
    var status: RequestStatus
    var code: Int32?
    /// DeepFlow's rrt (response time − request time); nil when the upstream test does not state it.
    var rrt: Int64?
    var description: String {
      "\(method) \(resource) \(status) \(code.map(String.init) ?? "-") \(rrt.map(String.init) ?? "?")"
    }
  }

  static let cases: [(String, [Expected])] = [
    // dns.rs::check_perf: req=2 resp=2 err_client=1 rrt_sum=181558 rrt_max=176754.
    (
      "dns/dns.pcap",
      [
        Expected(method: "A", resource: "guoyongxin.com", status: .clientError, code: 3, rrt: 176_754),
        Expected(method: "A", resource: "yunshan.net.cn", status: .ok, code: 0, rrt: 4_804),
      ]
    ),
    // Two queries in one TCP segment; per-message 294 µs and 355 µs.
    (
      "dns/dns-tcp-multi.pcap",
      [
        Expected(
          method: "A", resource: "details.deepflow-ebpf-istio-demo.svc.cluster.local", status: .ok, code: 0, rrt: 294),
        Expected(
          method: "AAAA", resource: "details.deepflow-ebpf-istio-demo.svc.cluster.local", status: .ok, code: 0, rrt: 355
        ),
      ]
    ),
    // A pod's lookups over TCP, with a search-path NXDOMAIN (…monitor.svc.cluster.local).
    (
      "dns/nxdomain.pcap",
      [
        Expected(method: "AAAA", resource: "prod-fcdt-e02.int.frontnode.net", status: .clientError, code: 3, rrt: 385),
        Expected(method: "A", resource: "dockerauth-ee-vpc.cn-shenzhen.aliyuncs.com", status: .ok, code: 0, rrt: nil),
        Expected(
          method: "AAAA", resource: "registry.yingmi-inc.com.monitor.svc.cluster.local", status: .clientError, code: 3,
          rrt: nil),
      ]
    ),
    (
      "dns/a-and-ns.pcap",
      [
        Expected(method: "A", resource: "aa.bb.cc.ddd.eee.fff.zqytest.com", status: .ok, code: 0, rrt: nil),
        Expected(method: "AAAA", resource: "aa.bb.cc.ddd.eee.fff.zqytest.com", status: .ok, code: 0, rrt: nil),
      ]
    ),
    (
      "dns/not-handled-qtype.pcap",
      [
        Expected(
          method: "SRV", resource: "_PORT0._tcp.deepflow-byconity-server.deepflow.svc.cluster.local", status: .ok,
          code: 0, rrt: nil)
      ]
    ),
    // http.rs::check_perf: req=1 resp=1 rrt=84051.
    (
      "http/httpv1.pcap", [Expected(method: "POST", resource: "/query?1590632942", status: .ok, code: 200, rrt: 84_051)]
    ),
    // The request's header end was not captured; the response still pairs with it.
    (
      "http/client-ip.pcap",
      [
        Expected(
          method: "POST",
          resource: "/biz-inquiry-bff/bff/v1/common/check/polymerization?channel=webportal&terminalType=bff",
          status: .ok, code: 200, rrt: nil)
      ]
    ),
    // Envoy sidecar to a bookinfo pod; only the status line of the answer was captured.
    ("http/istio-tcp-frag.pcap", [Expected(method: "GET", resource: "/productpage", status: .ok, code: 200, rrt: nil)]),
    // HTTP/2 and gRPC. h2c_ascii: http.rs::check_perf req=1 resp=1 rrt=2023.
    (
      "http/h2c_ascii.pcap",
      [Expected(method: "POST", resource: "/hipstershop.CartService/GetCart", status: .ok, code: 0, rrt: 2_023)]
    ),
    (
      "http/grpc-unary.pcap",
      [Expected(method: "POST", resource: "/agent.Synchronizer/Sync", status: .ok, code: 200, rrt: nil)]
    ),
    // The answer was not captured.
    (
      "http/grpc-segmented.pcap",
      [Expected(method: "POST", resource: "/agent.Synchronizer/Push", status: .unknown, code: nil, rrt: nil)]
    ),
    (
      "http/grpc-service-name.pcap",
      [
        Expected(method: "POST", resource: "/StreamingService/ClientStreamRPC", status: .ok, code: 0, rrt: nil)
      ]
    ),
    // Captures that began mid-connection: HPACK entries from before are unknown, the rest is read.
    ("http/grpc-unknown.pcap", [Expected(method: "POST", resource: "", status: .ok, code: 200, rrt: nil)]),
    (
      "http/http2-multi.pcap",
      [
        Expected(method: "POST", resource: "", status: .ok, code: 200, rrt: nil),
        Expected(method: "POST", resource: "", status: .ok, code: 200, rrt: nil),
      ]
    ),
    ("http/httpv2-stream-id.pcap", [Expected(method: "POST", resource: "", status: .unknown, code: nil, rrt: nil)]),
    // Server streaming: DeepFlow counts each message (req=2 resp=5, rrt to the stream's end,
    // 2506326 µs); Fathom reports the call once, with rrt to the first response byte.
    (
      "http/grpc-server-stream.pcap",
      [
        Expected(
          method: "POST", resource: "/timeseriesquery.TimeSeriesQueryService/ServerStreamQuery", status: .ok, code: 200,
          rrt: nil)
      ]
    ),
    // redis.rs::check_perf: req=1 resp=1 err_server=1 rrt=73.
    ("redis/redis-error.pcap", [Expected(method: "GET", resource: "abcd", status: .serverError, code: nil, rrt: 73)]),
    // redis.rs::check_perf: req=1 resp=1 rrt=1209.
    ("redis/redis-debug.pcap", [Expected(method: "LRANGE", resource: "mylist", status: .ok, code: nil, rrt: 1_209)]),
  ]

  @Test(arguments: cases)
  func parsedMessagesMatch(file: String, expected: [Expected]) throws {
    try #require(TestData.available)
    let (requests, _, _) = try FlowPipeline.requests(file: TestData.path("\(Self.directory)/\(file)"))
    let ours = requests.map {
      Expected(method: $0.method, resource: $0.resource, status: $0.status, code: $0.code, rrt: $0.durationMicros)
    }
    #expect(ours.count == expected.count, "\(file): \(ours)")
    for (mine, theirs) in zip(
      ours.sorted { $0.description < $1.description }, expected.sorted { $0.description < $1.description })
    {
      #expect(mine.method == theirs.method && mine.resource == theirs.resource, "\(file): \(mine) vs \(theirs)")
      #expect(mine.status == theirs.status && mine.code == theirs.code, "\(file): \(mine) vs \(theirs)")
      if let rrt = theirs.rrt { #expect(mine.rrt == rrt, "\(file): \(mine) vs \(theirs)") }
    }
  }

  /// redis.rs::check_perf on redis.pcap: req=10 resp=10 rrt_sum=592 rrt_max=96.
  @Test func redisPerformanceFigures() throws {
    try #require(TestData.available)
    let (requests, flows, _) = try FlowPipeline.requests(file: TestData.path("\(Self.directory)/redis/redis.pcap"))
    #expect(requests.count == 10)
    #expect(requests.allSatisfy { $0.status == .ok && $0.responseTCPSequence != nil })
    #expect(requests.reduce(0) { $0 + $1.durationMicros } == 592)
    #expect(requests.map(\.durationMicros).max() == 96)
    // The flow records carry the same counts.
    #expect(flows.reduce(0) { $0 + Int($1.application.requests) } == 10)
    #expect(flows.reduce(0) { $0 + Int($1.application.responses) } == 10)
  }

  /// Trace context is read from the request headers.
  @Test func traceAndRequestIDs() throws {
    try #require(TestData.available)
    let (requests, _, _) = try FlowPipeline.requests(file: TestData.path("\(Self.directory)/http/istio-tcp-frag.pcap"))
    let request = try #require(requests.first)
    #expect(request.requestID == "46364834-4fb8-9692-a5d6-ab638447a787")
    #expect(request.traceID.hasPrefix("744a02a3033b7d5960cd"))
    #expect(request.domain == "productpage:9080")
  }
}
