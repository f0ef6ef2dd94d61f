import Foundation
import Logging
import ServiceLifecycle

/// The controller's background work: places pending VMs, watches host liveness, judges objectives
/// and rebalances every tick, and beside that records the usage history, until graceful shutdown; then it ends the
/// event streams and the agents' watches, so the HTTP server (shut down after it) can finish their responses. Ticks are paced
/// by `clock`; the time each step decides with is the controller's own injected `now`.
public struct ControllerLoops<C: Clock>: Service where C.Duration == Duration {
    let controller: Controller
    let logger: Logger
    let clock: C

    public init(controller: Controller, clock: C = ContinuousClock(), logger: Logger = Logger(label: "vireo.controller")) {
        self.controller = controller
        self.clock = clock
        self.logger = logger
    }

    public func run() async throws {
        // The usage history beside the ticks: a step paced over seconds (`historyShare`) must
        // not hold up placing VMs and watching hosts.
        await withDiscardingTaskGroup { group in
            group.addTask { await recordHistory() }
            await tick()
        }
        // Samples taken in but not yet written are written before the process ends.
        try? await controller.telemetry.flush()
        // Event streams never end on their own, and watches end with their wait: a console left
        // open would hold the HTTP server's graceful shutdown (it waits for every response to
        // finish) for ever, and each agent's watch for up to a heartbeat interval.
        controller.events.close()
        controller.desiredWatch.close()
    }

    private func tick() async {
        let interval = controller.settings.tickInterval
        var lastCompaction = clock.now
        var lastAuditPrune: C.Instant?
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await controller.checkHostLiveness()
                try await controller.schedulePending()
                try await controller.expireMigrations()
                await controller.evaluateSLOs()
                try await controller.settlePlans()
                try await controller.rebalanceIfDue()
                try await controller.telemetry.flush()
                if lastCompaction.duration(to: clock.now) > .seconds(60) {
                    lastCompaction = clock.now
                    try await controller.telemetry.store.compact(now: Int64(controller.now().timeIntervalSince1970 * 1000))
                }
                // At start, then hourly: the audit trail keeps what its retention says.
                if lastAuditPrune.map({ $0.duration(to: clock.now) > .seconds(3_600) }) ?? true {
                    lastAuditPrune = clock.now
                    try await controller.pruneAudit()
                }
            } catch {
                logger.error("controller tick failed", metadata: ["error": "\(error)"])
            }
            try? await clock.sleep(for: interval)
        }
    }

    private func recordHistory() async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await controller.recordUsageIfDue()
            } catch {
                logger.error("cannot record the usage history", metadata: ["error": "\(error)"])
            }
            try? await clock.sleep(for: controller.settings.tickInterval)
        }
    }
}
