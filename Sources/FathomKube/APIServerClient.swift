import FathomHTTP

/// Blocking GETs to the API server (libcurl: a custom CA and client certificates), with the
/// credentials of the moment: a rotated token file or an exec plugin's fresh certificate.
struct APIServerClient: Sendable {
  let config: KubeAPIConfig

  /// GETs `path`, handing the body to `receive` as it arrives with the response's status code;
  /// `receive` returns false to end the transfer early, as does `shouldStop` (polled about once a
  /// second, so a quiet watch stops promptly). Returns the status code; throws on transport and
  /// TLS failures with libcurl's explanation.
  func get(
    _ path: String, timeoutSeconds: Int, shouldStop: () -> Bool,
    receive: (_ status: Int, _ bytes: UnsafeRawBufferPointer) -> Bool
  ) throws -> Int {
    var request = CurlClient.Request(url: config.server + path)
    request.timeoutSeconds = timeoutSeconds
    request.acceptEncoding = true
    request.proxyURL = config.proxyURL
    request.tls = config.tls
    request.tls.clientCertificatePEM = nil
    request.tls.clientKeyPEM = nil
    if let (certificate, key) = try config.currentClientCertificate() {
      request.tls.clientCertificatePEM = certificate
      request.tls.clientKeyPEM = key
    }
    request.headers = ["Accept: application/json"]
    if let token = try config.currentToken() { request.headers.append("Authorization: Bearer \(token)") }
    do {
      return try CurlClient.perform(request, shouldStop: shouldStop, receive: receive)
    } catch let failure as CurlClient.Failure {
      throw KubeDecoder.Failure(message: "GET \(config.server)\(path): \(failure.message)")
    }
  }
}
