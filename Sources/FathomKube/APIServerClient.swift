import CCurl

/// TLS settings for reaching an API server, as a kubeconfig or a service account gives them.
public struct KubeTLS: Sendable, Equatable {
  /// PEM certificates that may sign the server's certificate; nil trusts the system's store.
  public var certificateAuthorityPEM: [UInt8]?
  /// PEM client certificate and key (kubeconfig `client-certificate(-data)`, `client-key(-data)`).
  public var clientCertificatePEM: [UInt8]?
  public var clientKeyPEM: [UInt8]?
  /// Skip verifying the server's certificate (kubeconfig `insecure-skip-tls-verify`).
  public var insecureSkipVerify = false

  public init() {}
}

/// Blocking GETs to the API server through libcurl, which (unlike URLSession on Linux) takes a
/// custom CA and a client certificate. One easy handle per request: lists and watches are few
/// and long, so a TLS handshake per request costs nothing that matters.
struct APIServerClient: Sendable {
  let config: KubeAPIConfig

  /// libcurl's global state, set up once before the first handle (`curl_global_init` must not
  /// race with other threads' handles).
  private static let globalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_ALL))

  /// GETs `path`, handing the body to `receive` as it arrives with the response's status code;
  /// `receive` returns false to end the transfer early, as does `shouldStop` (polled about once a
  /// second, so a quiet watch stops promptly). Returns the status code; throws on transport and
  /// TLS failures with libcurl's explanation.
  func get(
    _ path: String, timeoutSeconds: Int, shouldStop: () -> Bool,
    receive: (_ status: Int, _ bytes: UnsafeRawBufferPointer) -> Bool
  ) throws -> Int {
    guard Self.globalInit == CURLE_OK, let handle = curl_easy_init() else {
      throw KubeDecoder.Failure(message: "libcurl could not be initialised")
    }
    defer { curl_easy_cleanup(handle) }
    return try withoutActuallyEscaping(receive) { receive in
      try withoutActuallyEscaping(shouldStop) { shouldStop in
        let transfer = Transfer(handle: handle, receive: receive, shouldStop: shouldStop)
        defer { transfer.release() }
        let headers = try configure(handle, path: path, timeoutSeconds: timeoutSeconds, transfer: transfer)
        defer { curl_slist_free_all(headers) }
        let code = curl_easy_perform(handle)
        let status = Int(fathom_curl_response_code(handle))
        // Ended by the receiver or by stop(): not an error; the caller knows why it stopped.
        if code == CURLE_OK || (code == CURLE_WRITE_ERROR && transfer.endedByReceiver)
          || code == CURLE_ABORTED_BY_CALLBACK
        {
          return status
        }
        throw KubeDecoder.Failure(message: "GET \(config.server)\(path): \(transfer.errorText(code))")
      }
    }
  }

  private func configure(
    _ handle: UnsafeMutableRawPointer, path: String, timeoutSeconds: Int, transfer: Transfer
  ) throws -> UnsafeMutablePointer<curl_slist>? {
    var failed: CURLcode = CURLE_OK
    func set(_ option: CURLoption, _ value: Int) {
      let code = fathom_curl_setopt_long(handle, option, value)
      if code != CURLE_OK { failed = code }
    }
    func set(_ option: CURLoption, _ text: String) {
      let code = text.withCString { fathom_curl_setopt_pointer(handle, option, $0) }
      if code != CURLE_OK { failed = code }
    }
    func set(_ option: CURLoption, pem: [UInt8]) {
      let code = pem.withUnsafeBytes { fathom_curl_setopt_blob(handle, option, $0.baseAddress, $0.count) }
      if code != CURLE_OK { failed = code }
    }
    set(CURLOPT_URL, config.server + path)
    set(CURLOPT_NOSIGNAL, 1)
    set(CURLOPT_CONNECTTIMEOUT, 10)
    set(CURLOPT_TIMEOUT, timeoutSeconds)
    set(CURLOPT_ACCEPT_ENCODING, "")  // every encoding libcurl decodes (gzip: lists are large)
    if let proxy = config.proxyURL { set(CURLOPT_PROXY, proxy) }
    let tls = config.tls
    if tls.insecureSkipVerify {
      set(CURLOPT_SSL_VERIFYPEER, 0)
      set(CURLOPT_SSL_VERIFYHOST, 0)
    } else if let authority = tls.certificateAuthorityPEM {
      set(CURLOPT_CAINFO_BLOB, pem: authority)
    }
    if let (certificate, key) = try config.currentClientCertificate() {
      set(CURLOPT_SSLCERTTYPE, "PEM")
      set(CURLOPT_SSLCERT_BLOB, pem: certificate)
      set(CURLOPT_SSLKEYTYPE, "PEM")
      set(CURLOPT_SSLKEY_BLOB, pem: key)
    }
    _ = fathom_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, transfer.errorBuffer)
    let context = Unmanaged.passUnretained(transfer).toOpaque()
    _ = fathom_curl_set_write(
      handle,
      { data, size, count, context in
        let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
        let length = size * count
        let status = Int(fathom_curl_response_code(transfer.handle))
        guard transfer.receive(status, UnsafeRawBufferPointer(start: data, count: length)) else {
          transfer.endedByReceiver = true
          return 0
        }
        return length
      }, context)
    _ = fathom_curl_set_progress(
      handle,
      { context, _, _, _, _ in
        Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue().shouldStop() ? 1 : 0
      }, context)
    var headers: UnsafeMutablePointer<curl_slist>? = curl_slist_append(nil, "Accept: application/json")
    if let token = try config.currentToken() { headers = curl_slist_append(headers, "Authorization: Bearer \(token)") }
    _ = fathom_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, headers)
    if failed != CURLE_OK {
      curl_slist_free_all(headers)
      throw KubeDecoder.Failure(message: "libcurl rejected an option: \(String(cString: curl_easy_strerror(failed)))")
    }
    return headers
  }

  /// What the C callbacks reach through their context pointer.
  private final class Transfer {
    let handle: UnsafeMutableRawPointer
    let receive: (Int, UnsafeRawBufferPointer) -> Bool
    let shouldStop: () -> Bool
    let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
    var endedByReceiver = false

    init(
      handle: UnsafeMutableRawPointer, receive: @escaping (Int, UnsafeRawBufferPointer) -> Bool,
      shouldStop: @escaping () -> Bool
    ) {
      self.handle = handle
      self.receive = receive
      self.shouldStop = shouldStop
      errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    func release() { errorBuffer.deallocate() }

    /// libcurl's detailed message ("SSL certificate problem: unable to get local issuer
    /// certificate") when it wrote one, else the code's generic text.
    func errorText(_ code: CURLcode) -> String {
      let detail = String(cString: errorBuffer)
      return detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
    }
  }
}
