import Foundation
import VireoDriver
import VireoModel

extension QEMUDriver {
    public func prepareIncoming(_ spec: InstanceSpec, guestAddress: String?, listenAddress: String) async throws
        -> String
    {
        if let existing = instances[spec.id] {
            // The order is repeated on every heartbeat until the source starts sending.
            if let uri = existing.incomingURI, existing.state == .starting { return uri }
            throw VireoError(.conflict, "VM \(spec.name) is already on this host (\(existing.state))")
        }
        // A private network is this host's: its VMs would arrive cut off from their peers.
        if let network = spec.privateNetwork {
            throw VireoError(
                .unsupported, "privateNetwork '\(network)': VMs on private networks cannot be live-migrated")
        }
        guard let shared = configuration.sharedDisks else {
            throw VireoError(.failedPrecondition, "live migration needs shared storage (driver setting shared-disks)")
        }
        let disk = "\(shared)/\(spec.id).qcow2"
        guard FileManager.default.fileExists(atPath: disk) else {
            throw VireoError(.failedPrecondition, "the VM's disk \(disk) is not visible on this host")
        }
        let image = try await image(named: spec.image)
        let network: GuestNetwork
        switch configuration.network {
        case .none: network = .none
        case .user: network = .user(hostPort: try Self.freeLoopbackPort())
        case .tap(let tap):
            // The guest keeps its address: its kernel configured it on the source.
            let address =
                try guestAddress.map { "\($0)/\(tap.guestPrefix)" }
                ?? tap.allocate(excluding: Set(instances.values.compactMap { Self.address(of: $0.record.network) }))
            network = .tap(device: TapNetwork.device(for: spec.id), address: address, gateway: tap.gateway)
        }
        var record = Record(
            spec: spec, image: image, mac: QEMUInvocation.mac(for: spec.id), network: network, disk: disk,
            ownsDisk: false)
        record.vncPort = spec.display == .vnc ? try allocateDisplayPort() : nil
        let paths = paths(spec.id)
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        try Self.write(record, to: paths.record)
        let uri = "tcp:\(listenAddress):\(try Self.freePort(on: listenAddress))"
        var instance = Instance(record: record, state: .starting)
        instance.run = 1
        instance.incomingURI = uri
        instances[spec.id] = instance
        do {
            try await launch(spec.id, run: 1, incoming: uri)
        } catch {
            await forget(spec.id, record, removingDisk: false)
            throw error
        }
        logger.info("waiting for incoming migration", metadata: ["vm": "\(spec.name)", "uri": "\(uri)"])
        return uri
    }

    public func migrate(_ id: VMID, to uri: String, progress: @escaping @Sendable (MigrationProgress) -> Void)
        async throws -> MigrationStats
    {
        let qmp = try running(id)
        guard instances[id]?.state == .running else {
            throw VireoError(.failedPrecondition, "VM \(id) is not running")
        }
        // Converge even when the guest dirties memory quickly: no bandwidth cap below the link's,
        // throttle the vCPUs when needed, and accept up to the downtime the SLOs can take.
        try await qmp.execute(QMP.MigrateSetCapabilities([.autoConverge: true]))
        try await qmp.execute(
            QMP.MigrateSetParameters(
                maxBandwidth: configuration.migrationBandwidth,
                downtimeLimitMs: configuration.migrationDowntimeLimitMs,
                cpuThrottleInitialPercent: configuration.migrationThrottleInitialPercent,
                cpuThrottleIncrementPercent: configuration.migrationThrottleIncrementPercent))
        // Paused: the guest stops before the first page is read and resumes on the destination
        // (which sees it arrive paused and continues it); downtime is the whole transfer.
        let mode = configuration.migrationMode.resolved(for: configuration.accelerator)
        let paused = mode == .paused
        let pausedAt = ContinuousClock.now
        if paused { try await qmp.execute(QMP.Stop()) }
        let migrateAt = ContinuousClock.now
        do {
            try await qmp.execute(QMP.Migrate(uri: uri))
        } catch {
            if paused { try? await resumeAfterFailedMigration(qmp) }
            throw error
        }
        let deadline = ContinuousClock.now + configuration.migrationTimeout
        while true {
            let info = try await qmp.execute(QMP.QueryMigrate())
            switch info.status {
            case .completed:
                // Read exactly at completion, the times can still be 0: ask again (PLATFORM.md).
                var final = info
                for _ in 0..<10 where (final.totalTimeMs ?? 0) == 0 {
                    try await Task.sleep(for: .milliseconds(20))
                    final = try await qmp.execute(QMP.QueryMigrate())
                }
                let totalMs = final.totalTimeMs ?? 0
                return MigrationStats(
                    totalTimeMs: totalMs,
                    // QEMU counts its own final pause; a paused migration paused the guest before it.
                    downtimeMs: paused
                        ? Self.milliseconds(migrateAt - pausedAt) + totalMs : final.downtimeMs ?? 0,
                    transferredBytes: final.ram?.transferred ?? 0,
                    setupTimeMs: final.setupTimeMs, mode: mode)
            case .failed, .cancelled:
                let reason = info.errorDescription ?? info.status.rawValue
                try await resumeAfterFailedMigration(qmp)
                throw VireoError(.unavailable, "migration to \(uri) failed: \(reason); the VM keeps running here")
            default:
                if let ram = info.ram {
                    progress(
                        MigrationProgress(
                            transferredBytes: ram.transferred, remainingBytes: ram.remaining, totalBytes: ram.total,
                            dirtyPagesPerSecond: ram.dirtyPagesRate))
                }
                if ContinuousClock.now > deadline {
                    _ = try? await qmp.execute(QMP.MigrateCancel())
                    try await resumeAfterFailedMigration(qmp)
                    throw VireoError(
                        .unavailable,
                        "migration to \(uri) did not finish within \(configuration.migrationTimeout); cancelled, "
                            + "the VM keeps running here")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// A migration that fails in its last phase can leave the source paused: run it again.
    private func resumeAfterFailedMigration(_ qmp: QMPClient) async throws {
        let status = try await qmp.execute(QMP.QueryStatus())
        if !status.running { _ = try? await qmp.execute(QMP.Cont()) }
    }

    public func release(_ id: VMID) async throws {
        guard let instance = instances[id] else { return }
        instances[id]?.stopRequested = true
        if let pid = instance.pid, Self.isQEMU(pid, running: id) {
            // The migration completed: the disk is flushed and handed over, and this copy is paused
            // for good. `quit` would take QEMU over a second to wind down here; nothing is lost by
            // not waiting for it.
            kill(pid, SIGKILL)
            _ = await Self.waitForExit(pid, timeout: .seconds(2))
        }
        // The console history stays with the VM: the destination appends to what the source had.
        await forget(id, instance.record, removingDisk: false)
    }

    public func finishIncoming(_ id: VMID) async throws {
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        instance.record.ownsDisk = true
        instance.incomingURI = nil
        instances[id] = instance
        try Self.write(instance.record, to: paths(id).record)
    }

    public func abortIncoming(_ id: VMID) async throws {
        guard let instance = instances[id] else { return }
        guard !instance.record.ownsDisk else {
            throw VireoError(.conflict, "VM \(id) is no incoming migration here; not discarding it")
        }
        try await delete(id)
    }
}
