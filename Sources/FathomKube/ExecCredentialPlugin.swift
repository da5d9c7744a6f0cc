import Foundation

/// A kubeconfig user's `exec` credential plugin (client.authentication.k8s.io `ExecCredential`):
/// the command EKS, GKE and AKS kubeconfigs run for a token (`aws eks get-token`,
/// `gke-gcloud-auth-plugin`, `kubelogin`). It is run when a credential is first needed, its answer
/// kept until its `expirationTimestamp` (less a minute) or until the server refuses it with 401,
/// and it is run once at a time however many resources are being watched.
public final class ExecCredentialPlugin: @unchecked Sendable {
  /// What the plugin answered: a bearer token, or a client certificate and key (PEM).
  public struct Credential: Sendable, Equatable {
    public var token: String?
    public var clientCertificatePEM: [UInt8]?
    public var clientKeyPEM: [UInt8]?
    public var expires: Date?
  }

  public let command: String
  public let arguments: [String]
  public let environment: [String: String]
  public let apiVersion: String
  /// A plugin given no more time than this is broken or waiting for input nobody gives.
  static let timeoutSeconds = 60.0

  private let lock = NSLock()
  private var cached: Credential?

  /// `command` as written in the kubeconfig: a path with a slash is relative to the kubeconfig's
  /// folder, a bare name is looked up on PATH (as kubectl does).
  init(exec: [String: Any], kubeconfigFolder: String) throws {
    guard let command = exec["command"] as? String, !command.isEmpty else {
      throw KubeDecoder.Failure(message: "exec credential plugin without a command")
    }
    if command.contains("/") && !command.hasPrefix("/") {
      self.command = (kubeconfigFolder as NSString).appendingPathComponent(command)
    } else {
      self.command = command
    }
    arguments = (exec["args"] as? [Any] ?? []).map { "\($0)" }
    var environment: [String: String] = [:]
    for entry in exec["env"] as? [[String: Any]] ?? [] {
      if let name = entry["name"] as? String { environment[name] = "\(entry["value"] ?? "")" }
    }
    self.environment = environment
    apiVersion = exec["apiVersion"] as? String ?? "client.authentication.k8s.io/v1"
  }

  /// The credential to use now: the cached one while it is valid, else a fresh run.
  public func credential(now: Date = Date()) throws -> Credential {
    try lock.withLock {
      if let cached, cached.expires.map({ $0.timeIntervalSince(now) > 60 }) ?? true { return cached }
      let fresh = try run()
      cached = fresh
      return fresh
    }
  }

  /// The server refused the credential (401): the next request runs the plugin again.
  public func invalidate() { lock.withLock { cached = nil } }

  private func run() throws -> Credential {
    let process = Process()
    if command.hasPrefix("/") {
      process.executableURL = URL(fileURLWithPath: command)
      process.arguments = arguments
    } else {
      process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
      process.arguments = [command] + arguments
    }
    var processEnvironment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    processEnvironment["KUBERNETES_EXEC_INFO"] =
      "{\"apiVersion\":\"\(apiVersion)\",\"kind\":\"ExecCredential\",\"spec\":{\"interactive\":false}}"
    process.environment = processEnvironment
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    do { try process.run() } catch {
      throw KubeDecoder.Failure(message: "exec credential plugin \(command): cannot run it (\(error))")
    }
    // Read both pipes while it runs (a chatty plugin must not block on a full pipe), bounded in time.
    final class Collected: @unchecked Sendable { var output = Data(), errors = Data() }
    let collected = Collected()
    let readers = DispatchGroup()
    DispatchQueue.global().async(group: readers) {
      collected.output = output.fileHandleForReading.readDataToEndOfFile()
    }
    DispatchQueue.global().async(group: readers) {
      collected.errors = errors.fileHandleForReading.readDataToEndOfFile()
    }
    if readers.wait(timeout: .now() + Self.timeoutSeconds) == .timedOut {
      process.terminate()
      throw KubeDecoder.Failure(
        message: "exec credential plugin \(command): no answer in \(Int(Self.timeoutSeconds)) s")
    }
    process.waitUntilExit()
    let stderr = String(decoding: collected.errors.prefix(2048), as: UTF8.self)
      .trimmingCharacters(in: .whitespacesAndNewlines)
    guard process.terminationStatus == 0 else {
      throw KubeDecoder.Failure(
        message:
          "exec credential plugin \(command) exited with \(process.terminationStatus)\(stderr.isEmpty ? "" : ": \(stderr)")"
      )
    }
    return try Self.parse(collected.output, command: command)
  }

  /// An `ExecCredential` object's status: `token`, or `clientCertificateData` and
  /// `clientKeyData` (PEM text, not base64), and an optional RFC 3339 `expirationTimestamp`.
  static func parse(_ data: Data, command: String) throws -> Credential {
    guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
      object["kind"] as? String == "ExecCredential", let status = object["status"] as? [String: Any]
    else {
      throw KubeDecoder.Failure(message: "exec credential plugin \(command): its output is not an ExecCredential")
    }
    var credential = Credential()
    credential.token = (status["token"] as? String).flatMap { $0.isEmpty ? nil : $0 }
    credential.clientCertificatePEM = (status["clientCertificateData"] as? String).map { Array($0.utf8) }
    credential.clientKeyPEM = (status["clientKeyData"] as? String).map { Array($0.utf8) }
    if let expiry = status["expirationTimestamp"] as? String {
      let formatter = ISO8601DateFormatter()
      formatter.formatOptions = [.withInternetDateTime]
      let fractional = ISO8601DateFormatter()
      fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
      guard let date = formatter.date(from: expiry) ?? fractional.date(from: expiry) else {
        throw KubeDecoder.Failure(
          message: "exec credential plugin \(command): expirationTimestamp \(expiry) is not RFC 3339")
      }
      credential.expires = date
    }
    guard credential.token != nil || (credential.clientCertificatePEM != nil && credential.clientKeyPEM != nil) else {
      throw KubeDecoder.Failure(
        message:
          "exec credential plugin \(command): the ExecCredential has neither a token nor a client certificate and key")
    }
    return credential
  }
}
