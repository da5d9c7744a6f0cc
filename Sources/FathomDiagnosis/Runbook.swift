import FathomKube
import FathomStore
import Foundation

/// What the runbook reads: a store (requests, flows, rollups), the Kubernetes objects at the end
/// of the window, the resource samples, and the time window with its baseline.
public struct DiagnosisInput {
  public var store: any DiagnosisSource
  public var objects: [KubeObject]
  /// Resource samples within the window (the caller filters by time).
  public var samples: [ResourceSample]
  /// `namespace/name` of the Service whose users complain.
  public var service: String
  /// `namespace/workload` of the calling side (`--from`): the target's own lookups and
  /// connections are counted from its pods only.
  public var from: String?
  /// The window to diagnose (µs, inclusive); nil: everything stored.
  public var window: ClosedRange<Int64>?
  /// A healthy period before the anomaly, for comparisons (rates, latencies); nil: none.
  public var baseline: ClosedRange<Int64>?
  public var thresholds = Thresholds()

  public init(
    store: any DiagnosisSource, objects: [KubeObject], samples: [ResourceSample], service: String,
    window: ClosedRange<Int64>? = nil, baseline: ClosedRange<Int64>? = nil
  ) {
    self.store = store
    self.objects = objects
    self.samples = samples
    self.service = service
    self.window = window
    self.baseline = baseline
  }

  /// A window of `seconds` ending at the store's last record, and a baseline of `baselineSeconds`
  /// just before it (none when 0 or when nothing was recorded then).
  public static func window(lastSeconds seconds: Double, baselineSeconds: Double?, in store: any DiagnosisSource)
    throws -> (window: ClosedRange<Int64>?, baseline: ClosedRange<Int64>?)
  {
    guard let recorded = try store.recordedRange() else { return (nil, nil) }
    let start = max(recorded.lowerBound, recorded.upperBound - Int64(seconds * 1e6))
    return (start...recorded.upperBound, baseline(before: start, seconds: baselineSeconds ?? seconds, in: recorded))
  }

  /// The baseline just before `start`, clipped to what was recorded; nil when empty.
  public static func baseline(before start: Int64, seconds: Double, in recorded: ClosedRange<Int64>)
    -> ClosedRange<Int64>?
  {
    let baselineStart = max(recorded.lowerBound, start - Int64(seconds * 1e6))
    return seconds > 0 && baselineStart < start - 1 ? baselineStart...(start - 1) : nil
  }
}

/// Defaults from REFERENCE.md ("Thresholds others use"); `fathom diagnose --config` overrides them.
/// Where a baseline exists, latency thresholds come from it (see docs/runbook.md).
public struct Thresholds: Codable, Sendable {
  /// Kiali: 5xx ratio above 10% is failed, above 0.1% degraded.
  public var errorRatioFailed = 0.10
  public var errorRatioWarning = 0.001
  /// A pod's error ratio this many times its siblings' (and above the warning ratio) is the pod's fault.
  public var podDeviation = 5.0
  /// Coroot: container CPU above 80% of its limit; throttled periods above this share.
  public var throttledShare = 0.2
  /// Coroot: DNS p95 above 100 ms (without a baseline).
  public var dnsLatencyMicros: Int64 = 100_000
  /// p99 above this many times the siblings' median p99 is a slow pod.
  public var slowPodFactor = 4.0
  /// Retransmitted share of packets on a node above this is a lossy path.
  public var retransmissionShare = 0.02
  /// Against a baseline: a latency (service p99, DNS p95) above this many times the baseline's...
  public var baselineLatencyFactor = 3.0
  /// ...and above it by at least this much (service p99)...
  public var baselineLatencyMarginMicros: Int64 = 100_000
  /// ...is up; DNS p95 is slow above max(factor × baseline, this floor), at most the default.
  public var baselineDNSFloorMicros: Int64 = 30_000
  /// A request rate below this share of the baseline's is a drop.
  public var rateDropShare = 0.5
  /// Coroot's latency objective: a p99 above it fails the service step.
  public var latencyObjectiveMicros: Int64 = 500_000
  /// Packets dropped by a node's or pod's interface above this share of its packets.
  public var interfaceDropShare = 0.01
  public init() {}

  /// The defaults with the fields a JSON object names replaced: a config file names only what
  /// it changes. An unknown field is an error (a misspelt threshold would silently not apply).
  public static func overriding(json: Data) throws -> Thresholds {
    guard var fields = try JSONSerialization.jsonObject(with: JSONEncoder().encode(Thresholds())) as? [String: Any],
      let overrides = try JSONSerialization.jsonObject(with: json) as? [String: Any]
    else { throw ThresholdsError(message: "thresholds: a JSON object of fields to override") }
    for (key, value) in overrides {
      guard fields[key] != nil else {
        throw ThresholdsError(
          message: "thresholds: unknown field \(key) (known: \(fields.keys.sorted().joined(separator: ", ")))")
      }
      fields[key] = value
    }
    do {
      return try JSONDecoder().decode(Thresholds.self, from: JSONSerialization.data(withJSONObject: fields))
    } catch {
      throw ThresholdsError(message: "thresholds: \(error)")
    }
  }
}

public struct ThresholdsError: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}

public struct StepResult: Sendable {
  public enum Status: String, Sendable { case ok, warning, failed, skipped }
  public var step: String
  public var status: Status
  /// The numbers that decided it.
  public var evidence: [String]
}

public struct Finding: Sendable {
  public var component: String
  public var kind: String
  public var step: String
  public var score: Double
  public var evidence: [String]
  public var next: String
}

public struct Diagnosis: Sendable {
  public var service: String
  public var window: ClosedRange<Int64>?
  public var baseline: ClosedRange<Int64>?
  public var steps: [StepResult]
  /// Ranked, most likely first.
  public var verdict: [Finding]
  /// Up to two requests' traces that show the top finding: failed requests to the target, else
  /// (for a latency finding) its slowest.
  public var examples: [ExampleTrace]
  public var seconds: Double
}

/// A request to follow with `fathom trace --x-request-id`, and what its trace shows.
public struct ExampleTrace: Sendable, Equatable {
  public var xRequestID: String
  public var summary: String
}

/// The SRE's runbook, in order: node/pod, the backend service's golden metrics, DNS, the Service
/// and kube-proxy, the Ingress, the request's path. Each step reports ok/warning/failed/skipped
/// with its numbers; findings are ranked into a verdict naming the faulty component.
public struct Runbook {
  let input: DiagnosisInput

  public init(input: DiagnosisInput) { self.input = input }

  static let stepOrder = ["node-pod", "service-golden", "dns", "service", "ingress", "path"]
  /// What a crash loop shows as in other steps.
  static let podSymptoms: Set<String> = ["pod down", "pod not ready"]
  /// Findings about time rather than failure: their examples are the slowest requests.
  static let latencyKinds: Set<String> = ["latency up", "pod slow", "dns slow", "packet loss", "cpu throttling"]

  public func diagnose() throws -> Diagnosis {
    let started = Date()
    let context = try RunbookContext(input: input)
    let results = try [
      context.nodePodStep(), context.serviceGoldenStep(), context.dnsStep(), context.serviceStep(),
      context.ingressStep(), context.pathStep(),
    ]
    var findings = results.flatMap(\.findings)
    // Loss explains unanswered connections; they are not stale rules then.
    if findings.contains(where: { $0.kind == "packet loss" && $0.step == "path" }) {
      for index in findings.indices where findings[index].kind == "connections unanswered" {
        findings[index].score *= 0.7
      }
    }
    // A pod on a node whose kube-proxy rules are stale fails because its calls through them do:
    // its errors and latency are that node's symptoms.
    let staleNodes = Set(
      findings.filter { $0.kind == "connections unanswered" && $0.component.hasSuffix(" kube-proxy") }.map {
        String($0.component.dropFirst("node ".count).dropLast(" kube-proxy".count))
      })
    for index in findings.indices
    where ["pod errors", "pod slow"].contains(findings[index].kind)
      && staleNodes.contains(context.node(ofPod: String(findings[index].component.dropFirst("pod ".count))) ?? "")
    {
      findings[index].score *= 0.7
    }
    // A pod that is down because it crash-loops: one finding with the cause's kind, the
    // strongest score and both steps' evidence.
    let crashLooping = Set(findings.filter { $0.kind == "pod crash loop" }.map(\.component))
    let symptoms = findings.filter { crashLooping.contains($0.component) && Self.podSymptoms.contains($0.kind) }
    findings.removeAll { crashLooping.contains($0.component) && Self.podSymptoms.contains($0.kind) }
    for index in findings.indices where findings[index].kind == "pod crash loop" {
      for symptom in symptoms where symptom.component == findings[index].component {
        findings[index].score = max(findings[index].score, symptom.score)
        findings[index].evidence += symptom.evidence
      }
    }
    findings += context.nothingSeenFindings()
    // Rank: score, then runbook order.
    var seen = Set<String>()
    let order = Self.stepOrder
    let verdict = findings.sorted {
      ($0.score, -(order.firstIndex(of: $0.step) ?? 9)) > ($1.score, -(order.firstIndex(of: $1.step) ?? 9))
    }.filter { seen.insert("\($0.component)|\($0.kind)").inserted }
    var examples = verdict.isEmpty ? [] : results.flatMap(\.examples)
    if examples.isEmpty, let top = verdict.first, Self.latencyKinds.contains(top.kind) {
      examples = try context.slowExamples()
    }
    return Diagnosis(
      service: input.service, window: input.window, baseline: input.baseline, steps: results.map(\.step),
      verdict: verdict, examples: examples, seconds: Date().timeIntervalSince(started))
  }

  /// The Service an `--ingress HOST/PATH` reaches: the matching rule's backend (host, then the
  /// longest matching path).
  public static func ingressBackend(_ target: String, objects: [KubeObject]) -> String? {
    let slash = target.firstIndex(of: "/") ?? target.endIndex
    let host = String(target[..<slash])
    let path = slash == target.endIndex ? "/" : String(target[slash...])
    var best: (service: String, length: Int)?
    for object in objects {
      guard case .ingress(let ingress) = object else { continue }
      let namespace = ingress.metadata?.namespace ?? "default"
      for rule in ingress.spec?.rules ?? [] where rule.host == nil || rule.host == host {
        for candidate in rule.http?.paths ?? [] {
          let prefix = candidate.path ?? "/"
          let matches =
            candidate.pathType == "Exact"
            ? path == prefix : (prefix == "/" || path == prefix || path.hasPrefix(prefix + "/"))
          if matches, let name = candidate.backend?.service?.name, prefix.count > (best?.length ?? -1) {
            best = ("\(namespace)/\(name)", prefix.count)
          }
        }
      }
    }
    return best?.service
  }
}
