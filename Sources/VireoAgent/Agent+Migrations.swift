import VireoAPI
import VireoDriver
import VireoModel

extension Agent {
    /// Acts on the migrations the controller lists for this host. Level-triggered: every order is
    /// looked at on every round, and what was done is remembered only as the report to send.
    func handleMigrations(_ orders: [MigrationOrder], statuses: [InstanceStatus], sent: [MigrationReport]) async {
        // The controller has seen what we sent about migrations it no longer lists: done with them.
        let listed = Set(orders.map(\.id))
        state.withLock { s in
            for report in sent where !listed.contains(report.id) && s.migrationReports[report.id] == report {
                s.migrationReports[report.id] = nil
            }
        }
        let current = Dictionary(statuses.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for order in orders {
            switch (order.kind ?? .live, order.role) {
            case (.live, .destination): await actAsDestination(order, status: current[order.vm.id])
            case (.live, .source): actAsSource(order)
            case (.cold, .source): coldSource(order)
            case (.cold, .destination): coldDestination(order)
            }
        }
    }

    // MARK: Cold moves

    /// Source of a cold move: stops the VM and offers its disk; once the move has ended, removes
    /// the VM (completed) or starts it again if it is meant to run (failed).
    private func coldSource(_ order: MigrationOrder) {
        let report = state.withLock { $0.migrationReports[order.id] }
        if report?.settled == true { return }
        switch order.state {
        case .pending where report == nil:
            launch(order) { agent in
                do {
                    let uri = try await agent.stopAndExport(
                        order.vm, exporting: order.storage != .shared, credentials: order.credentials)
                    return MigrationReport(id: order.id, state: .ready, incomingURI: uri)
                } catch {
                    // The VM stays here; if it ran, it runs again.
                    try? await agent.restartIfWanted(order.vm)
                    return MigrationReport(id: order.id, state: .failed, message: "\(error)")
                }
            }
        case .completed, .failed:
            launch(order) { agent in
                await agent.driver.closeDiskExport(order.vm.id)
                do {
                    if order.state == .completed {
                        // A shared disk is the destination's now: let go of the VM, not of its disk.
                        if order.storage == .shared {
                            try await agent.driver.release(order.vm.id)
                        } else {
                            try await agent.driver.delete(order.vm.id)
                        }
                    } else {
                        try await agent.restartIfWanted(order.vm)
                    }
                } catch {
                    agent.logger.error(
                        "cannot settle a cold move", metadata: ["vm": "\(order.vm.name)", "error": "\(error)"])
                    return MigrationReport(id: order.id, state: order.state, message: "\(error)")
                }
                agent.logger.info(
                    order.state == .completed ? "moved cold; removed here" : "cold move failed; kept here",
                    metadata: ["vm": "\(order.vm.name)", "migration": "\(order.id)"])
                return MigrationReport(id: order.id, state: order.state, settled: true)
            }
        default: break
        }
    }

    /// Destination of a cold move: makes the VM with a copy of the offered disk and starts it if it
    /// is meant to run; discards what it made if the move failed.
    private func coldDestination(_ order: MigrationOrder) {
        let report = state.withLock { $0.migrationReports[order.id] }
        if report?.settled == true { return }
        switch order.state {
        case .ready where report == nil:
            guard let uri = order.incomingURI else { return }
            launch(order) { agent in
                let started = ContinuousClock.now
                var spec = order.vm.instanceSpec
                spec.diskSource = uri
                do {
                    try await agent.driver.create(spec, diskCredentials: order.credentials)
                    let copiedMs = Int((ContinuousClock.now - started) / .milliseconds(1))
                    if order.vm.intent == .running { try await agent.driver.start(order.vm.id) }
                    let stats = MigrationStats(
                        totalTimeMs: 0, downtimeMs: 0, transferredBytes: 0, storageBytes: nil, storageTimeMs: copiedMs)
                    return MigrationReport(id: order.id, state: .completed, stats: stats, settled: true)
                } catch {
                    await agent.discardColdArrival(order)
                    return MigrationReport(id: order.id, state: .failed, message: "\(error)", settled: true)
                }
            }
        case .failed:
            launch(order) { agent in
                await agent.discardColdArrival(order)
                return MigrationReport(id: order.id, state: .failed, settled: true)
            }
        default: break
        }
    }

    /// Destination of a failed cold move: drops what it made — but a shared disk is the source's.
    private func discardColdArrival(_ order: MigrationOrder) async {
        if order.storage == .shared {
            try? await driver.release(order.vm.id)
        } else {
            try? await driver.delete(order.vm.id)
        }
    }

    /// Stops the VM (gracefully, then by force after the driver's grace period) and offers its
    /// disk (over TLS with the move's `credentials`, if any) — or, between hosts sharing storage,
    /// says the disk is there (`InstanceSpec.sharedDisk`).
    private func stopAndExport(_ vm: DesiredVM, exporting: Bool, credentials: MigrationCredentials?) async throws
        -> String
    {
        let deadline = ContinuousClock.now + .seconds(120)
        while true {
            guard let status = try await driver.status().first(where: { $0.id == vm.id }) else {
                throw VireoError(.notFound, "VM \(vm.name) is not on this host")
            }
            if status.state == .stopped || status.state == .failed { break }
            if status.state != .stopping { try await driver.stop(vm.id) }
            guard ContinuousClock.now < deadline else { throw VireoError(.unavailable, "VM \(vm.name) did not stop") }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard exporting else { return InstanceSpec.sharedDisk }
        let uri = try await driver.exportDisk(
            vm.id, listenAddress: settings.address ?? "127.0.0.1", credentials: credentials)
        logger.info(
            "offering the disk for a cold move",
            metadata: ["vm": "\(vm.name)", "uri": "\(uri)", "tls": "\(credentials.map { "peer \($0.peer)" } ?? "off")"])
        return uri
    }

    private func restartIfWanted(_ vm: DesiredVM) async throws {
        guard vm.intent == .running,
            let status = try await driver.status().first(where: { $0.id == vm.id }),
            status.state == .stopped || status.state == .failed
        else { return }
        try await driver.start(vm.id)
    }

    private func actAsDestination(_ order: MigrationOrder, status: InstanceStatus?) async {
        let report = state.withLock { $0.migrationReports[order.id] }
        if report?.settled == true { return }
        switch order.state {
        case .pending where report == nil:
            launch(order) { agent in
                let spec = order.vm.instanceSpec
                do {
                    let uri = try await agent.driver.prepareIncoming(
                        spec, guestAddress: order.guestAddress, listenAddress: agent.settings.address ?? "127.0.0.1",
                        storage: order.storage ?? .shared, credentials: order.credentials)
                    return MigrationReport(id: order.id, state: .ready, incomingURI: uri)
                } catch {
                    // prepareIncoming leaves nothing behind when it fails.
                    return MigrationReport(id: order.id, state: .failed, message: "\(error)", settled: true)
                }
            }
        case .pending, .ready, .running:
            // The guest resuming here means the source has handed it over; QEMU dying means the
            // migration failed on this side.
            if status?.state == .running {
                await settle(order, taking: true, report: report)
            } else if status?.state == .failed {
                await settle(order, taking: false, report: report, message: status?.message ?? "the incoming VM failed")
            }
        case .completed:
            await settle(order, taking: true, report: report)
        case .failed:
            await settle(order, taking: false, report: report)
        }
    }

    /// Destination: takes the VM over, or discards the half-made copy; then tells the controller.
    private func settle(_ order: MigrationOrder, taking: Bool, report: MigrationReport?, message: String? = nil) async {
        do {
            if taking { try await driver.finishIncoming(order.vm.id) } else { try await driver.abortIncoming(order.vm.id) }
        } catch {
            logger.error("cannot settle migration", metadata: ["migration": "\(order.id)", "error": "\(error)"])
            return
        }
        logger.info(
            taking ? "took over migrated VM" : "discarded incoming VM",
            metadata: ["vm": "\(order.vm.name)", "migration": "\(order.id)"])
        var settled = report ?? MigrationReport(id: order.id, state: order.state)
        if !taking { settled.state = .failed }
        settled.message = message ?? settled.message
        settled.settled = true
        state.withLock { $0.migrationReports[order.id] = settled }
        wakeSignal.signal()
    }

    private func actAsSource(_ order: MigrationOrder) {
        guard order.state == .ready, let uri = order.incomingURI else { return }
        guard state.withLock({ $0.migrationReports[order.id] == nil }) else { return }
        launch(order) { agent in
            let id = order.id
            do {
                let stats = try await agent.driver.migrate(order.vm.id, to: uri, credentials: order.credentials) {
                    progress in
                    agent.state.withLock {
                        $0.migrationReports[id] = MigrationReport(id: id, state: .running, progress: progress)
                    }
                }
                let report = MigrationReport(id: id, state: .completed, stats: stats)
                // Tell the controller at once; then the paused copy here goes (but not its disk).
                agent.state.withLock { $0.migrationReports[id] = report }
                agent.wakeSignal.signal()
                try await agent.driver.release(order.vm.id)
                agent.logger.info(
                    "migrated",
                    metadata: [
                        "vm": "\(order.vm.name)", "downtime-ms": "\(stats.downtimeMs)",
                        "total-ms": "\(stats.totalTimeMs)",
                    ])
                return report
            } catch {
                agent.logger.error("migration failed", metadata: ["vm": "\(order.vm.name)", "error": "\(error)"])
                return MigrationReport(id: id, state: .failed, message: "\(error)")
            }
        }
    }

    /// Runs `work` once per migration at a time and records the report it ends with.
    private func launch(_ order: MigrationOrder, _ work: @escaping @Sendable (Agent) async -> MigrationReport) {
        let claimed = state.withLock { s in
            s.migrationTasks.insert(order.id).inserted
        }
        guard claimed else { return }
        if order.role == .source {
            state.withLock { $0.migrationReports[order.id] = MigrationReport(id: order.id, state: .running) }
        }
        Task {
            let report = await work(self)
            self.state.withLock { s in
                s.migrationTasks.remove(order.id)
                s.migrationReports[order.id] = report
            }
            self.wakeSignal.signal()
        }
    }
}
