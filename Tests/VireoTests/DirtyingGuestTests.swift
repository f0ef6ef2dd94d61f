import AsyncHTTPClient
import Foundation
import Testing
import VireoDriver
import VireoDriverQEMU
import VireoModel

/// The `web` guest's memory-dirtying load, which live-migration benchmarks run during a migration.
extension RealQEMU {
    @Suite("web guest dirtying load (real QEMU)")
    struct DirtyingGuestTests {
        let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(250)) }

        func request(_ address: String, post: Bool = false, _ path: String) async throws -> (status: UInt, body: String) {
            var request = HTTPClientRequest(url: "http://\(address)\(path)")
            request.method = post ? .POST : .GET
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            return (response.status.code, String(buffer: try await response.body.collect(upTo: 1 << 16)))
        }

        func status(_ address: String) async throws -> JSONValue {
            try JSONDecoder().decode(JSONValue.self, from: Data(try await request(address, "/status").body.utf8))
        }

        @Test("POST /dirty starts a load that /status reports and that writes pages; mib=0 stops it")
        func dirtying() async throws {
            let driver = TestQEMU.driver()
            let vm = InstanceSpec(id: .generate(), name: "dirty", image: "web", cpus: 1, memoryMiB: 256)
            try await driver.create(vm)
            do {
                try await driver.start(vm.id)
                let address = try #require(try await settle(driver, vm.id, to: .running, tick: tick).address)
                #expect(try await status(address)["dirtyMiB"] == .number(0))

                let started = try await request(address, post: true, "/dirty?mib=64")
                #expect(started.status == 200)
                #expect(started.body.contains("\"dirtyMiB\":64"))
                let first = try await status(address)
                #expect(first["dirtyMiB"] == .number(64))
                #expect(first["dirtyRateMiBps"] == .number(0))
                // Pages keep being written: at least one more full pass of 64 MiB (16,384 pages).
                let firstPages = first["dirtiedPages"]?.doubleValue ?? 0
                try await eventually("the guest writes another 64 MiB of pages", within: 120) {
                    (try await status(address)["dirtiedPages"]?.doubleValue ?? 0) >= firstPages + 16_384
                }
                print(
                    "dirtying 64 MiB in a 256 MiB guest (\(TestQEMU.accelerator)): \(try await request(address, "/status").body)")
                // Every page it came back to held what it had written there: the check finds nothing
                // where nothing was lost.
                #expect(try await status(address)["lostWrites"] == .number(0))

                // Bad input is refused with the parameter named, and leaves the load as it was.
                #expect(try await request(address, "/dirty?mib=1").status == 405)
                let bad = try await request(address, post: true, "/dirty?mib=lots")
                #expect(bad.status == 400 && bad.body.hasPrefix("mib:"))
                let badRate = try await request(address, post: true, "/dirty?mib=8&rate=-1")
                #expect(badRate.status == 400 && badRate.body.hasPrefix("rate:"))
                #expect(try await status(address)["dirtyMiB"] == .number(64))
                let tooMuch = try await request(address, post: true, "/dirty?mib=4096")
                #expect(tooMuch.status == 400 && tooMuch.body.contains("available"))
                #expect(try await status(address)["dirtyMiB"] == .number(64))

                #expect(try await request(address, post: true, "/dirty?mib=0").status == 200)
                let stopped = try await status(address)
                #expect(stopped["dirtyMiB"] == .number(0))
                try await Task.sleep(for: .milliseconds(300))
                #expect(try await status(address)["dirtiedPages"] == stopped["dirtiedPages"])

                // A rate-limited load is reported with its rate; `/` and the metrics are as before.
                #expect(try await request(address, post: true, "/dirty?mib=16&rate=8").status == 200)
                #expect(try await status(address)["dirtyRateMiBps"] == .number(8))
                #expect(try await request(address, "/").body.contains("\"ok\":true"))
                #expect(try await request(address, "/metrics").body.contains("vireo_web_requests_total 1\n"))
            } catch {
                try? await driver.delete(vm.id)
                throw error
            }
            try await driver.delete(vm.id)
        }
    }
}
