import AsyncHTTPClient
import Foundation
import Synchronization
import Testing
import VireoAPI
import VireoController
import VireoDriver
import VireoModel
import VireoSecurity

/// The built `vireo` binary (`make test` builds it first; VIREO_BIN overrides).
let vireoBinary: String = {
    if let path = ProcessInfo.processInfo.environment["VIREO_BIN"] { return path }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/vireo").path
}()

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `vireo` with `arguments` to completion, waiting off the concurrency pool (`offPool`): a
/// `vireo demo` takes minutes.
func vireo(_ arguments: [String], server: String? = nil, token: String? = nil, stdin: String? = nil) async throws -> CommandResult
{
    try await offPool { try vireoBlocking(arguments, server: server, token: token, stdin: stdin) }
}

/// `vireo` for `defer` blocks, which cannot await: blocks the calling thread until it exits.
func vireoBlocking(_ arguments: [String], server: String? = nil, token: String? = nil, stdin: String? = nil) throws
    -> CommandResult
{
    guard FileManager.default.isExecutableFile(atPath: vireoBinary) else {
        Issue.record("the vireo binary is not built at \(vireoBinary); run `swift build` first (make test does)")
        throw VireoError(.failedPrecondition, "no binary")
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: vireoBinary)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["VIREO_SERVER"] = server
    environment["VIREO_TOKEN"] = token
    process.environment = environment
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    if let stdin {
        let input = Pipe()
        process.standardInput = input
        try process.run()
        input.fileHandleForWriting.write(Data(stdin.utf8))
        try input.fileHandleForWriting.close()
    } else {
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }
    // Both pipes at once: a child that fills one while the other is being read must not block.
    let stderrData = Captured()
    let stderrRead = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
        stderrData.data = err.fileHandleForReading.readDataToEndOfFile()
        stderrRead.signal()
    }
    let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
    stderrRead.wait()
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: stdoutData, as: UTF8.self),
        stderr: String(decoding: stderrData.data, as: UTF8.self))
}

/// What a child process printed so far, collected as it arrives.
final class Printed: Sendable {
    private let text = Mutex((out: "", err: ""))
    func withLock<T>(_ body: (inout (out: String, err: String)) -> T) -> T { text.withLock { body(&$0) } }
}

/// What one reader thread collected, handed to another after a semaphore.
private final class Captured: @unchecked Sendable {
    var data = Data()
}

/// A `vireo up` process on a free loopback port, with its own data directory.
final class UpProcess {
    let dataDir: String
    let process = Process()
    let log: String
    private(set) var url = ""

    init(
        dataDir: String = temporaryDirectory(), listen: String = "127.0.0.1:0",
        driver: [String] = ["--driver", "simulated", "--driver-opt", "boot-delay-ms=100"], extra: [String] = []
    ) throws {
        self.dataDir = dataDir
        log = dataDir + "/up-\(UUID().uuidString.prefix(6)).log"
        try? FileManager.default.removeItem(atPath: dataDir + "/endpoint")
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.executableURL = URL(fileURLWithPath: vireoBinary)
        process.arguments = ["up", "--data-dir", dataDir, "--listen", listen] + driver + extra
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// Waits for the API to answer; returns its loopback URL.
    func ready() async throws -> String {
        try await eventually("vireo up serving", within: 30) {
            guard process.isRunning else { throw VireoError(.internal, "vireo up exited: \(logText)") }
            guard let text = try? String(contentsOfFile: dataDir + "/endpoint", encoding: .utf8) else { return false }
            url = text.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "0.0.0.0", with: "127.0.0.1")
            return try await vireo(["host", "list"], server: url, token: try? adminToken()).stdout.contains("ready")
        }
        return url
    }

    func adminToken() throws -> String {
        try String(contentsOfFile: dataDir + "/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    func kill(_ signal: Int32 = SIGKILL) {
        Foundation.kill(process.processIdentifier, signal)
        process.waitUntilExit()
    }

    deinit { if process.isRunning { kill() } }
}

@Suite("Command line", .serialized)
struct CLITests {
    @Test("vm create, list, show, stop, start and delete against a running vireo up")
    func lifecycle() async throws {
        let up = try UpProcess()
        let server = try await up.ready()
        let created = try await vireo(["vm", "create", "web-1", "--memory", "256MiB", "--wait", "-o", "json"], server: server)
        #expect(created.status == 0, "\(created.stderr)")
        let vm = try decodeJSON(VMView.self, created.stdout)
        #expect(vm.state == .running)
        #expect(created.stderr.contains("web-1: running"), "progress is shown on standard error")

        let list = try await vireo(["vm", "list", "-o", "json"], server: server)
        #expect(try decodeJSON([VMView].self, list.stdout).map(\.name) == ["web-1"])
        let table = try await vireo(["vm", "list"], server: server)
        #expect(table.stdout.hasPrefix("NAME"))
        #expect(table.stdout.contains("web-1") && table.stdout.contains("running"))

        let show = try await vireo(["vm", "show", "web-1"], server: server)
        #expect(show.stdout.contains("Placement (chose local"))
        #expect(show.stdout.contains("chosen — score"))

        #expect(try await vireo(["vm", "stop", "web-1", "--wait"], server: server).stdout.contains("stopped"))
        #expect(try await vireo(["vm", "start", "web-1", "--wait"], server: server).stdout.contains("running"))
        #expect(try await vireo(["vm", "delete", "web-1", "--wait"], server: server).stdout.contains("deleted"))
        #expect(try decodeJSON([VMView].self, try await vireo(["vm", "list", "-o", "json"], server: server).stdout).isEmpty)
        up.kill(SIGTERM)
        #expect(up.process.terminationStatus == 0, "graceful shutdown on SIGTERM: \(up.logText)")
    }

    @Test("vm logs shows the console output the local agent pushed; vm list and show give the address")
    func logs() async throws {
        let up = try UpProcess()
        let server = try await up.ready()
        #expect(try await vireo(["vm", "create", "web-1", "--wait"], server: server).status == 0)
        try await eventually("console output arrives") {
            try await vireo(["vm", "logs", "web-1"], server: server).stdout.contains("web-1 ready")
        }
        let logs = try await vireo(["vm", "logs", "web-1"], server: server)
        #expect(logs.status == 0)
        #expect(logs.stdout == "[simulated] booting web-1: 1 vCPU, 128 MiB, image tiny\n[simulated] web-1 ready\n")
        #expect(try await vireo(["vm", "logs", "web-1", "--tail", "1"], server: server).stdout == "[simulated] web-1 ready\n")
        let missing = try await vireo(["vm", "logs", "nope"], server: server)
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("'nope' not found"))
        #expect(try await vireo(["vm", "logs", "web-1", "--tail", "-1"], server: server).status == 2)

        let table = try await vireo(["vm", "list"], server: server)
        #expect(table.stdout.contains("ADDRESS"))
        #expect(table.stdout.contains("198.18."))
        #expect(try await vireo(["vm", "show", "web-1"], server: server).stdout.contains("Address:    198.18."))

        // A VM that has printed nothing says so; --follow prints what comes later, until the VM is deleted.
        #expect(try await vireo(["vm", "stop", "web-1", "--wait"], server: server).status == 0)
        #expect(try await vireo(["vm", "create", "quiet", "--memory", "1TiB"], server: server).status == 0)
        let quiet = try await vireo(["vm", "logs", "quiet"], server: server)
        #expect(quiet.status == 0 && quiet.stdout.isEmpty)
        #expect(quiet.stderr.contains("VM 'quiet' has no console output yet (it is pending)"))

        let follow = Process()
        follow.executableURL = URL(fileURLWithPath: vireoBinary)
        follow.arguments = ["vm", "logs", "web-1", "--follow", "--tail", "0", "--server", server]
        let out = Pipe()
        let err = Pipe()
        follow.standardOutput = out
        follow.standardError = err
        let printed = Printed()
        out.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            printed.withLock { $0.out += text }
        }
        err.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            printed.withLock { $0.err += text }
        }
        try follow.run()
        // Conditions, not sleeps: it has read the console's end before the VM starts, and has
        // printed the boot before the VM is deleted.
        try await eventually("vm logs --follow is following", within: 60) { printed.withLock { $0.err.contains("following") } }
        #expect(try await vireo(["vm", "start", "web-1", "--wait"], server: server).status == 0)
        try await eventually("the boot is followed", within: 60) { printed.withLock { $0.out.contains("booting web-1") } }
        #expect(try await vireo(["vm", "delete", "web-1"], server: server).status == 0)
        try await eventually("vm logs --follow ends with the VM", within: 60) { !follow.isRunning }
        out.fileHandleForReading.readabilityHandler = nil
        err.fileHandleForReading.readabilityHandler = nil
        let followed = printed.withLock { $0.out }
        #expect(follow.terminationStatus == 0)
        #expect(followed.contains("[simulated] booting web-1"), "got: \(followed)")
        #expect(!followed.contains("powered off"), "--tail 0 leaves out what was there before")
        up.kill()
    }

    @Test("image list and image build work without a server, in the given directory")
    func images() async throws {
        let dir = temporaryDirectory()
        let before = try await vireo(["image", "list", "-o", "json", "--data-dir", dir])
        #expect(before.status == 0, "\(before.stderr)")
        let entries = try decodeJSON([JSONValue].self, before.stdout)
        #expect(entries.map { $0["name"] } == [.string("tiny"), .string("web")])
        #expect(entries.allSatisfy { $0["status"] == .string("missing") })

        let built = try await vireo(["image", "build", "tiny", "-o", "json", "--data-dir", dir])
        #expect(built.status == 0, "\(built.stderr)")
        #expect(built.stderr.contains("tiny: built in"), "progress on standard error")
        let summary = try #require(try decodeJSON([JSONValue].self, built.stdout).first)
        #expect(summary["name"] == .string("tiny"))
        #expect(summary["cached"] == .bool(false))
        guard case .string(let directory)? = summary["directory"] else { throw VireoError(.internal, "no directory") }
        #expect(directory.hasPrefix(dir + "/images/tiny-"))
        #expect(FileManager.default.fileExists(atPath: directory + "/vmlinux"))

        let again = try await vireo(["image", "build", "tiny", "--data-dir", dir])
        #expect(again.stdout.contains("cached"))
        let after = try decodeJSON([JSONValue].self, try await vireo(["image", "list", "-o", "json", "--data-dir", dir]).stdout)
        #expect(after.first?["status"] == .string("built"))
        #expect(after.first?["built"]?["directory"] == .string(directory))
        #expect(after.last?["status"] == .string("missing"))
        #expect(try await vireo(["image", "list", "--images", dir + "/images"]).stdout.contains(directory))

        let unknown = try await vireo(["image", "build", "tiny", "nope", "--data-dir", dir])
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("'nope'") && unknown.stderr.contains("tiny, web"))
        #expect(try await vireo(["image", "build", "--data-dir", dir]).status == 2, "nothing to build is a usage error")
    }

    @Test("context open, reset (also through the host's local API), list, keep and close, with -o json and exit codes")
    func contexts() async throws {
        let up = try UpProcess(extra: ["--local-api", "127.0.0.1:0"])
        let server = try await up.ready()
        let local = try #require(
            up.logText.split(separator: "\n").first { $0.hasPrefix("Local context API on ") }.map {
                String($0.dropFirst("Local context API on ".count))
            })
        let opened = try await vireo(["context", "open", "browser", "--disposable", "--wait", "-o", "json"], server: server)
        #expect(opened.status == 0, "\(opened.stderr)")
        #expect(try decodeJSON(Context.self, opened.stdout).state == .running)

        // `--server` before the command, as a person types it for the local API.
        let reset = try await vireo(["--server", local, "context", "reset", "browser", "-o", "json"])
        #expect(reset.status == 0, "\(reset.stderr)")
        let fields = try decodeJSON(JSONValue.self, reset.stdout)
        for key in ["name", "kind", "state", "resetMs"] { #expect(fields[key] != nil, "reset -o json has \(key)") }
        #expect(fields["kind"] == .string("disposable"))

        try await eventually("the controller heard of the reset") {
            let list = try await vireo(["context", "list", "-o", "json"], server: server)
            return try decodeJSON(ContextList.self, list.stdout).items.first?.resets == 1
        }
        let list = try decodeJSON(JSONValue.self, try await vireo(["context", "list", "-o", "json"], server: server).stdout)
        guard case .array(let items)? = list["items"], let item = items.first else {
            Issue.record("no items in \(list)")
            return
        }
        for key in ["name", "kind", "state", "host", "resets", "cleanSince"] {
            #expect(item[key] != nil, "context list -o json items have \(key)")
        }
        #expect(try await vireo(["context", "list"], server: server).stdout.hasPrefix("NAME"))
        #expect(try await vireo(["context", "show", "browser"], server: server).stdout.contains("Resets"))
        #expect(try await vireo(["context", "keep", "browser"], server: server).status == 0)
        #expect(try await vireo(["context", "logs", "browser", "--tail", "3"], server: server).stdout.contains("snapshot"))

        #expect(try await vireo(["context", "reset", "nope"], server: server).status == 3)
        #expect(try await vireo(["context", "open", "browser", "--disposable"], server: server).status == 4)
        let neither = try await vireo(["context", "open", "x"], server: server)
        #expect(neither.status == 2)
        #expect(neither.stderr.contains("--disposable or --persistent"))
        let badNetwork = try await vireo(["context", "open", "x", "--persistent", "--network", "Bad"], server: server)
        #expect(badNetwork.status == 2)
        #expect(badNetwork.stderr.contains("network"))
        let work = try await vireo(["context", "open", "work", "--persistent", "--wait"], server: server)
        #expect(work.status == 0, "\(work.stderr)")
        let refused = try await vireo(["context", "reset", "work"], server: server)
        #expect(refused.status == 4)
        #expect(refused.stderr.contains("--force"))
        #expect(try await vireo(["context", "reset", "work", "--force"], server: server).status == 0)

        #expect(try await vireo(["context", "close", "browser"], server: server).stdout.contains("closed"))
        #expect(try await vireo(["context", "close", "work"], server: server).status == 0)
        #expect(
            try decodeJSON(ContextList.self, try await vireo(["context", "list", "-o", "json"], server: server).stdout).items
                .isEmpty)
        up.kill(SIGTERM)
    }

    @Test("exit codes follow the documentation")
    func exitCodes() async throws {
        let up = try UpProcess()
        let server = try await up.ready()
        #expect(try await vireo(["vm", "create", "a"], server: server).status == 0)
        let conflict = try await vireo(["vm", "create", "a"], server: server)
        #expect(conflict.status == 4)
        #expect(conflict.stderr.contains("already exists"))
        let missing = try await vireo(["vm", "show", "nope"], server: server)
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("'nope' not found"))
        let invalid = try await vireo(["vm", "create", "b", "--cpus", "0"], server: server)
        #expect(invalid.status == 2)
        #expect(invalid.stderr.contains("cpus"))
        #expect(try await vireo(["vm", "create", "b", "--memory", "5x"], server: server).stderr.contains("5x"))
        let badPolicy = try await vireo(["vm", "create", "b", "--restart-policy", "sometimes"], server: server)
        #expect(
            badPolicy.status == 2 && badPolicy.stderr.contains("restartPolicy") && badPolicy.stderr.contains("sometimes"),
            "\(badPolicy.stderr)")
        // A relative time that starts with '-' is a value, not an option.
        let relative = try await vireo(["app", "series", "nope", "--objective", "latency", "--from", "-5m"], server: server)
        #expect(relative.status == 3 && relative.stderr.contains("nope"), "\(relative.stderr)")
        #expect(try await vireo(["vm", "list", "--bogus"], server: server).status == 2)
        #expect(try await vireo(["vm", "list", "-o", "yaml"], server: server).status == 2)
        // The demo's options are checked before anything is set up (it needs no server or root for that).
        let badRate = try await vireo(["demo", "noisy-neighbour", "--rate", "0"])
        #expect(badRate.status == 2 && badRate.stderr.contains("--rate") && badRate.stderr.contains("got 0"), "\(badRate.stderr)")
        // The usage history's settings are checked before anything is opened.
        let unopened = temporaryDirectory() + "/never"
        let badStep = try await vireo(["controller", "--data-dir", unopened, "--history-step", "5x"])
        #expect(
            badStep.status == 2 && badStep.stderr.contains("--history-step") && badStep.stderr.contains("5x"), "\(badStep.stderr)"
        )
        let badRetention = try await vireo(["controller", "--data-dir", unopened, "--history-retention", "30s"])
        #expect(badRetention.status == 2 && badRetention.stderr.contains("--history-retention"), "\(badRetention.stderr)")
        // So are the heartbeat's: an interval out of range, a timeout a host would miss between heartbeats.
        let badHeartbeat = try await vireo(["controller", "--data-dir", unopened, "--heartbeat", "5ms"])
        #expect(badHeartbeat.status == 2 && badHeartbeat.stderr.contains("--heartbeat"), "\(badHeartbeat.stderr)")
        let badTimeout = try await vireo([
            "controller", "--data-dir", unopened, "--heartbeat", "10s", "--host-timeout", "5s",
        ])
        #expect(
            badTimeout.status == 2 && badTimeout.stderr.contains("--host-timeout") && badTimeout.stderr.contains("10s"),
            "\(badTimeout.stderr)")
        // A host lost before it could miss a heartbeat unnoticed.
        let badLost = try await vireo(["controller", "--data-dir", unopened, "--host-lost-after", "3s"])
        #expect(
            badLost.status == 2 && badLost.stderr.contains("--host-lost-after") && badLost.stderr.contains("3s"),
            "\(badLost.stderr)")
        // A long heartbeat alone is enough: the loss's default grows with it (past the timing, the
        // next check, --advertise's, is the one that refuses).
        let longHeartbeat = try await vireo([
            "controller", "--data-dir", unopened, "--heartbeat", "10s", "--advertise", "ftp://x",
        ])
        #expect(
            longHeartbeat.status == 2 && longHeartbeat.stderr.contains("--advertise")
                && !longHeartbeat.stderr.contains("--host-lost-after"), "\(longHeartbeat.stderr)")
        #expect(ControllerSettings.defaultHostLostAfter(heartbeat: .seconds(1), hostTimeout: .seconds(5)) == .seconds(15))
        #expect(ControllerSettings.defaultHostLostAfter(heartbeat: .seconds(10), hostTimeout: .seconds(30)) == .seconds(45))
        #expect(ControllerSettings.defaultHostLostAfter(heartbeat: .seconds(10), hostTimeout: .seconds(11)) == .seconds(30))
        // And the store's: a URL that is not one, a bad parameter, with the password never shown.
        for (store, says) in [
            ("mysql://db/vireo", "expected sqlite or a postgres:// URL"), ("postgres://u:pw@db/x?pool=2", "pool"),
        ] {
            let badStore = try await vireo(["controller", "--data-dir", unopened, "--store", store])
            #expect(
                badStore.status == 2 && badStore.stderr.contains("--store") && badStore.stderr.contains(says)
                    && !badStore.stderr.contains("pw"), "\(badStore.stderr)")
        }
        // A PostgreSQL server that is not there: exit 5 naming it, and still no data directory.
        let port = try LoopbackPort.free()
        let noServer = try await vireo([
            "controller", "--data-dir", unopened, "--store", "postgres://vireo@127.0.0.1:\(port)/vireo?sslmode=disable",
        ])
        #expect(noServer.status == 5 && noServer.stderr.contains("127.0.0.1:\(port)"), "\(noServer.stderr)")
        #expect(!FileManager.default.fileExists(atPath: unopened))
        let help = try await vireo(["vm", "create", "--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("--memory"))
        up.kill()
        let unreachable = try await vireo(["vm", "list"], server: server)
        #expect(unreachable.status == 5)
        #expect(unreachable.stderr.contains("cannot reach the controller"))
    }

    @Test("apply from a file and from standard input is idempotent")
    func apply() async throws {
        let up = try UpProcess()
        let server = try await up.ready()
        let manifest = """
            apiVersion: vireo/v1
            kind: VirtualMachine
            metadata: { name: m-1 }
            spec: { image: tiny, memory: 128MiB }
            """
        let file = up.dataDir + "/m.yaml"
        try manifest.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try await vireo(["apply", "-f", file], server: server).stdout == "VirtualMachine/m-1 created\n")
        #expect(
            try await vireo(["apply", "-f", "-"], server: server, stdin: manifest).stdout == "VirtualMachine/m-1 unchanged\n")
        let bad = try await vireo(
            ["apply", "-f", "-"], server: server, stdin: manifest.replacingOccurrences(of: "tiny", with: "nope"))
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("spec.image"))
        #expect(try await vireo(["apply", "-f", "/does/not/exist"], server: server).status == 2)
    }

    @Test("apply --wait returns once every VM it names runs, those of its applications included")
    func applyWait() async throws {
        let up = try UpProcess(driver: ["--driver", "simulated", "--driver-opt", "boot-delay-ms=500"])
        let server = try await up.ready()
        let manifest = """
            apiVersion: vireo/v1
            kind: Application
            metadata: { name: shop }
            spec:
              vms: [{ name: web-1, image: tiny, memory: 128MiB }, { name: web-2, image: tiny, memory: 128MiB }]
              telemetry: { probe: { port: 80, path: / } }
              objectives: [{ name: up, sli: vireo_probe_duration_seconds, quantile: 0.9, target: 0.1 }]
            ---
            apiVersion: vireo/v1
            kind: VirtualMachine
            metadata: { name: batch-1 }
            spec: { image: tiny, memory: 128MiB }
            """
        let applied = try await vireo(["apply", "-f", "-", "--wait"], server: server, stdin: manifest)
        #expect(applied.status == 0, "\(applied.stderr)")
        #expect(applied.stdout == "VirtualMachine/batch-1 created\nApplication/shop created\n")
        // Each VM's progress on standard error, and every one running when the command returns.
        for name in ["web-1", "web-2", "batch-1"] { #expect(applied.stderr.contains("\(name): running"), "\(applied.stderr)") }
        let vms = try decodeJSON([VMView].self, try await vireo(["vm", "list", "-o", "json"], server: server).stdout)
        #expect(vms.map(\.name).sorted() == ["batch-1", "web-1", "web-2"])
        #expect(vms.allSatisfy { $0.state == .running })

        // Applying again changes nothing, and the VMs already run.
        let again = try await vireo(["apply", "-f", "-", "--wait", "-o", "json"], server: server, stdin: manifest)
        #expect(again.status == 0)
        #expect(try decodeJSON(ApplyResult.self, again.stdout).items.map(\.action) == [.unchanged, .unchanged])
    }

    @Test("kill -9 of vireo up loses no VM and no host")
    func crashDurability() async throws {
        let dataDir = temporaryDirectory()
        let first = try UpProcess(dataDir: dataDir)
        let server = try await first.ready()
        let manifest = (0..<50).map {
            "apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: { name: vm-\($0) }\nspec: { image: tiny }\n"
        }.joined(separator: "---\n")
        #expect(try await vireo(["apply", "-f", "-"], server: server, stdin: manifest).status == 0)
        for i in 50..<60 { #expect(try await vireo(["vm", "create", "vm-\(i)"], server: server).status == 0) }
        let before = try decodeJSON([VMView].self, try await vireo(["vm", "list", "-o", "json"], server: server).stdout)
        #expect(before.count == 60)
        first.kill(SIGKILL)

        let second = try UpProcess(dataDir: dataDir)
        let again = try await second.ready()
        let after = try decodeJSON([VMView].self, try await vireo(["vm", "list", "-o", "json"], server: again).stdout)
        #expect(after.map(\.id) == before.map(\.id))
        #expect(after.map(\.name) == before.map(\.name))
        let hosts = try decodeJSON([HostView].self, try await vireo(["host", "list", "-o", "json"], server: again).stdout)
        #expect(hosts.map(\.name) == ["local"])
        #expect(
            hosts.first?.id
                == (try decodeJSON([HostView].self, try await vireo(["host", "list", "-o", "json"], server: again).stdout)).first?
                .id)
        second.kill()
    }

    @Test("beyond loopback a token is required, kept in 0600 files and never logged; tokens with a role and the audit trail")
    func tokens() async throws {
        let up = try UpProcess(listen: "0.0.0.0:0")
        let server = try await up.ready()
        let token = try up.adminToken()
        let attributes = try FileManager.default.attributesOfItem(atPath: up.dataDir + "/admin.token")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let joinAttributes = try FileManager.default.attributesOfItem(atPath: up.dataDir + "/join.token")
        #expect((joinAttributes[.posixPermissions] as? Int) == 0o600)

        let denied = try await vireo(["vm", "list"], server: server)
        #expect(denied.status == 1)
        #expect(denied.stderr.contains("token"))
        #expect(try await vireo(["vm", "list"], server: server, token: "wrong").status == 1)
        #expect(try await vireo(["vm", "create", "a", "--wait"], server: server, token: token).status == 0)
        let join = try String(contentsOfFile: up.dataDir + "/join.token", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(try await vireo(["vm", "list"], server: server, token: join).status == 1, "the join token is for agents only")

        // Tokens with a role: the secret alone on standard output, held to its role, audited, revoked.
        let made = try await vireo(
            ["token", "create", "dash", "--role", "viewer", "--expires", "1d"], server: server, token: token)
        #expect(made.status == 0, "\(made.stderr)")
        let viewer = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(viewer.count == 64 && made.stderr.contains("shown this once"))
        #expect(try await vireo(["vm", "list"], server: server, token: viewer).status == 0)
        let refused = try await vireo(["vm", "stop", "a"], server: server, token: viewer)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("token 'dash' (viewer)"), "\(refused.stderr)")
        let badRole = try await vireo(["token", "create", "x", "--role", "root"], server: server, token: token)
        #expect(badRole.status == 2 && badRole.stderr.contains("--role"))
        let badApps = try await vireo(["token", "create", "x", "--role", "owner"], server: server, token: token)
        #expect(badApps.status == 2 && badApps.stderr.contains("apps"))
        let list = try await vireo(["token", "list"], server: server, token: token)
        #expect(list.stdout.contains("dash") && list.stdout.contains("viewer") && list.stdout.contains("active"))
        #expect(!list.stdout.contains(viewer))
        let audit = try await vireo(["audit", "--since", "1h", "-o", "json"], server: server, token: token)
        let entries = try decodeJSON([AuditEntry].self, audit.stdout)
        #expect(entries.contains { $0.who == "dash" && $0.path == "/v1/vms/a/stop" && $0.status == 403 })
        #expect(entries.contains { $0.who == "admin" && $0.path == "/v1/vms" && $0.status == 201 })
        #expect(try await vireo(["audit"], server: server, token: viewer).status == 1, "the audit trail is admin's")
        #expect(try await vireo(["token", "revoke", "dash"], server: server, token: token).status == 0)
        #expect(try await vireo(["vm", "list"], server: server, token: viewer).status == 1)
        #expect(try await vireo(["token", "revoke", "nope"], server: server, token: token).status == 3)
        up.kill(SIGTERM)
        #expect(!up.logText.contains(token))
        #expect(!up.logText.contains(join))
        #expect(up.logText.contains("admin.token"), "says where the token is")
    }
}

@Suite("The API over TLS", .serialized)
struct APITLSTests {
    @Test("--tls-cert/--tls-key serve https; the CLI and an agent trust it with --ca-cert, and nothing without it")
    func https() async throws {
        let dir = temporaryDirectory()
        // A certificate authority and a certificate for 127.0.0.1 it signed.
        let issued = try MigrationAuthority(name: "test API authority").issue(
            migration: .generate(), listener: .destination, address: "127.0.0.1"
        ).destination
        let (ca, cert, key) = (dir + "/ca.pem", dir + "/api.pem", dir + "/api-key.pem")
        try issued.caCertificate.write(toFile: ca, atomically: true, encoding: .utf8)
        try issued.certificate.write(toFile: cert, atomically: true, encoding: .utf8)
        try issued.privateKey.write(toFile: key, atomically: true, encoding: .utf8)
        let otherKey = dir + "/other-key.pem"
        try (try MigrationAuthority().issue(migration: .generate(), listener: .destination, address: "127.0.0.1")).source
            .privateKey.write(
                toFile: otherKey, atomically: true, encoding: .utf8)

        // Bad TLS settings are refused before anything starts, naming the option.
        let noKey = try await vireo(["up", "--data-dir", dir + "/bad", "--listen", "127.0.0.1:0", "--tls-cert", cert])
        #expect(noKey.status == 2 && noKey.stderr.contains("--tls-key"), "\(noKey.stderr)")
        let wrongKey = try await vireo([
            "up", "--data-dir", dir + "/bad", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", otherKey,
        ])
        #expect(wrongKey.status == 2 && wrongKey.stderr.contains("does not go with the certificate"), "\(wrongKey.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/bad/vireo.db"))

        try FileManager.default.createDirectory(atPath: dir + "/up", withIntermediateDirectories: true)
        let up = try UpProcess(dataDir: dir + "/up", extra: ["--tls-cert", cert, "--tls-key", key])
        defer { up.kill() }
        var url = ""
        try await eventually("vireo up serving https", within: 30) {
            guard up.process.isRunning else { throw VireoError(.internal, "vireo up exited: \(up.logText)") }
            guard let text = try? String(contentsOfFile: up.dataDir + "/endpoint", encoding: .utf8) else { return false }
            url = text.trimmingCharacters(in: .whitespacesAndNewlines)
            return try await vireo(["host", "list", "--ca-cert", ca], server: url).stdout.contains("ready")
        }
        #expect(url.hasPrefix("https://127.0.0.1:"))
        let created = try await vireo(["vm", "create", "a", "--wait", "--ca-cert", ca], server: url)
        #expect(created.status == 0, "\(created.stderr)")
        // Not trusted without the authority; not spoken to in plain HTTP.
        let untrusted = try await vireo(["vm", "list"], server: url)
        #expect(untrusted.status == 5 && untrusted.stderr.contains("not trusted"), "\(untrusted.stderr)")
        let plain = try await vireo(["vm", "list"], server: url.replacingOccurrences(of: "https://", with: "http://"))
        #expect(plain.status != 0)
        let missingCA = try await vireo(["vm", "list", "--ca-cert", dir + "/nope.pem"], server: url)
        #expect(missingCA.status == 2 && missingCA.stderr.contains("--ca-cert"), "\(missingCA.stderr)")

        // An agent on another host joins over TLS, trusting the same authority.
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: vireoBinary)
        agent.arguments = [
            "agent", "--controller", url, "--name", "h2", "--ca-cert", ca, "--state-dir", dir + "/h2", "--driver", "simulated",
            "--log-level", "warning",
        ]
        agent.standardOutput = FileHandle.nullDevice
        agent.standardError = FileHandle.nullDevice
        try agent.run()
        defer {
            agent.terminate()
            agent.waitUntilExit()
        }
        try await eventually("h2 joined over TLS", within: 30) {
            let hosts = try await vireo(["host", "list", "-o", "json", "--ca-cert", ca], server: url).stdout
            return (try? decodeJSON([HostView].self, hosts))?.contains { $0.name == "h2" && $0.state == .ready } == true
        }
    }
}

extension RealQEMU {
    @Suite("vireo up with real QEMU", .serialized)
    struct UpWithQEMUTests {
        @Test("kill -9 of vireo up leaves the guest running; the restarted agent re-adopts it, not a second one")
        func survivesRestart() async throws {
            let dataDir = temporaryDirectory()
            let qemu = ["--driver", "qemu", "--driver-opt", "images=\(TestQEMU.builder.cacheDirectory)"]
            let first = try UpProcess(dataDir: dataDir, driver: qemu)
            let server = try await first.ready()
            let created = try await vireo(
                ["vm", "create", "keep", "--image", "web", "--memory", "128MiB", "--wait", "--timeout", "90", "-o", "json"],
                server: server)
            #expect(created.status == 0, "\(created.stderr)")
            let vm = try decodeJSON(VMView.self, created.stdout)
            let address = try #require(vm.address)
            let before = try await guestStatus(address)
            // The guest cannot reach the API of the `vireo up` that runs it (on the host's
            // loopback, 10.0.2.2 from the guest's side): docs/security.md.
            let apiPort = try #require(server.split(separator: ":").last.map(String.init))
            let toAPI = try await guest(address, "/connect?to=10.0.2.2:\(apiPort)&timeoutMs=2000")
            #expect(toAPI["connected"] == .bool(false), "guest → vireo up's API: \(toAPI)")
            #expect(tcpConnects("127.0.0.1", Int(apiPort) ?? 0), "the API listens on the host's loopback")
            let pidFile = "\(dataDir)/vms/\(vm.id)/qemu.pid"
            let pid = try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)

            first.kill(SIGKILL)
            #expect(try await guestStatus(address)["bootId"] == before["bootId"], "the guest runs on without Vireo")

            // A port of its own: the old one may have been taken since (another test's client).
            let second = try UpProcess(dataDir: dataDir, driver: qemu)
            defer { second.kill(SIGTERM) }
            let again = try await second.ready()
            try await eventually("re-adopted and running", within: 60) {
                let shown = try await vireo(["vm", "show", "keep", "-o", "json"], server: again)
                return (try? decodeJSON(VMView.self, shown.stdout))?.state == .running
            }
            #expect(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == pid)
            let hosts = try await vireo(["host", "list"], server: again).stdout
            #expect(hosts.contains("HYPERVISOR") && hosts.contains("QEMU 7."), "host list names the hypervisor: \(hosts)")
            let after = try await guestStatus(address)
            #expect(after["bootId"] == before["bootId"])
            #expect((after["uptimeSeconds"]?.doubleValue ?? 0) > (before["uptimeSeconds"]?.doubleValue ?? .infinity))
            #expect(second.logText.contains("re-adopted"))
            let deleted = try await vireo(["vm", "delete", "keep", "--wait"], server: again)
            #expect(deleted.status == 0, "\(deleted.stderr)")
            #expect(kill(Int32(pid) ?? 0, 0) != 0, "deleting the VM ends its QEMU")
        }

        func guestStatus(_ address: String) async throws -> JSONValue {
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: "http://\(address)/status"), timeout: .seconds(5))
            return try JSONDecoder().decode(JSONValue.self, from: Data(buffer: try await response.body.collect(upTo: 1 << 16)))
        }
    }
}

@Suite("Hypervisor docs")
struct HypervisorDocsTests {
    @Test("docs/hypervisors.md holds the capability table the build generates")
    func capabilityTable() async throws {
        let generated = try await vireo(["driver", "list", "-o", "markdown"])
        #expect(generated.status == 0, "\(generated.stderr)")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let doc = try String(contentsOfFile: root + "/docs/hypervisors.md", encoding: .utf8)
        let begin = try #require(doc.range(of: "<!-- capabilities: begin -->\n"))
        let end = try #require(doc.range(of: "<!-- capabilities: end -->"))
        #expect(
            String(doc[begin.upperBound..<end.lowerBound]) == generated.stdout,
            "regenerate it with `vireo driver list -o markdown`")
        let json = try decodeJSON([DriverCapabilities].self, try await vireo(["driver", "list", "-o", "json"]).stdout)
        #expect(json.contains { $0.driver == "qemu" && $0.capabilities.contains(.snapshots) })
    }
}

/// A row of `vireo driver list -o json`.
struct DriverCapabilities: Codable {
    var driver: String
    var settings: [String: String]
    var capabilities: [Capability]
}
