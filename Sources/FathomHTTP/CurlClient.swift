import CCurl

/// TLS settings for reaching a server whose certificate comes from a private CA or that asks
/// for a client certificate (a cluster's API server, a ClickHouse behind TLS).
public struct TLSSettings: Sendable, Equatable {
  /// PEM certificates that may sign the server's certificate; nil trusts the system's store.
  public var certificateAuthorityPEM: [UInt8]?
  /// PEM client certificate and key.
  public var clientCertificatePEM: [UInt8]?
  public var clientKeyPEM: [UInt8]?
  /// Skip verifying the server's certificate.
  public var insecureSkipVerify = false

  public init() {}
}

/// Blocking HTTP(S) requests through libcurl, which (unlike URLSession on Linux) takes a custom CA
/// and a client certificate. One easy handle per request: the callers' requests are few and long
/// (API lists and watches) or large (ClickHouse blocks), so a handshake per request costs nothing
/// that matters.
public enum CurlClient {
  public struct Failure: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
  }

  /// One request: `body` is POSTed when given, else a GET is made.
  public struct Request {
    public var url: String
    public var body: UnsafeRawBufferPointer?
    /// Full header lines ("Accept: application/json").
    public var headers: [String] = []
    public var tls = TLSSettings()
    public var proxyURL: String?
    public var timeoutSeconds = 60
    /// Accept every encoding libcurl decodes (gzip: API lists are large).
    public var acceptEncoding = false

    public init(url: String, body: UnsafeRawBufferPointer? = nil) {
      self.url = url
      self.body = body
    }
  }

  /// Performs `request`, handing the response body to `receive` as it arrives with the status
  /// code; `receive` returns false to end the transfer early, as does `shouldStop` (polled about
  /// once a second, so a quiet watch stops promptly). Returns the status code; throws on
  /// transport and TLS failures with libcurl's explanation ("SSL certificate problem: unable to
  /// get local issuer certificate").
  public static func perform(
    _ request: Request, shouldStop: () -> Bool = { false },
    receive: (_ status: Int, _ bytes: UnsafeRawBufferPointer) -> Bool
  ) throws -> Int {
    // libcurl is opened and its global state set up once, before the first handle.
    guard fathom_curl_load() == CURLE_OK else {
      throw Failure(message: String(cString: fathom_curl_load_error()))
    }
    guard let handle = fathom_curl_easy_init() else { throw Failure(message: "libcurl could not make a handle") }
    defer { fathom_curl_easy_cleanup(handle) }
    return try withoutActuallyEscaping(receive) { receive in
      try withoutActuallyEscaping(shouldStop) { shouldStop in
        let transfer = Transfer(handle: handle, receive: receive, shouldStop: shouldStop)
        defer { transfer.release() }
        let headers = try configure(handle, request, transfer: transfer)
        defer { fathom_curl_slist_free_all(headers) }
        let code = fathom_curl_easy_perform(handle)
        let status = Int(fathom_curl_response_code(handle))
        // Ended by the receiver or by shouldStop: not an error; the caller knows why it stopped.
        if code == CURLE_OK || (code == CURLE_WRITE_ERROR && transfer.endedByReceiver)
          || code == CURLE_ABORTED_BY_CALLBACK
        {
          return status
        }
        throw Failure(message: transfer.errorText(code))
      }
    }
  }

  /// Performs `request` and returns the status and the whole response body (at most `limit`
  /// bytes; more is an error).
  public static func perform(_ request: Request, limit: Int = 64 << 20) throws -> (status: Int, body: [UInt8]) {
    var body: [UInt8] = []
    var overflow = false
    let status = try perform(request) { _, bytes in
      guard body.count + bytes.count <= limit else {
        overflow = true
        return false
      }
      body.append(contentsOf: bytes)
      return true
    }
    if overflow { throw Failure(message: "response larger than \(limit) bytes") }
    return (status, body)
  }

  private static func configure(
    _ handle: UnsafeMutableRawPointer, _ request: Request, transfer: Transfer
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
    set(CURLOPT_URL, request.url)
    set(CURLOPT_NOSIGNAL, 1)
    set(CURLOPT_CONNECTTIMEOUT, 10)
    set(CURLOPT_TIMEOUT, request.timeoutSeconds)
    if request.acceptEncoding { set(CURLOPT_ACCEPT_ENCODING, "") }
    if let proxy = request.proxyURL { set(CURLOPT_PROXY, proxy) }
    if let body = request.body {
      // The caller's bytes outlive the perform: libcurl reads them in place.
      set(CURLOPT_POST, 1)
      set(CURLOPT_POSTFIELDSIZE_LARGE, body.count)
      if failed == CURLE_OK {
        failed = fathom_curl_setopt_pointer(
          handle, CURLOPT_POSTFIELDS, body.baseAddress ?? UnsafeRawPointer(bitPattern: 1))
      }
    }
    let tls = request.tls
    if tls.insecureSkipVerify {
      set(CURLOPT_SSL_VERIFYPEER, 0)
      set(CURLOPT_SSL_VERIFYHOST, 0)
    } else if let authority = tls.certificateAuthorityPEM {
      set(CURLOPT_CAINFO_BLOB, pem: authority)
    }
    if let certificate = tls.clientCertificatePEM, let key = tls.clientKeyPEM {
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
    var headers: UnsafeMutablePointer<curl_slist>?
    // libcurl would otherwise wait for a 100-continue before sending a large body.
    if request.body != nil { headers = fathom_curl_slist_append(headers, "Expect:") }
    for line in request.headers { headers = fathom_curl_slist_append(headers, line) }
    if headers != nil { _ = fathom_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, headers) }
    if failed != CURLE_OK {
      fathom_curl_slist_free_all(headers)
      throw Failure(message: "libcurl rejected an option: \(String(cString: fathom_curl_easy_strerror(failed)))")
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

    /// libcurl's detailed message when it wrote one, else the code's generic text.
    func errorText(_ code: CURLcode) -> String {
      let detail = String(cString: errorBuffer)
      return detail.isEmpty ? String(cString: fathom_curl_easy_strerror(code)) : detail
    }
  }
}
