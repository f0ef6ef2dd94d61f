import Foundation
import Testing
import VireoModel

/// The headline scenarios on real QEMU guests in a two-host testbed, through `vireo demo`:
/// a noisy neighbour the `slo` policy moves away so that web's objective is ok again, and a busy
/// host whose VMs nobody minds, which `slo` leaves alone and the black-box baseline does not.
/// The figures (breach to ok, downtime) are printed for docs/benchmarks.md, not asserted.
extension RealQEMU {
    @Suite("Rebalancing end to end (root, real QEMU)", .serialized)
    struct RebalanceEndToEndTests {
        struct Timeline: Decodable {
            struct Move: Decodable {
                var vm: String
                var from: String
                var to: String
                var state: String
            }
            var policy: String
            var breachDetectedAt: Double?
            var planAt: Double?
            var migrationStartedAt: Double?
            var migrationEndedAt: Double?
            var downtimeMs: Int?
            var recoveredAt: Double?
            var breachToOkSeconds: Double?
            var migrations: Int
            var moves: [Move]
            var explanation: String?
            var events: [String]
        }

        func demo(_ scenario: String, policy: String, duration: Int) async throws -> Timeline {
            let directory = temporaryDirectory() + "/demo"
            let run = try await vireo([
                "demo", scenario, "--policy", policy, "--dir", directory, "--name", "vrb", "--network", "198.19",
                "--images", TestQEMU.builder.cacheDirectory, "--duration", String(duration), "-o", "json",
            ])
            // The demo takes its testbed down (each run in a subdirectory); make sure, even when it failed half-way.
            for run in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                _ = try? await vireo(["testbed", "down", "--dir", directory + "/" + run])
            }
            try #require(run.status == 0, "\(run.stderr)")
            let timeline = try decodeJSON(Timeline.self, run.stdout)
            print("\(scenario) --policy \(policy): " + timeline.events.joined(separator: "; "))
            return timeline
        }

        @Test("a noisy neighbour makes web breach; slo moves the neighbour live and web is ok again")
        func noisyNeighbour() async throws {
            let timeline = try await demo("noisy-neighbour", policy: "slo", duration: 60)
            #expect(timeline.policy == "slo")
            let breach = try #require(timeline.breachDetectedAt, "web/latency breached")
            let plan = try #require(timeline.planAt, "a plan was made")
            let ended = try #require(timeline.migrationEndedAt, "the migration ended")
            let recovered = try #require(timeline.recoveredAt, "web/latency was ok again")
            #expect(plan >= breach - 1 && ended >= plan && recovered > ended)
            #expect(timeline.moves.map { "\($0.vm) \($0.from)→\($0.to) \($0.state)" } == ["noisy h1→h2 completed"])
            #expect(timeline.migrations == 1)
            #expect(timeline.downtimeMs != nil)
            // The policy acts on `warning` (budget burning) as well as on `breaching`.
            let why = timeline.explanation ?? ""
            #expect(why.hasPrefix("web/latency is warning") || why.hasPrefix("web/latency is breaching"), "\(why)")
            #expect(why.contains("moving noisy"), "\(why)")
            print(
                "noisy neighbour, slo: breach \(breach) s, plan \(plan) s, migration ended \(ended) s, "
                    + "downtime \(timeline.downtimeMs ?? -1) ms, ok \(recovered) s: breach to ok \(timeline.breachToOkSeconds ?? -1) s"
            )
        }

        @Test("a busy host whose VMs nobody minds: threshold moves the batch VM onto web's host, slo moves nothing")
        func misleadingCounters() async throws {
            let slo = try await demo("misleading-counters", policy: "slo", duration: 40)
            // No move; whether web stays ok also depends on this machine (its two CPUs are shared
            // with the controller and the load), so it is printed, not asserted.
            #expect(slo.migrations == 0, "\(slo.moves.map(\.vm))")
            let threshold = try await demo("misleading-counters", policy: "threshold", duration: 40)
            #expect(threshold.migrations >= 1)
            #expect(threshold.moves.first.map { "\($0.vm) \($0.from)→\($0.to)" } == "batch h2→h1")
            func breach(_ t: Timeline) -> String { t.breachDetectedAt.map { "\($0) s" } ?? "never" }
            print(
                "misleading counters: slo \(slo.migrations) migration(s) (web missed its objective: \(breach(slo))), "
                    + "threshold \(threshold.migrations) (web missed its objective: \(breach(threshold)))")
        }
    }
}
