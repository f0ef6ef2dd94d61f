import Foundation
import Testing
import VireoProcess

@Suite("Process statistics from /proc")
struct ProcessStatTests {
    @Test("a command holding spaces and parentheses does not shift the fields after it")
    func parse() throws {
        let ticks = ProcessStat.ticksPerSecond
        let line = "4242 (qemu (vm) x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 3 0 100 0 0"
        let stat = try #require(ProcessStat.parse(line))
        #expect(stat.parent == 17)
        #expect(stat.cpuSeconds == 300 / ticks)
        #expect(stat.reapedChildrenCPUSeconds == 50 / ticks)
        #expect(ProcessStat.parse("4242 (cut short) S 17 4242") == nil)
        #expect(ProcessStat.parse("no command here") == nil)
        #expect(ProcessStat.residentBytes(statm: "1000 256 10 1 0 100 0") == 256 * ProcessStat.pageSize)
    }

    @Test("this process: its parent, its CPU time, and it is among its parent's children")
    func readSelf() throws {
        let stat = try ProcessStat.read(pid: getpid())
        #expect(stat.parent == getppid())
        #expect(stat.cpuSeconds > 0)
        #expect(ProcessStat.children(of: getppid()).contains(getpid()))
        #expect(try #require(ProcessStat.residentBytes(pid: getpid())) > 0)
        #expect(throws: (any Error).self) { try ProcessStat.read(pid: -1) }
    }
}
