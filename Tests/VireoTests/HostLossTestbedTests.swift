import AsyncHTTPClient
import Foundation
import Testing
import VireoAPI
import VireoModel

/// Host loss on real pieces: a testbed of two QEMU hosts sharing disk storage, a guest with
/// `restartPolicy: always`. Its host is frozen (SIGSTOP of the agent and its QEMU): the controller
/// declares it lost and starts the guest on the other host, where QEMU cannot open the disk while
/// the frozen QEMU holds its lock — so the guest never runs twice on one disk. Thawed, the agent
/// fences itself before anything else (the frozen QEMU is killed), and the next try starts the
/// guest with its disk. Then the guest's new host is killed outright (a crash): the guest is
/// back on the first host within 30 s.
extension RealQEMU.TestbedTests {
    func hostState(_ name: String, server: String, token: String) async throws -> HostState? {
        let listed = try await vireo(["host", "list", "-o", "json"], server: server, token: token)
        return try decodeJSON([HostView].self, listed.stdout).first { $0.name == name }?.state
    }

    /// The PIDs of every process in the network namespace (the host's agent and its QEMUs).
    func processes(inNamespace namespace: String) throws -> [Int32] {
        try runTool("ip", ["netns", "pids", namespace]).split(separator: "\n").compactMap { Int32($0) }
    }

    /// The PIDs of the QEMUs running the VM called `name`, in any namespace.
    func qemus(of name: String) throws -> [Int32] {
        try runTool("pgrep", ["-f", "qemu-system.*-name vireo-\(name),"]).split(separator: "\n").compactMap { Int32($0) }
    }

    @Test(
        "a frozen host is lost; its guest with restartPolicy always starts on the other host only once the thawed host fenced itself, with its disk; a crashed host's guest is back within 30 s",
        .enabled(if: getuid() == 0, "needs root: the testbed creates namespaces, bridges and cgroups"))
    func hostLoss() async throws {
        let directory = temporaryDirectory() + "/testbed"
        let up = try await vireo(["testbed", "up", "2", "--dir", directory, "--name", "vloss", "--network", "198.19"])
        defer { _ = try? vireoBlocking(["testbed", "down", "--dir", directory]) }
        try #require(up.status == 0, "\(up.stderr)")
        let server = "http://198.19.0.1:7480"
        let token = try String(contentsOfFile: directory + "/controller/admin.token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)

        let created = try await vireo(
            [
                "vm", "create", "ha", "--image", "web", "--memory", "192MiB", "--restart-policy", "always", "--wait",
                "--timeout", "180",
            ], server: server, token: token)
        try #require(created.status == 0, "\(created.stderr)")
        let first = try await vmView("ha", server: server, token: token)
        #expect(first.restartPolicy == .always)
        let frozenHost = try #require(first.host)
        let otherHost = frozenHost == "h1" ? "h2" : "h1"
        let address = try #require(first.address)
        // A mark on the guest's disk (written and fsynced): it must come along.
        let marked = try await HTTPClient.shared.execute(
            guestRequest("http://\(address)/mark?value=before-loss", method: .POST), timeout: .seconds(10))
        #expect(marked.status == .ok)

        // Freeze the host: its agent and its QEMU stop where they are, holding the disk's lock.
        let frozen = try processes(inNamespace: "vloss-\(frozenHost)")
        try #require(frozen.count >= 2, "the agent and the QEMU: \(frozen)")
        let frozenQEMU = try #require(try qemus(of: "ha").first)
        for pid in frozen { kill(pid, SIGSTOP) }
        let frozenAt = ContinuousClock.now
        var thawed = false
        defer { if !thawed { for pid in frozen { kill(pid, SIGCONT) } } }

        // Lost after 15 s; the guest is placed on the other host, whose QEMU cannot take the disk.
        var lostAfter: Duration?
        var tried: VMView?
        var ranTwice = false
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if try await hostState(frozenHost, server: server, token: token) == .lost, lostAfter == nil {
                lostAfter = frozenAt.duration(to: .now)
            }
            let vm = try await vmView("ha", server: server, token: token)
            if vm.host == otherHost, vm.state == .running { ranTwice = true }
            if vm.host == otherHost, vm.state == .failed {
                tried = vm
                break
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        let lost = try #require(lostAfter, "\(frozenHost) was declared lost")
        let attempt = try #require(tried, "the other host tried to start the guest")
        #expect(!ranTwice, "the guest never ran on \(otherHost) while \(frozenHost)'s QEMU held its disk")
        #expect(attempt.message?.contains("lock") == true, "QEMU refused the locked disk: \(attempt.message ?? "-")")
        #expect(kill(frozenQEMU, 0) == 0, "the frozen QEMU still exists")

        // Thaw: the agent fences itself first (kills its QEMU), and the next try starts the guest.
        for pid in frozen { kill(pid, SIGCONT) }
        thawed = true
        let thawedAt = ContinuousClock.now
        try await eventually("the thawed host's QEMU is gone", within: 10) { kill(frozenQEMU, 0) != 0 }
        let fencedAfter = thawedAt.duration(to: .now)
        try await eventually("ha runs on \(otherHost)", within: 60) {
            let vm = try await vmView("ha", server: server, token: token)
            return vm.state == .running && vm.host == otherHost && vm.address != nil
        }
        let runningAfterThaw = thawedAt.duration(to: .now)
        #expect(try qemus(of: "ha").count == 1, "one QEMU for ha")
        let moved = try #require(try await vmView("ha", server: server, token: token).address)
        var marks: JSONValue = .null
        try await eventually("the guest answers on \(otherHost)", within: 30) {
            guard let answer = try? await guestJSON(moved, "/mark") else { return false }
            marks = answer
            return true
        }
        #expect(marks["disk"] == .string("before-loss"), "the disk came along: \(marks)")
        #expect(marks["memory"] == .string(""), "the guest booted again: \(marks)")
        try await eventually("\(frozenHost) ready again", within: 30) {
            try await hostState(frozenHost, server: server, token: token) == .ready
        }

        // A crash of the guest's new host: everything in its namespace is killed.
        let crashed = try processes(inNamespace: "vloss-\(otherHost)")
        for pid in crashed { kill(pid, SIGKILL) }
        let crashedAt = ContinuousClock.now
        try await eventually("ha runs again on \(frozenHost)", within: 60) {
            let vm = try await vmView("ha", server: server, token: token)
            return vm.state == .running && vm.host == frozenHost && vm.address != nil
        }
        let back = crashedAt.duration(to: .now)
        #expect(back < .seconds(30), "restarted within 30 s of the crash: \(back)")
        #expect(try qemus(of: "ha").count == 1, "one QEMU for ha")
        let again = try #require(try await vmView("ha", server: server, token: token).address)
        try await eventually("the guest answers on \(frozenHost)", within: 30) {
            guard let answer = try? await guestJSON(again, "/mark") else { return false }
            marks = answer
            return true
        }
        #expect(marks["disk"] == .string("before-loss"), "the disk came along again: \(marks)")
        print(
            "host loss (testbed, lost after 15 s): frozen host lost after \(lost); the other host's start refused "
                + "(\(attempt.message ?? "-")); thawed host fenced within \(fencedAfter); guest running \(runningAfterThaw) "
                + "after the thaw; crashed host's guest running elsewhere \(back) after the crash")
    }
}
