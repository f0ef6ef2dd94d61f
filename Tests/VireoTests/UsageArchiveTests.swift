import Foundation
import Synchronization
import Testing
import VireoModel
import VireoStore

/// A usage archive under test; every implementation joins this list.
struct UsageArchiveFixture: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable () throws -> any UsageArchive
    var testDescription: String { name }

    static let all: [UsageArchiveFixture] = [
        UsageArchiveFixture(name: "sqlite-memory") { try SQLiteUsageArchive() },
        UsageArchiveFixture(name: "sqlite-file") { try SQLiteUsageArchive(path: temporaryDirectory() + "/history.db") },
    ]
}

/// Two hosts, two VMs and an application, recorded step by step with numbers chosen by hand.
struct UsageScene {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    let h1 = UsageStep.Host(
        id: .generate(), name: "h1",
        fingerprint: HostFingerprint(
            cpus: 8, memoryMiB: 16_384, driver: "qemu", capabilities: [.liveMigration, .pause],
            attributes: ["accelerator": "tcg"]),
        cpuLoad: nil)
    let h2 = UsageStep.Host(
        id: .generate(), name: "h2",
        fingerprint: HostFingerprint(cpus: 4, memoryMiB: 8_192, driver: "simulated", capabilities: [.virtualTime]),
        cpuLoad: nil)
    let web = VMID.generate()
    let db = VMID.generate()
    let latency = Objective(name: "latency", kind: .responseTime, metric: "http_seconds", quantile: 0.99, target: 0.05)

    /// Step `i` (60 s from t0 + 60·i): web on `webHost` burning `web` cores, db on h2.
    func step(
        _ i: Int, web cores: Double?, webHost: HostID? = nil, db dbCores: Double? = 0.25, resident: Double? = nil,
        load: Double? = nil, state: SLOState = .ok, seconds: Double = 60
    ) -> UsageStep {
        var hosts = [h1, h2]
        hosts[0].cpuLoad = load
        return UsageStep(
            start: Self.t0.addingTimeInterval(Double(i) * 60), seconds: seconds, hosts: hosts,
            vms: [
                .init(
                    id: web, name: "web", app: "shop", cpus: 2, memoryMiB: 512, host: webHost ?? h1.id, cpuCores: cores,
                    residentMiB: resident),
                .init(id: db, name: "db", app: nil, cpus: 1, memoryMiB: 256, host: h2.id, cpuCores: dbCores, residentMiB: nil),
            ],
            applications: [.init(name: "shop", objectives: [latency], state: state)])
    }
}

@Suite("Usage archive conformance")
struct UsageArchiveTests {
    @Test("recorded steps read back on the time axis, with nil where nothing was recorded", arguments: UsageArchiveFixture.all)
    func roundTrip(fixture: UsageArchiveFixture) async throws {
        let archive = try fixture.make()
        let scene = UsageScene()
        let keepAll = Date(timeIntervalSince1970: 0)
        try await archive.record(scene.step(0, web: 0.5, resident: 300, load: 0.4), deletingBefore: keepAll)
        try await archive.record(scene.step(1, web: nil, state: .breaching), deletingBefore: keepAll)
        // Step 2 is missing (the controller was down); step 3 has web on h2.
        try await archive.record(scene.step(3, web: 1.5, webHost: scene.h2.id, state: .warning), deletingBefore: keepAll)

        let read = try await archive.recording(from: UsageScene.t0.addingTimeInterval(-60), stepSeconds: 60, count: 6)
        #expect(read.from == UsageScene.t0.addingTimeInterval(-60) && read.stepSeconds == 60 && read.count == 6)
        #expect(read.hosts.map(\.name) == ["h1", "h2"])
        #expect(read.hosts[0].id == scene.h1.id && read.hosts[0].fingerprint == scene.h1.fingerprint)
        #expect(read.hosts[0].cpuLoad == [nil, 0.4, nil, nil, nil, nil])
        #expect(read.hosts[1].cpuLoad == [nil, nil, nil, nil, nil, nil])
        let web = try #require(read.vms.last)
        #expect(read.vms.map(\.name) == ["db", "web"])
        #expect(web.id == scene.web && web.app == "shop" && web.cpus == 2 && web.memoryMiB == 512)
        #expect(web.host == [nil, scene.h1.id, scene.h1.id, nil, scene.h2.id, nil])
        #expect(web.cpuCores == [nil, 0.5, nil, nil, 1.5, nil])
        #expect(web.residentMiB == [nil, 300, nil, nil, nil, nil])
        #expect(read.vms[0].cpuCores == [nil, 0.25, 0.25, nil, 0.25, nil])
        #expect(read.applications.map(\.name) == ["shop"])
        #expect(read.applications[0].objectives == [scene.latency])
        #expect(read.applications[0].state == [nil, .ok, .breaching, nil, .warning, nil])

        // A window before anything was recorded is empty, not an error.
        let before = try await archive.recording(from: UsageScene.t0.addingTimeInterval(-600), stepSeconds: 60, count: 5)
        #expect(before.hosts.isEmpty && before.vms.isEmpty && before.applications.isEmpty)
    }

    @Test(
        "coarser steps fold the recorded ones: CPU and memory as the mean, the host as the last, the state as the worst",
        arguments: UsageArchiveFixture.all)
    func folding(fixture: UsageArchiveFixture) async throws {
        let archive = try fixture.make()
        let scene = UsageScene()
        let keepAll = Date(timeIntervalSince1970: 0)
        try await archive.record(scene.step(0, web: 1, resident: 100, load: 0.2, state: .ok), deletingBefore: keepAll)
        try await archive.record(scene.step(1, web: 2, resident: 300, load: 0.6, state: .breaching), deletingBefore: keepAll)
        try await archive.record(
            scene.step(2, web: nil, webHost: scene.h2.id, state: .warning), deletingBefore: keepAll)
        try await archive.record(scene.step(3, web: 0.5, webHost: scene.h2.id, state: .ok), deletingBefore: keepAll)

        let read = try await archive.recording(from: UsageScene.t0, stepSeconds: 180, count: 2)
        let web = try #require(read.vms.first { $0.name == "web" })
        #expect(web.cpuCores == [1.5, 0.5], "the step without a reading does not count as zero")
        #expect(web.residentMiB == [200, nil])
        #expect(web.host == [scene.h2.id, scene.h2.id], "where it was at the end of each step")
        #expect(read.hosts.first?.cpuLoad.first == 0.4)
        #expect(read.applications.first?.state == [.breaching, .ok])
    }

    @Test("recorded steps of different lengths are weighted by their length", arguments: UsageArchiveFixture.all)
    func weighting(fixture: UsageArchiveFixture) async throws {
        let archive = try fixture.make()
        let scene = UsageScene()
        // A 60 s step at 1 core, then a 20 s one at 3 cores (say the setting changed): 1.5 on average.
        try await archive.record(scene.step(0, web: 1), deletingBefore: .distantPast)
        try await archive.record(scene.step(1, web: 3, seconds: 20), deletingBefore: .distantPast)
        let read = try await archive.recording(from: UsageScene.t0, stepSeconds: 120, count: 1)
        #expect(read.vms.first { $0.name == "web" }?.cpuCores == [1.5])
    }

    @Test(
        "retention deletes steps before the cutoff, and the hosts, VMs and applications no step is left for",
        arguments: UsageArchiveFixture.all)
    func retention(fixture: UsageArchiveFixture) async throws {
        let archive = try fixture.make()
        let scene = UsageScene()
        for i in 0..<5 { try await archive.record(scene.step(i, web: Double(i)), deletingBefore: .distantPast) }
        // From step 5 on only db runs, on h2; the cutoff keeps steps 3 and later.
        var later = scene.step(5, web: nil)
        later.vms.removeAll { $0.name == "web" }
        later.hosts.removeAll { $0.name == "h1" }
        later.applications = []
        try await archive.record(later, deletingBefore: UsageScene.t0.addingTimeInterval(180))
        let all = try await archive.recording(from: UsageScene.t0, stepSeconds: 60, count: 6)
        #expect(all.vms.first { $0.name == "web" }?.cpuCores == [nil, nil, nil, 3, 4, nil])
        #expect(all.vms.first { $0.name == "db" }?.cpuCores == [nil, nil, nil, 0.25, 0.25, 0.25])

        // Once the cutoff passes web's last step, web, h1 and shop are gone too.
        later.start = UsageScene.t0.addingTimeInterval(360)
        try await archive.record(later, deletingBefore: UsageScene.t0.addingTimeInterval(300))
        let rest = try await archive.recording(from: UsageScene.t0, stepSeconds: 60, count: 8)
        #expect(rest.vms.map(\.name) == ["db"])
        #expect(rest.vms[0].cpuCores == [nil, nil, nil, nil, nil, 0.25, 0.25, nil])
        #expect(rest.hosts.map(\.name) == ["h2"])
        #expect(rest.applications.isEmpty)
    }

    @Test(
        "a step recorded again replaces the first, and a step naming an unknown host writes nothing",
        arguments: UsageArchiveFixture.all)
    func replaceAndRefuse(fixture: UsageArchiveFixture) async throws {
        let archive = try fixture.make()
        let scene = UsageScene()
        try await archive.record(scene.step(0, web: 1, state: .breaching), deletingBefore: .distantPast)
        var again = scene.step(0, web: 2, state: .ok)
        again.vms.removeAll { $0.name == "db" }
        try await archive.record(again, deletingBefore: .distantPast)
        let read = try await archive.recording(from: UsageScene.t0, stepSeconds: 60, count: 1)
        #expect(read.vms.first { $0.name == "web" }?.cpuCores == [2])
        #expect(read.vms.map(\.name) == ["web"], "db's first recording of the step is gone")
        #expect(read.applications.first?.state == [.ok])

        var broken = scene.step(1, web: 5, load: 0.9)
        broken.vms[0].host = HostID("nowhere")
        let error = await #expect(throws: VireoError.self) {
            try await archive.record(broken, deletingBefore: .distantPast)
        }
        #expect(error?.message.contains("nowhere") == true)
        let after = try await archive.recording(from: UsageScene.t0, stepSeconds: 60, count: 2)
        #expect(after.vms.first { $0.name == "web" }?.cpuCores == [2, nil])
        #expect(
            after.hosts.first { $0.name == "h1" }?.cpuLoad == [nil, nil], "the host rows written before the refusal are gone")
        #expect(after.applications.first?.state == [.ok, nil])
    }

    @Test(
        "a paced step writes every row, and its retention deletes thousands of rows a thousand at a time",
        arguments: UsageArchiveFixture.all)
    func paced(fixture: UsageArchiveFixture) async throws {
        let archive = try fixture.make()
        let host = UsageScene().h1
        let vms = (0..<2_500).map { v in
            UsageStep.VM(
                id: .generate(), name: String(format: "vm-%04d", v), app: nil, cpus: 1, memoryMiB: 80, host: host.id,
                cpuCores: Double(v % 10), residentMiB: nil)
        }
        func step(_ i: Int) -> UsageStep {
            UsageStep(
                start: UsageScene.t0.addingTimeInterval(Double(i) * 60), seconds: 60, hosts: [host], vms: vms, applications: [])
        }
        for i in 0..<3 { try await archive.record(step(i), deletingBefore: .distantPast, share: 0.5) }
        // The cutoff takes steps 0 and 1: 5,000 rows, in several chunks.
        try await archive.record(step(3), deletingBefore: UsageScene.t0.addingTimeInterval(120), share: 0.5)
        let recording = try await archive.recording(from: UsageScene.t0, stepSeconds: 60, count: 4)
        #expect(recording.vms.count == 2_500)
        #expect(recording.vms.map(\.name) == vms.map(\.name))
        #expect(recording.vms.allSatisfy { $0.cpuCores.prefix(2).allSatisfy { $0 == nil } })
        #expect(recording.vms[7].cpuCores == [nil, nil, 7, 7])
    }
}

@Suite("SQLite usage archive")
struct SQLiteUsageArchiveTests {
    @Test("history survives closing and reopening, and the schema is migrated on open")
    func reopen() async throws {
        let path = temporaryDirectory() + "/history.db"
        let scene = UsageScene()
        do {
            let archive = try SQLiteUsageArchive(path: path)
            try await archive.record(scene.step(0, web: 0.75, resident: 200), deletingBefore: .distantPast)
        }
        let reopened = try SQLiteUsageArchive(path: path)
        #expect(try reopened.appliedMigrations() == ["v1: usage steps"])
        let read = try await reopened.recording(from: UsageScene.t0, stepSeconds: 60, count: 1)
        #expect(read.vms.first { $0.name == "web" }?.cpuCores == [0.75])
        #expect(read.vms.first { $0.name == "web" }?.residentMiB == [200])
    }
}

@Suite("Pacer")
struct PacerTests {
    /// Busy work of `units` units of about 50 µs each, paced at `share`: the sleeps it asked for,
    /// and how long after the start of the work it asked for the last one.
    static func run(share: Double, units: Int) -> (sleeps: [Double], lastAsked: Double) {
        let start = ContinuousClock.now
        let asked = Mutex<(sleeps: [Double], last: Double)>(([], 0))
        var pacer = Pacer(share: share) { seconds in
            let at = (ContinuousClock.now - start).secondsValue
            asked.withLock { $0 = ($0.sleeps + [seconds], at) }
        }
        for _ in 0..<units {
            let unit = ContinuousClock.now
            while ContinuousClock.now - unit < .microseconds(50) {}
            pacer.pause()
        }
        return asked.withLock { ($0.sleeps, $0.last) }
    }

    @Test("at a share of a fifth, it rests four times as long as it worked, after slices of at least 2 ms")
    func fifth() {
        let (sleeps, lastAsked) = Self.run(share: 0.2, units: 2_000)
        // 64 units of 50 µs make a slice of 3.2 ms or more: 31 slices or fewer in 2,000 units.
        #expect(sleeps.count >= 10)
        #expect(sleeps.allSatisfy { $0 >= 4 * 0.002 })
        // Every moment of work up to the last sleep was rested for, four times over (the sleeps
        // here return at once), but for the moments spent asking: a quarter is left for a thread
        // preempted while it asks, on a busy machine.
        let total = sleeps.reduce(0, +)
        #expect(total <= 4 * lastAsked)
        #expect(total >= 4 * lastAsked * 0.75)
    }

    @Test("at a whole core it never rests")
    func whole() {
        #expect(Self.run(share: 1, units: 1_000).sleeps.isEmpty)
    }
}

@Suite("when a standby loads its next snapshot")
struct SnapshotScheduleTests {
    @Test("a quick load waits the refresh, a slower one three times its length, one too slow to serve backs off to a bound")
    func waits() {
        var schedule = SnapshotSchedule(refresh: .seconds(1), maximumAge: .seconds(5), share: 0.25, maximumWait: .seconds(60))
        #expect(schedule.wait(after: .milliseconds(40)) == .seconds(1))
        #expect(schedule.wait(after: .milliseconds(1500)) == .milliseconds(4500), "a quarter of a core")
        #expect(schedule.servable(.milliseconds(4999)) && !schedule.servable(.seconds(5)))
        // Too slow: 10 s, 20 s, 40 s, then the bound; a quick load starts over.
        #expect(schedule.wait(after: .seconds(10)) == .seconds(10))
        #expect(schedule.wait(after: .seconds(10)) == .seconds(20))
        #expect(schedule.wait(after: .seconds(9)) == .seconds(40))
        #expect(schedule.wait(after: .seconds(9)) == .seconds(60))
        #expect(schedule.tooSlow == 4)
        #expect(schedule.wait(after: .milliseconds(200)) == .seconds(1))
        #expect(schedule.tooSlow == 0)
        #expect(schedule.wait(after: .seconds(6)) == .seconds(10), "the backoff starts again from the first step")
    }
}
