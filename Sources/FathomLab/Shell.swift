import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Runs the system tools the lab is built with (ip, iptables-restore, ...).
public enum Shell {
  /// Runs `arguments` and returns its standard output; a non-zero exit throws with its stderr.
  @discardableResult
  public static func run(_ arguments: [String], input: String? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try resolve(arguments[0]))
    process.arguments = Array(arguments.dropFirst())
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    let inputPipe = input.map { _ in Pipe() }
    process.standardInput = inputPipe ?? FileHandle.nullDevice
    try process.run()
    if let inputPipe, let input {
      inputPipe.fileHandleForWriting.write(Data(input.utf8))
      try? inputPipe.fileHandleForWriting.close()
    }
    // Read both pipes before waiting, so a chatty command cannot block on a full pipe.
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      let message = String(decoding: errorData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
      throw LabError.command(
        "\(arguments.joined(separator: " ")): \(message.isEmpty ? "exit \(process.terminationStatus)" : message)")
    }
    return String(decoding: outputData, as: UTF8.self)
  }

  /// Like `run`, for clean-up steps whose failure (already gone) does not matter.
  public static func attempt(_ arguments: [String]) {
    _ = try? run(arguments)
  }

  /// Runs a command in a network namespace (`ip netns exec`, which also bind-mounts
  /// /etc/netns/NAME/resolv.conf over /etc/resolv.conf).
  @discardableResult
  public static func inNamespace(_ netns: String, _ arguments: [String], input: String? = nil) throws -> String {
    try run(["ip", "netns", "exec", netns] + arguments, input: input)
  }

  /// The absolute path of an executable on PATH (plus the sbin directories root uses).
  public static func resolve(_ name: String) throws -> String {
    if name.hasPrefix("/") { return name }
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    for directory in path.split(separator: ":") {
      let candidate = "\(directory)/\(name)"
      if access(candidate, X_OK) == 0 { return candidate }
    }
    throw LabError.missing("\(name) is not installed (Debian: apt-get install \(debianPackage(name)))")
  }

  static func debianPackage(_ tool: String) -> String {
    switch tool {
    case "ip", "tc": "iproute2"
    case "iptables", "iptables-restore": "iptables"
    case "redis-server": "redis-server"
    case "nginx": "nginx-light"
    default: tool
    }
  }

  /// Starts `arguments` in a new session, detached from this process, with stdin from /dev/null
  /// and stdout/stderr appended to `log`. Returns the child's pid; the caller reaps it.
  public static func spawn(_ arguments: [String], log: String) throws -> pid_t {
    let executable = try resolve(arguments[0])
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // A new session: the child survives the command that started it, and signals to this
    // terminal's process group do not reach it. Signals blocked here are unblocked in the child.
    var emptySet = sigset_t()
    sigemptyset(&emptySet)
    posix_spawnattr_setsigmask(&attributes, &emptySet)
    var defaults = sigset_t()
    sigfillset(&defaults)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    // glibc's POSIX_SPAWN_SETSID (0x80) is not imported into Swift.
    let setsid: Int32 = 0x80
    posix_spawnattr_setflags(&attributes, Int16(setsid | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let argv = ([executable] + arguments.dropFirst()).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
    guard result == 0 else {
      throw LabError.command("cannot start \(arguments[0]): \(String(cString: strerror(result)))")
    }
    return pid
  }

  /// The running fathom executable, so the lab starts the same build for its pods
  /// (`FATHOM_EXECUTABLE` overrides it, for callers that are not fathom, such as the tests).
  public static var fathomExecutable: String {
    if let path = ProcessInfo.processInfo.environment["FATHOM_EXECUTABLE"] { return path }
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard count > 0 else { return CommandLine.arguments[0] }
    let path = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    // A rebuilt binary shows as "PATH (deleted)"; the new one at PATH is what to start.
    return path.hasSuffix(" (deleted)") ? String(path.dropLast(10)) : path
  }

  public static var isRoot: Bool { geteuid() == 0 }

  /// Checks the tools the lab needs, naming every missing one at once.
  public static func requireTools(_ tools: [String]) throws {
    let missing = tools.filter { (try? resolve($0)) == nil }
    guard missing.isEmpty else {
      let packages = Set(missing.map(debianPackage)).sorted().joined(separator: " ")
      throw LabError.missing("missing: \(missing.joined(separator: ", ")) (Debian: apt-get install \(packages))")
    }
  }
}

/// Small file helpers used across the lab.
enum Files {
  static func write(_ text: String, to path: String) throws {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
  }

  /// Writes without a temporary file, for kernel files (cgroupfs, procfs) that cannot be renamed.
  static func writeInPlace(_ text: String, to path: String) throws {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw LabError.command("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var bytes = Array(text.utf8)
    let written = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    guard written == bytes.count else {
      throw LabError.command("cannot write \(text) to \(path): \(String(cString: strerror(errno)))")
    }
  }

  static func read(_ path: String) -> String? {
    try? String(contentsOfFile: path, encoding: .utf8)
  }

  static func makeDirectory(_ path: String) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  static func append(_ line: String, to path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return }
    defer { close(fd) }
    var bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
  }
}

/// Wall-clock time in seconds since the epoch.
func now() -> Double {
  var spec = timespec()
  clock_gettime(CLOCK_REALTIME, &spec)
  return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

/// RFC 3339 with microseconds, UTC, as Kubernetes' MicroTime and timestamps.
func rfc3339(_ time: Double, fraction: Bool = false) -> String {
  var seconds = time_t(time)
  var parts = tm()
  gmtime_r(&seconds, &parts)
  var text =
    String(
      format: "%04d-%02d-%02dT%02d:%02d:%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour,
      parts.tm_min, parts.tm_sec)
  if fraction { text += String(format: ".%06d", Int((time - Double(Int(time))) * 1_000_000)) }
  return text + "Z"
}

/// Parses `rfc3339` output (and plain epoch seconds).
public func parseTime(_ text: String) -> Double? {
  if let seconds = Double(text) { return seconds }
  if let seconds = parseUTCTime(text) { return seconds }
  let formatter = ISO8601DateFormatter()
  formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
  if let date = formatter.date(from: text) { return date.timeIntervalSince1970 }
  formatter.formatOptions = [.withInternetDateTime]
  return formatter.date(from: text)?.timeIntervalSince1970
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` without a formatter (samples and event logs hold thousands
/// of these; a formatter per call dominated reading them); nil for any other shape.
func parseUTCTime(_ text: String) -> Double? {
  var utf8 = text.utf8.makeIterator()
  func number(_ digits: Int) -> Int? {
    var value = 0
    for _ in 0..<digits {
      guard let byte = utf8.next(), byte >= 48, byte <= 57 else { return nil }
      value = value * 10 + Int(byte - 48)
    }
    return value
  }
  func expect(_ character: UInt8) -> Bool { utf8.next() == character }
  guard let year = number(4), expect(45), let month = number(2), expect(45), let day = number(2), expect(84),
    let hour = number(2), expect(58), let minute = number(2), expect(58), let second = number(2),
    (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
  else { return nil }
  var fraction = 0.0
  var next = utf8.next()
  if next == 46 {
    var scale = 0.1
    next = utf8.next()
    while let byte = next, byte >= 48, byte <= 57 {
      fraction += Double(byte - 48) * scale
      scale /= 10
      next = utf8.next()
    }
  }
  guard next == 90, utf8.next() == nil else { return nil }
  // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
  let y = month <= 2 ? year - 1 : year
  let era = (y >= 0 ? y : y - 399) / 400
  let yearOfEra = y - era * 400
  let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
  let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
  let days = era * 146097 + dayOfEra - 719468
  return Double(days * 86400 + hour * 3600 + minute * 60 + second) + fraction
}
