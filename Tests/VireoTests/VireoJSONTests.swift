import Foundation
import Testing
import VireoAPI

@Suite("Vireo's JSON dates")
struct VireoJSONTests {
    struct Stamp: Codable, Equatable { var at: Date }

    @Test("a date read back and written again keeps its text; it is written in milliseconds, cut, never later than the time")
    func roundTrip() throws {
        let encoder = VireoJSON.encoder()
        let decoder = VireoJSON.decoder()
        for i in 0..<2000 {
            // Times with parts below the millisecond, as clocks give them.
            let date = Date(timeIntervalSince1970: 1_796_000_000 + Double(i) * 0.000731 + 0.000_123_4)
            let first = try encoder.encode(Stamp(at: date))
            let again = try encoder.encode(try decoder.decode(Stamp.self, from: first))
            #expect(String(decoding: again, as: UTF8.self) == String(decoding: first, as: UTF8.self))
            let read = try decoder.decode(Stamp.self, from: first).at
            #expect(read.timeIntervalSince(date) <= 1e-6 && date.timeIntervalSince(read) < 0.001, "cut to the millisecond")
        }
        #expect(VireoJSON.text(of: Date(timeIntervalSince1970: 1_796_000_000.1236)) == "2026-11-30T00:53:20.123Z")
        #expect(VireoJSON.text(of: Date(timeIntervalSince1970: 1_796_000_000.1234)) == "2026-11-30T00:53:20.123Z")
    }
}
