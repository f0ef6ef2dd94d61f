import Foundation
import Logging
import ServiceLifecycle

/// The controller's background work: places pending VMs and watches host liveness, every tick,
/// until graceful shutdown.
public struct ControllerLoops: Service {
    let controller: Controller
    let logger: Logger

    public init(controller: Controller, logger: Logger = Logger(label: "vireo.controller")) {
        self.controller = controller
        self.logger = logger
    }

    public func run() async throws {
        let interval = controller.settings.tickInterval
        var lastCompaction = ContinuousClock.now
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await controller.checkHostLiveness()
                try await controller.schedulePending()
                try await controller.expireMigrations()
                await controller.evaluateSLOs()
                try await controller.settlePlans()
                try await controller.rebalanceIfDue()
                try await controller.telemetry.flush()
                if ContinuousClock.now - lastCompaction > .seconds(60) {
                    lastCompaction = .now
                    try await controller.telemetry.store.compact(now: Int64(Date().timeIntervalSince1970 * 1000))
                }
            } catch {
                logger.error("controller tick failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
        // Samples taken in but not yet written are written before the process ends.
        try? await controller.telemetry.flush()
    }
}
