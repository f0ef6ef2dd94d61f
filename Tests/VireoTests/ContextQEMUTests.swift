import Foundation
import Testing
import VireoAPI
import VireoAgent
import VireoDriver
import VireoDriverQEMU
import VireoModel

extension RealQEMU {
    /// Contexts on real guests: what a reset brings back, what survives restarts and reboots, and
    /// who can reach whom. Guests are reached inside their private network's namespace.
    @Suite("Contexts (real QEMU)", .serialized)
    struct ContextQEMUTests {
        static func request(
            _ name: String, _ kind: ContextKind = .disposable, network: ContextNetwork = .isolated, memoryMiB: Int = 256,
            display: DisplayKind? = nil
        ) -> ContextOpenRequest {
            ContextOpenRequest(
                spec: ContextSpec(
                    name: name, kind: kind, image: "web", cpus: 1, memoryMiB: memoryMiB, network: network, display: display),
                wait: true)
        }

        static func manager(directory: String, driver: QEMUDriver, pool: [String: Int] = [:]) throws -> ContextManager {
            try ContextManager(
                settings: .init(directory: directory + "/contexts", hostName: "desk", pool: pool), driver: driver)
        }

        /// Runs curl against the context's guest inside its network; returns the body. A connection
        /// that cannot be made (curl's 7, no request sent) is tried again, for up to 20 s: in a full
        /// run on a busy 2-core machine a TCG guest once could not be reached for a moment, right
        /// after another context's reset, and answered when asked later.
        static func guest(_ driver: QEMUDriver, _ context: Context, _ method: String, _ path: String) async throws -> String {
            let namespace = driver.privateNetworkNamespace(ContextManager.privateNetwork(context.network, vm: context.vm))
            let address = try #require(context.address, "context \(context.name) has an address")
            let deadline = ContinuousClock.now + .seconds(20)
            var result = (status: Int32(0), output: "")
            repeat {
                result = try await offPool {
                    try run(
                        "nsenter", ["--net=\(namespace)", "curl", "-s", "-m", "15", "-X", method, "http://\(address)\(path)"])
                }
                if result.status == 7 { try await Task.sleep(for: .seconds(1)) }
            } while result.status == 7 && ContinuousClock.now < deadline
            #expect(result.status == 0, "curl \(path) in \(context.name)'s network: \(result.output)")
            return result.output
        }

        static func marks(_ driver: QEMUDriver, _ context: Context) async throws -> JSONValue {
            try decodeJSON(JSONValue.self, try await guest(driver, context, "GET", "/mark"))
        }

        static func mark(_ driver: QEMUDriver, _ context: Context, _ value: String) async throws {
            _ = try await guest(driver, context, "POST", "/mark?value=\(value)")
            let marks = try await Self.marks(driver, context)
            #expect(marks == .object(["disk": .string(value), "memory": .string(value), "tmpfs": .string(value)]))
        }

        static let empty = JSONValue.object(["disk": .string(""), "memory": .string(""), "tmpfs": .string("")])

        @Test("a reset throws away disk writes and memory; keep makes the current state the clean one")
        func resetAndKeep() async throws {
            let directory = temporaryDirectory()
            let driver = TestQEMU.driver(stateDirectory: directory + "/vms")
            let contexts = try Self.manager(directory: directory, driver: driver)
            await contexts.start(onChange: {})
            let browser = try await contexts.openContext(Self.request("browser"))
            defer { Task { _ = try? await contexts.closeContext("browser", host: nil) } }
            #expect(browser.state == .running)
            #expect(try await Self.marks(driver, browser) == Self.empty)

            try await Self.mark(driver, browser, "session-1")
            let reset = try await contexts.resetContext("browser", host: nil, force: false)
            #expect(reset.resetMs != nil)
            #expect(try await Self.marks(driver, reset) == Self.empty, "nothing of the session survives a reset")

            try await Self.mark(driver, reset, "kept")
            _ = try await contexts.keepContext("browser", host: nil)
            try await Self.mark(driver, reset, "session-2")
            _ = try await contexts.resetContext("browser", host: nil, force: false)
            let back = try await Self.marks(driver, reset)
            #expect(back == .object(["disk": .string("kept"), "memory": .string("kept"), "tmpfs": .string("kept")]))
            #expect(try await driver.snapshots(browser.vm) == ["clean-2"])
            #expect(try await contexts.contextLogs("browser", host: nil, tail: nil).contains("VIREO-READY"))
            _ = try await contexts.closeContext("browser", host: nil)
            #expect(try await driver.status().isEmpty)
        }

        @Test("a persistent context keeps its disk across other contexts' resets, an agent restart and a host reboot")
        func persistence() async throws {
            let directory = temporaryDirectory()
            var driver = TestQEMU.driver(stateDirectory: directory + "/vms")
            var contexts = try Self.manager(directory: directory, driver: driver)
            await contexts.start(onChange: {})
            let work = try await contexts.openContext(Self.request("work", .persistent, memoryMiB: 192))
            let browser = try await contexts.openContext(Self.request("browser", memoryMiB: 192))
            try await Self.mark(driver, work, "report")
            try await Self.mark(driver, browser, "visited")
            _ = try await contexts.resetContext("browser", host: nil, force: false)
            #expect(try await Self.marks(driver, work)["disk"] == .string("report"))

            // The agent restarts: QEMU runs on; a new driver and manager re-adopt both.
            await driver.detach()
            await contexts.stop()
            driver = TestQEMU.driver(stateDirectory: directory + "/vms")
            _ = try await driver.recover()
            contexts = try Self.manager(directory: directory, driver: driver)
            await contexts.start(onChange: {})
            #expect(
                try await Self.marks(driver, work)
                    == .object(["disk": .string("report"), "memory": .string("report"), "tmpfs": .string("report")]))

            // The host reboots: every QEMU dies; the next agent brings both back.
            await driver.detach()
            await contexts.stop()
            for status in try await driver.status() {
                if let pid = try? String(contentsOfFile: "\(directory)/vms/\(status.id)/qemu.pid", encoding: .utf8) {
                    kill(Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, SIGKILL)
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            driver = TestQEMU.driver(stateDirectory: directory + "/vms")
            _ = try await driver.recover()
            contexts = try Self.manager(directory: directory, driver: driver)
            await contexts.start(onChange: {})
            try await eventually("both run again", within: 120) {
                try await contexts.listContexts().items.allSatisfy { $0.state == .running }
            }
            let items = try await contexts.listContexts().items
            let workAfter = try #require(items.first { $0.name == "work" })
            let browserAfter = try #require(items.first { $0.name == "browser" })
            let workMarks = try await Self.marks(driver, workAfter)
            #expect(workMarks["disk"] == .string("report"), "the work survives on disk")
            #expect(workMarks["memory"] == .string(""), "memory does not survive a reboot")
            #expect(try await Self.marks(driver, browserAfter) == Self.empty, "the disposable is back clean")
            _ = try await contexts.closeContext("work", host: nil)
            _ = try await contexts.closeContext("browser", host: nil)
            #expect(try await driver.status().isEmpty)
        }

        @Test("isolated contexts cannot reach each other, contexts on one named network can, and a display answers")
        func isolation() async throws {
            let directory = temporaryDirectory()
            let driver = TestQEMU.driver(stateDirectory: directory + "/vms")
            let contexts = try Self.manager(directory: directory, driver: driver)
            await contexts.start(onChange: {})
            // A server VM on the host's own network, beside the contexts.
            let server = InstanceSpec(id: .generate(), name: "server", image: "web", cpus: 1, memoryMiB: 128)
            try await driver.create(server)
            try await driver.start(server.id)
            defer { Task { try? await driver.delete(server.id) } }
            let browser = try await contexts.openContext(Self.request("browser", memoryMiB: 128))
            let work = try await contexts.openContext(Self.request("work", .persistent, memoryMiB: 128, display: .vnc))
            let a = try await contexts.openContext(Self.request("a", network: .named("office"), memoryMiB: 128))
            let b = try await contexts.openContext(Self.request("b", .persistent, network: .named("office"), memoryMiB: 128))
            let serverStatus = try await settle(driver, server.id, to: .running) {
                try? await Task.sleep(for: .milliseconds(250))
            }

            func connects(_ from: Context, to address: String) async throws -> Bool {
                let answer = try decodeJSON(
                    JSONValue.self, try await Self.guest(driver, from, "GET", "/connect?to=\(address)&timeoutMs=2000"))
                return answer["connected"] == .bool(true)
            }
            #expect(try await connects(a, to: "\(try #require(b.address)):80"), "one named network: reachable")
            #expect(try await connects(b, to: "\(try #require(a.address)):80"))
            #expect(!(try await connects(browser, to: "\(try #require(work.address)):80")), "isolated from each other")
            #expect(!(try await connects(browser, to: "\(try #require(a.address)):80")))
            #expect(!(try await connects(a, to: "\(try #require(work.address)):80")))
            let serverAddress = try #require(serverStatus.address)
            #expect(!(try await connects(browser, to: serverAddress)), "the server VM's forwarded port is not reachable")

            let display = try #require(work.display)
            let greeting = try await offPool { try run("curl", ["-s", "-m", "3", "telnet://\(display)"]) }
            #expect(greeting.output.hasPrefix("RFB 003.008"), "VNC greeting: \(greeting.output.prefix(40))")
            for name in ["browser", "work", "a", "b"] { _ = try await contexts.closeContext(name, host: nil) }
            #expect(try await driver.status().map(\.id) == [server.id])
        }

        @Test(
            "kill -9 of the agent in the middle of a reset or a keep leaves the old or the new clean state; the next start repairs"
        )
        func crashRepair() async throws {
            let dataDir = temporaryDirectory()
            let qemu = ["--driver", "qemu", "--driver-opt", "images=\(TestQEMU.builder.cacheDirectory)"]
            var up = try UpProcess(dataDir: dataDir, driver: qemu)
            var server = try await up.ready()
            let opened = try await vireo(["context", "open", "browser", "--disposable", "--wait", "-o", "json"], server: server)
            #expect(opened.status == 0, "\(opened.stderr)")
            let context = try decodeJSON(Context.self, opened.stdout)
            let namespace = QEMUDriver.privateNetworkNamespace(
                stateDirectory: dataDir + "/vms", network: ContextManager.privateNetwork(context.network, vm: context.vm))
            let address = try #require(context.address)
            func curl(_ method: String, _ path: String) async throws -> String {
                try await offPool {
                    try run(
                        "nsenter", ["--net=\(namespace)", "curl", "-s", "-m", "15", "-X", method, "http://\(address)\(path)"])
                }.output
            }
            let book = dataDir + "/contexts/contexts.json"
            /// Sends the verb and kills `vireo up` as soon as the book says it is under way.
            func killDuring(_ verb: String, pending: String) async throws {
                let target = server
                let send = Task { try await vireo(["context", verb, "browser"], server: target) }
                try await eventually("\(verb) under way", within: 30) {
                    ((try? String(contentsOfFile: book, encoding: .utf8)) ?? "").contains("\"pending\":{\"\(pending)\"")
                }
                up.kill(SIGKILL)
                _ = try? await send.value
            }

            _ = try await curl("POST", "/mark?value=session")
            try await killDuring("reset", pending: "reset")
            up = try UpProcess(dataDir: dataDir, driver: qemu)
            server = try await up.ready()
            try await eventually("repaired and running", within: 60) {
                let shown = try await vireo(["context", "show", "browser", "-o", "json"], server: server)
                return (try? decodeJSON(Context.self, shown.stdout))?.state == .running
            }
            #expect(try decodeJSON(JSONValue.self, try await curl("GET", "/mark"))["memory"] == .string(""), "the reset was done")
            #expect(!((try? String(contentsOfFile: book, encoding: .utf8)) ?? "").contains("pending"))

            _ = try await curl("POST", "/mark?value=kept")
            try await killDuring("keep", pending: "keep")
            up = try UpProcess(dataDir: dataDir, driver: qemu)
            server = try await up.ready()
            try await eventually("repaired and running", within: 60) {
                let shown = try await vireo(["context", "show", "browser", "-o", "json"], server: server)
                return (try? decodeJSON(Context.self, shown.stdout))?.state == .running
            }
            #expect(try await vireo(["context", "reset", "browser"], server: server).status == 0)
            let after = try decodeJSON(JSONValue.self, try await curl("GET", "/mark"))
            #expect(
                after["memory"] == .string("") || after["memory"] == .string("kept"), "the old or the new clean state: \(after)")
            #expect(after["disk"] == after["memory"], "disk and memory from the same clean state: \(after)")
            #expect(try await vireo(["context", "close", "browser"], server: server).status == 0)
            up.kill(SIGTERM)
        }

        @Test("the pool hands out a booted disposable whose guest answers, and refills")
        func pool() async throws {
            let directory = temporaryDirectory()
            let driver = TestQEMU.driver(stateDirectory: directory + "/vms")
            let contexts = try Self.manager(directory: directory, driver: driver, pool: ["web": 1])
            await contexts.start(onChange: {})
            try await eventually("the pool is ready", within: 120) {
                try await contexts.listContexts().pools.first?.ready == 1
            }
            #expect((try await contexts.listContexts().pools.first?.residentMiB ?? 0) > 0)
            var request = Self.request("browser")
            request.wait = false
            let opened = try await contexts.openContext(request)
            #expect(opened.fromPool)
            #expect(opened.state == .running)
            #expect(try await Self.marks(driver, opened) == Self.empty)
            try await eventually("the pool refilled", within: 120) {
                try await contexts.listContexts().pools.first?.ready == 1
            }
            await contexts.stop()
            _ = try await contexts.closeContext("browser", host: nil)
            for status in try await driver.status() { try await driver.delete(status.id) }
        }
    }
}

/// Runs a command to completion; its standard output and error together.
func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [tool] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
