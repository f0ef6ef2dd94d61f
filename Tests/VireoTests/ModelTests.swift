import Foundation
import Testing
import VireoModel

@Suite("Model")
struct ModelTests {
    @Test(
        "sizes parse with binary and decimal units",
        arguments: [
            ("256MiB", 256 << 20), ("256Mi", 256 << 20), ("1GiB", 1 << 30), ("2G", 2_000_000_000), ("1048576", 1 << 20),
            ("512 MiB", 512 << 20), ("1TiB", 1 << 40),
        ] as [(String, Int)])
    func sizesParse(text: String, bytes: Int) {
        #expect(ByteSize.parseBytes(text) == UInt64(bytes))
    }

    @Test("text that is not a size is rejected", arguments: ["", "5x", "MiB", "-1MiB", "1.5GiB", "99999999999999999999", "1PiB"])
    func notSizes(text: String) {
        #expect(ByteSize.parseBytes(text) == nil)
    }

    @Test("memory must be a positive whole number of MiB, and the error names the field and value")
    func memoryInMiB() throws {
        #expect(try ByteSize.parseMiB("1GiB", field: "memory") == 1024)
        let error = #expect(throws: VireoError.self) { try ByteSize.parseMiB("1000000", field: "spec.memory") }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("spec.memory") == true)
        #expect(error?.message.contains("1000000") == true)
        #expect(throws: VireoError.self) { try ByteSize.parseMiB("0", field: "memory") }
    }

    @Test("the API takes sizes in one spelling, as its schema states; the command line sends the others as MiB")
    func apiSizes() throws {
        #expect(try ByteSize.parseAPIMiB("256MiB", field: "memory") == 256)
        #expect(try ByteSize.parseAPIMiB("2Gi", field: "memory") == 2048)
        #expect(try ByteSize.parseAPIMiB("1TiB", field: "memory") == 1 << 20)
        for text in ["064MiB", " 64MiB", "64 MiB", "64mib", "1024KiB", "67108864", "1G", "", "MiB", "1.5GiB", "9999999999999MiB"]
        {
            let error = #expect(throws: VireoError.self) { try ByteSize.parseAPIMiB(text, field: "spec.memory") }
            #expect(error?.message.contains("spec.memory") == true && error?.message.contains("'\(text)'") == true)
        }
        #expect(ByteSize.apiForm("1073741824") == "1024MiB")
        #expect(ByteSize.apiForm("1024KiB") == "1MiB")
        #expect(ByteSize.apiForm("512 MiB") == "512MiB")
        #expect(ByteSize.apiForm("1G") == "1G", "not a whole MiB: left for the API to refuse, as written")
        #expect(ByteSize.apiForm("lots") == "lots")
    }

    @Test("sizes are formatted for people")
    func formatting() {
        #expect(ByteSize.format(mib: 256) == "256MiB")
        #expect(ByteSize.format(mib: 2048) == "2GiB")
        #expect(ByteSize.format(mib: 1536) == "1.5GiB")
    }

    @Test("names are DNS labels", arguments: ["a", "web-1", "0abc", String(repeating: "a", count: 63)])
    func validNames(name: String) {
        #expect(ResourceName.problem(with: name) == nil)
    }

    @Test(
        "names that are not DNS labels are rejected",
        arguments: ["", "Web", "-a", "a-", "a_b", "a.b", "ä", String(repeating: "a", count: 64)])
    func invalidNames(name: String) {
        #expect(ResourceName.problem(with: name) != nil)
    }

    @Test("the VM state machine allows the lifecycle and forbids leaving deleting")
    func stateMachine() {
        let lifecycle: [VMState] = [.pending, .scheduled, .starting, .running, .stopping, .stopped, .starting, .running]
        for (from, to) in zip(lifecycle, lifecycle.dropFirst()) {
            #expect(from.canTransition(to: to), "\(from) → \(to)")
        }
        for state in VMState.allCases {
            #expect(state.canTransition(to: .deleting))
            if state != .deleting { #expect(!VMState.deleting.canTransition(to: state)) }
        }
        #expect(!VMState.pending.canTransition(to: .running))
        #expect(!VMState.stopped.canTransition(to: .scheduled))
    }

    @Test("unknown error codes from the wire decode to unknown")
    func unknownCodes() throws {
        let data = Data(#"{"code":"teapot","message":"short and stout"}"#.utf8)
        let error = try JSONDecoder().decode(VireoError.self, from: data)
        #expect(error.code == .unknown)
        #expect(error.code.httpStatus == 500)
    }

    @Test("the worst objective state: breaching, then warning, then unknown, then ok; of none, unknown")
    func worstState() {
        #expect(SLOState.worst([.ok, .breaching, .warning]) == .breaching)
        #expect(SLOState.worst([.ok, .warning, .unknown]) == .warning)
        #expect(SLOState.worst([.ok, .unknown]) == .unknown)
        #expect(SLOState.worst([.ok, .ok]) == .ok)
        #expect(SLOState.worst([]) == .unknown)
    }
}
