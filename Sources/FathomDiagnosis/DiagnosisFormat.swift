import Foundation

extension Diagnosis {
  /// The checklist in runbook order, then the ranked verdict.
  public var text: String {
    var text = "diagnosis of \(service)\n"
    text += "window   \(window.map(Self.describe) ?? "everything stored")\n"
    text += "baseline \(baseline.map(Self.describe) ?? "none")\n\nCHECKLIST\n"
    let marks: [StepResult.Status: String] = [
      .ok: "ok     ", .warning: "WARNING", .failed: "FAILED ", .skipped: "skipped",
    ]
    for (number, step) in steps.enumerated() {
      text += "\(number + 1). \(step.step.padding(toLength: 15, withPad: " ", startingAt: 0)) \(marks[step.status]!)\n"
      for line in step.evidence.prefix(8) { text += "     \(line)\n" }
    }
    text += "\nVERDICT\n"
    if verdict.isEmpty { text += "  no fault found: every step is within its thresholds\n" }
    for (rank, finding) in verdict.prefix(3).enumerated() {
      text += String(
        format: "%d. %@ — %@ (step %@, score %.2f)\n", rank + 1, finding.component, finding.kind, finding.step,
        finding.score)
      for line in finding.evidence { text += "     \(line)\n" }
      text += "     next: \(finding.next)\n"
    }
    if !examples.isEmpty {
      text += "\nEXAMPLES (fathom trace --x-request-id ID)\n"
      for example in examples { text += "  \(example.xRequestID): \(example.summary)\n" }
    }
    text += String(format: "\n(%.2f s)\n", seconds)
    return text
  }

  static func describe(_ range: ClosedRange<Int64>) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    func instant(_ micros: Int64) -> String {
      formatter.string(from: Date(timeIntervalSince1970: Double(micros) / 1e6))
    }
    return String(
      format: "%@ – %@ (%.1f s)", instant(range.lowerBound), instant(range.upperBound),
      Double(range.upperBound - range.lowerBound) / 1e6)
  }

  public var jsonObject: [String: Any] {
    [
      "service": service, "seconds": seconds,
      "window": window.map { ["start_us": $0.lowerBound, "end_us": $0.upperBound] } ?? NSNull(),
      "baseline": baseline.map { ["start_us": $0.lowerBound, "end_us": $0.upperBound] } ?? NSNull(),
      "steps": steps.map { ["step": $0.step, "status": $0.status.rawValue, "evidence": $0.evidence] as [String: Any] },
      "verdict": verdict.map {
        [
          "component": $0.component, "kind": $0.kind, "step": $0.step, "score": $0.score, "evidence": $0.evidence,
          "next": $0.next,
        ] as [String: Any]
      },
      "examples": examples.map { ["x_request_id": $0.xRequestID, "summary": $0.summary] },
    ]
  }
}
