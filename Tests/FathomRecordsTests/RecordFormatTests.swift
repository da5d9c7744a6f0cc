import Foundation
import Testing

@testable import FathomRecords

@Suite struct RecordFormatTests {
  @Test func jsonLinesParseBackWithEscapes() throws {
    var request = RequestLog(
      startMicros: 1, endMicros: 2, durationMicros: 1, applicationProtocol: .http, clientIP: IPAddress("10.0.0.1")!,
      clientPort: 1234, serverIP: IPAddress("2001:db8::1")!, serverPort: 80, flowID: 7)
    request.resource = "/a\"b\\c\n\u{1}é"
    request.code = -3
    request.answers = [DNSAnswer(type: "A", value: "10.96.0.10", ttl: 30)]
    var buffer = OutputBuffer(capacity: 8)
    buffer.appendJSONLine(request)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(buffer.bytes)) as? [String: Any])
    #expect(object["resource"] as? String == request.resource)
    #expect(object["server_ip"] as? String == "2001:db8::1")
    #expect(object["code"] as? Int == -3)
    #expect((object["answers"] as? [[String: Any]])?.first?["ttl"] as? Int == 30)
    // Empty text fields are written in runs when all of a run is empty; each is still present.
    for key in ["interface", "netns", "x_request_id_req", "x_request_id_resp", "trace_id", "span_id", "user_agent"] {
      #expect(object[key] as? String == "", "\(key)")
    }
    request.interface = "eth0"
    request.userAgent = "curl/8"
    request.responseRequestID = "r-1"
    buffer.removeAll()
    buffer.appendJSONLine(request)
    let filled = try #require(try JSONSerialization.jsonObject(with: Data(buffer.bytes)) as? [String: Any])
    #expect(filled["interface"] as? String == "eth0" && filled["netns"] as? String == "")
    #expect(filled["user_agent"] as? String == "curl/8" && filled["x_request_id_resp"] as? String == "r-1")
    #expect(filled["trace_id"] as? String == "" && filled.count == object.count)
  }

  @Test func theLargestRequestLineFitsTheRoomReservedForIt() throws {
    // The longest addresses and numbers, without texts and with every text field at its escaping
    // worst (\u00XX per byte): a line without answers never passes the room reserved for it
    // (`appendReserving` writes there unchecked), and the answers come on top.
    var request = RequestLog(
      startMicros: .min, endMicros: .max, durationMicros: .min, applicationProtocol: .http2,
      clientIP: IPAddress("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")!, clientPort: .max,
      serverIP: IPAddress("1111:2222:3333:4444:5555:6666:7777:8888")!, serverPort: .max, flowID: .max)
    request.status = .parseFailed
    request.code = .min
    request.requestTCPSequence = .max
    request.responseTCPSequence = .max
    request.requestBytes = .max
    request.responseBytes = .max
    request.transactionID = .max
    let worst = String(repeating: "\u{1}", count: 300)
    for withTexts in [false, true] {
      if withTexts { for field in RequestTexts.Field.allCases { request.texts[field] = worst } }
      var buffer = OutputBuffer(capacity: 64)
      buffer.appendJSONLine(request)
      #expect(buffer.count <= OutputBuffer.requestLineBound + request.texts.unsafeFields.jsonBound)
      _ = try #require(try JSONSerialization.jsonObject(with: Data(buffer.bytes)) as? [String: Any])
    }
    request.answers = (0..<50).map { _ in DNSAnswer(type: "TYPE65535", value: worst, ttl: .max) }
    var buffer = OutputBuffer(capacity: 64)
    buffer.appendJSONLine(request)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(buffer.bytes)) as? [String: Any])
    #expect(object["user_agent"] as? String == worst && object["client_port"] as? Int == 65535)
    #expect((object["answers"] as? [Any])?.count == 50)
  }

  @Test func numbersAndAddressesFormat() {
    var buffer = OutputBuffer(capacity: 4)
    for value: UInt64 in [0, 9, 10, 99, 100, 1_234_567, UInt64.max] {
      buffer.append(value)
      buffer.append(byte: 32)
    }
    #expect(buffer.string == "0 9 10 99 100 1234567 18446744073709551615 ")
    // Every digit count, and both sides of each power of ten, against Swift's own formatting.
    var power: UInt64 = 1
    for _ in 0..<20 {
      for value in [power &- 1, power, power &+ 1, power &* 7 / 2] {
        buffer.removeAll()
        buffer.append(value)
        #expect(buffer.string == String(value))
      }
      power = power.multipliedReportingOverflow(by: 10).partialValue
    }
    // Zeros inside and at the edges of the eight-digit groups, and a sweep over every magnitude.
    var seed: UInt64 = 0x2545_F491_4F6C_DD1D
    var values: [UInt64] = [100_000_007, 12_000_000_034, 1_795_732_411_314_988, 9_999_999_900_000_000]
    for _ in 0..<10_000 {
      seed ^= seed << 13
      seed ^= seed >> 7
      seed ^= seed << 17
      values.append(seed >> (seed % 64))
    }
    for value in values {
      buffer.removeAll()
      buffer.append(value)
      if buffer.string != String(value) { Issue.record("\(value) written as \(buffer.string)") }
    }
    buffer.removeAll()
    buffer.append(Int64.min)
    #expect(buffer.string == String(Int64.min))
    // IPv4: every octet value in every position (one, two and three digits), against the text.
    for octet: UInt32 in 0...255 {
      for shift: UInt32 in [0, 8, 16, 24] {
        let value = (0x0A01_0203 & ~(0xFF << shift)) | octet << shift
        let expected = [24, 16, 8, 0].map { String((value >> $0) & 0xFF) }.joined(separator: ".")
        buffer.removeAll()
        buffer.append(IPAddress(ipv4: value))
        if buffer.string != expected { Issue.record("\(expected) written as \(buffer.string)") }
      }
    }
    #expect(IPAddress("::ffff:10.0.0.1") == IPAddress("10.0.0.1"))
    #expect(IPAddress("2001:db8:0:0:1:0:0:1")!.description == "2001:db8::1:0:0:1")
    #expect(IPAddress("fe80::1")!.description == "fe80::1")
    #expect(IPAddress("::")!.description == "::")
    #expect(IPAddress("10.0.0") == nil && IPAddress("1:2:3") == nil)
  }

  @Test func tableCellsPadCutAndMark() {
    var buffer = OutputBuffer(capacity: 8)
    buffer.appendPaddedEndpoint(IPAddress("10.0.0.1")!, 80, marker: "?", width: 14)
    buffer.append(byte: UInt8(ascii: "|"))
    buffer.appendPaddedEndpoint(IPAddress("2001:db8::1")!, 443, width: 10)
    buffer.append(byte: UInt8(ascii: "|"))
    buffer.appendPadded("abc", width: 5, alignRight: true)
    buffer.append(byte: UInt8(ascii: "|"))
    buffer.appendPadded("abcdef", width: 4)
    buffer.append(byte: UInt8(ascii: "|"))
    // Columns keep one space so neighbours never run together; endpoints overflow rather than cut.
    #expect(buffer.string == "10.0.0.1:80?  |[2001:db8::1]:443 |  abc|abc |")
    #expect(TableCell.millis(UInt64(0)) == "-")
    #expect(TableCell.millis(UInt32(1_050)) == "1.05")
    #expect(TableCell.millis(Int64(12_345)) == "12.34")
  }
}
