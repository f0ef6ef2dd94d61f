import Foundation
import VireoDriver
import VireoModel
import VireoProcess
import VireoTunnel

extension QEMUDriver {
    /// With `credentials`, the migration's port is an `IncomingMigrationTunnel`: only a peer with
    /// this migration's source certificate gets through, to QEMU waiting on a unix socket private
    /// to the VM; anyone else is refused without QEMU hearing of it. A copied disk's NBD export is
    /// QEMU's own, with the same credentials and the same admitted peer (`tls-creds-x509`,
    /// `authz-simple`): QEMU starts with `-incoming defer` and loads them first.
    public func prepareIncoming(
        _ spec: InstanceSpec, guestAddress: String?, listenAddress: String, storage: MigrationStorage,
        credentials: MigrationCredentials?
    ) async throws -> String {
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
        let paths = paths(spec.id)
        let disk = try DiskRoom.incomingDisk(
            for: spec, storage: storage, sharedDisks: configuration.sharedDisks, vmDirectory: paths.directory,
            stateDirectory: configuration.stateDirectory)
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
            ownsDisk: false, memoryTrimKiB: QEMUInvocation.memoryTrimKiB(on: configuration.accelerator))
        record.vncPort = spec.display == .vnc ? try allocateDisplayPort() : nil
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        try Self.write(record, to: paths.record)
        let diskPort = storage == .copy ? try Self.freePort(on: listenAddress) : nil
        var tunnel: IncomingMigrationTunnel?
        if let credentials {
            tunnel = try await IncomingMigrationTunnel(
                host: listenAddress, credentials: credentials, deliveringTo: paths.incoming, logger: logger)
        }
        let migrationURI = "tcp:\(listenAddress):\(try tunnel?.port ?? Self.freePort(on: listenAddress))"
        // Where QEMU itself waits: the migration's port, or the tunnel's end on this host.
        let qemuURI = tunnel == nil ? migrationURI : "unix:\(paths.incoming)"
        var endpoint = IncomingEndpoint(migrationURI: migrationURI, memoryTrimKiB: record.memoryTrimKiB ?? 0)
        endpoint.disk = diskPort.map { .init(host: listenAddress, port: $0) }
        var instance = Instance(record: record, state: .starting)
        instance.run = 1
        instance.incomingURI = endpoint.description
        instance.incomingTunnel = tunnel
        instances[spec.id] = instance
        do {
            if endpoint.disk != nil {
                let size = "\(spec.diskMiB ?? ImageCatalogue.virtualDiskMiB)M"
                try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2", disk, size])
            }
            if let target = endpoint.disk {
                // QEMU waits for the migration only once its disk is offered to the source (with
                // the credentials loaded first, if any).
                try await launch(spec.id, run: 1, incoming: "defer")
                let qmp = try running(spec.id)
                if let credentials {
                    try await addTLS(spec.id, qmp: qmp, credentials: credentials, endpoint: .server)
                }
                try await qmp.execute(
                    QMP.NBDServerStart(
                        host: target.host, port: target.port, tlsCreds: credentials == nil ? nil : Self.incomingTLS,
                        tlsAuthz: credentials == nil ? nil : Self.incomingAuthz))
                try await qmp.execute(
                    QMP.BlockExportAdd(id: Self.diskExport, nodeName: QEMUInvocation.diskNode, writable: true))
                instances[spec.id]?.incomingDiskExport = true
                try await qmp.execute(QMP.MigrateIncoming(uri: qemuURI))
            } else {
                try await launch(spec.id, run: 1, incoming: qemuURI)
            }
        } catch {
            // Discarded while it was being prepared: the discard has forgotten it (and what is
            // here now, if anything, is another preparation's).
            guard instances[spec.id]?.incomingURI == endpoint.description else {
                await tunnel?.close()
                throw error
            }
            if let pid = instances[spec.id]?.pid { kill(pid, SIGKILL) }
            await forget(spec.id, record, removingDisk: storage == .copy)
            throw error
        }
        logger.info(
            "waiting for incoming migration",
            metadata: [
                "vm": "\(spec.name)", "uri": "\(endpoint)", "storage": "\(storage.rawValue)",
                "tls": "\(credentials.map { "peer \($0.peer)" } ?? "off")",
            ])
        return endpoint.description
    }

    /// Destination of a copy-storage move whose guest has arrived: the source ended its mirror (and
    /// its connection) before it sent the last state, so the export and the NBD server go. Once.
    func closeIncomingDiskExport(_ id: VMID, qmp: QMPClient) async {
        guard instances[id]?.incomingDiskExport == true else { return }
        instances[id]?.incomingDiskExport = false
        do {
            try await qmp.execute(QMP.BlockExportDel(id: Self.diskExport))
            try await qmp.execute(QMP.NBDServerStop())
        } catch {
            logger.warning("cannot close the incoming disk's export", metadata: ["vm": "\(id)", "error": "\(error)"])
        }
    }

    /// The NBD export of an incoming copy-storage migration's disk.
    static let diskExport = "vireo-disk-in"
    /// The source's block node for the destination's export, and the mirror job into it.
    static let mirrorNode = "vireo-mirror"

    /// With `credentials`, the memory stream goes through an `OutgoingMigrationTunnel` (QEMU sends
    /// to a unix socket of the VM's; the tunnel seals it for a destination whose certificate is
    /// this migration's and names the address in `uri`), and a copied disk's mirror over QEMU's
    /// own TLS. Tunnel and credentials go again when the migration ends, however it ends.
    public func migrate(
        _ id: VMID, to uri: String, credentials: MigrationCredentials?,
        progress: @escaping @Sendable (MigrationProgress) -> Void
    ) async throws -> MigrationStats {
        let qmp = try running(id)
        guard instances[id]?.state == .running else {
            throw VireoError(.failedPrecondition, "VM \(id) is not running")
        }
        let endpoint = try IncomingEndpoint(parsing: uri)
        if let record = instances[id]?.record {
            try IncomingEndpoint.checkSameRAM(
                vm: record.spec.name, memoryMiB: record.spec.memoryMiB, sourceTrimKiB: record.memoryTrimKiB ?? 0,
                destinationTrimKiB: endpoint.memoryTrimKiB)
        }
        guard let credentials else {
            return try await send(id, qmp: qmp, to: endpoint, via: endpoint.migrationURI, tls: nil, progress: progress)
        }
        let tunnel: OutgoingMigrationTunnel
        do {
            if endpoint.disk != nil { try await addTLS(id, qmp: qmp, credentials: credentials, endpoint: .client) }
            let (host, port) = try endpoint.tcpAddress()
            tunnel = try await OutgoingMigrationTunnel(
                host: host, port: port, credentials: credentials, listeningAt: paths(id).outgoing,
                owner: instances[id]?.record.uid)
        } catch {
            await removeOutgoingTLS(qmp)
            throw VireoError(
                .unavailable, "cannot open the encrypted channel to \(endpoint): \(error); the VM keeps running here")
        }
        do {
            let stats = try await send(
                id, qmp: qmp, to: endpoint, via: "unix:\(tunnel.socketPath)",
                tls: endpoint.disk == nil ? nil : Self.outgoingTLS, progress: progress)
            await tunnel.close()
            await removeOutgoingTLS(qmp)
            return stats
        } catch {
            await tunnel.close()
            await removeOutgoingTLS(qmp)
            throw error
        }
    }

    /// Sends the VM to `endpoint`, its memory stream to `streamURI` (the endpoint's, or a tunnel's
    /// local end), a copied disk's mirror over TLS with the `tls` credentials object, if given.
    private func send(
        _ id: VMID, qmp: QMPClient, to endpoint: IncomingEndpoint, via streamURI: String, tls: String?,
        progress: @escaping @Sendable (MigrationProgress) -> Void
    ) async throws -> MigrationStats {
        // QEMU's own TLS never carries the memory stream (the tunnel does, if any); a QEMU that
        // arrived by an encrypted migration may still name its credentials.
        try await qmp.execute(QMP.MigrateSetParameters(tlsCreds: "", tlsAuthz: ""))
        // Converge even when the guest dirties memory quickly: no bandwidth cap below the link's,
        // throttle the vCPUs when needed, and accept up to the downtime the SLOs can take. A copied
        // disk's mirror is finished in `pre-switchover`, with the guest paused, before the last
        // state goes.
        try await qmp.execute(
            QMP.MigrateSetCapabilities([.autoConverge: true, .pauseBeforeSwitchover: endpoint.disk != nil]))
        try await qmp.execute(
            QMP.MigrateSetParameters(
                maxBandwidth: configuration.migrationBandwidth,
                downtimeLimitMs: configuration.migrationDowntimeLimitMs,
                cpuThrottleInitialPercent: configuration.migrationThrottleInitialPercent,
                cpuThrottleIncrementPercent: configuration.migrationThrottleIncrementPercent))
        // The disk first, while the guest runs: a mirror that, once ready, writes every guest
        // write to both copies.
        var mirrored: (bytes: UInt64, ms: Int)?
        if let target = endpoint.disk {
            instances[id]?.outgoingDiskCopy = true
            do {
                mirrored = try await mirrorDisk(qmp, to: target, tls: tls, progress: progress)
            } catch {
                await dropMirror(qmp)
                instances[id]?.outgoingDiskCopy = false
                throw VireoError(.unavailable, "copying the disk to \(target) failed: \(error); the VM keeps running here")
            }
        }
        // Paused: the guest stops before the first page is read and resumes on the destination
        // (which sees it arrive paused and continues it); downtime is the whole transfer.
        let mode = configuration.migrationMode.resolved(
            for: configuration.accelerator, memoryTrimmed: (instances[id]?.record.memoryTrimKiB ?? 0) > 0)
        let paused = mode == .paused
        let pausedAt = ContinuousClock.now
        instances[id]?.migrationPausedAt = nil
        if paused {
            try await qmp.execute(QMP.Stop())
            instances[id]?.migrationPausedAt = pausedAt
        } else {
            // Live: QEMU pauses the guest itself for the switch-over (its `STOP` event).
            instances[id]?.awaitingMigrationPause = true
        }
        defer { instances[id]?.awaitingMigrationPause = false }
        let migrateAt = ContinuousClock.now
        /// Undoes what this migration set up and says why it failed; the guest runs on here.
        func failed(_ reason: String) async throws -> VireoError {
            if mirrored != nil {
                await dropMirror(qmp)
                instances[id]?.outgoingDiskCopy = false
            }
            try await resumeAfterFailedMigration(qmp)
            return VireoError(.unavailable, "migration to \(endpoint) failed: \(reason); the VM keeps running here")
        }
        do {
            try await qmp.execute(QMP.Migrate(uri: streamURI))
        } catch {
            throw try await failed("\(error)")
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
                // QEMU's total starts at `migrate`; a copied disk went before it.
                let totalMs = (final.totalTimeMs ?? 0) + (mirrored?.ms ?? 0)
                return MigrationStats(
                    totalTimeMs: totalMs,
                    // QEMU counts its own final pause; a paused migration paused the guest before it.
                    downtimeMs: paused
                        ? Self.milliseconds(migrateAt - pausedAt) + (final.totalTimeMs ?? 0) : final.downtimeMs ?? 0,
                    transferredBytes: final.ram?.transferred ?? 0,
                    setupTimeMs: final.setupTimeMs, mode: mode, storageBytes: mirrored?.bytes,
                    storageTimeMs: mirrored?.ms)
            case .preSwitchover:
                // The guest is paused for good here: let the mirror write what it still holds, end
                // it, and only then let the last state go — the destination runs the guest as soon
                // as it has it, so its disk must be complete by then.
                do {
                    try await finishMirror(qmp)
                    // Closes the connection to the destination's export while the node is still active.
                    try await qmp.execute(QMP.BlockdevDel(nodeName: Self.mirrorNode))
                    try await qmp.execute(QMP.MigrateContinue())
                } catch {
                    _ = try? await qmp.execute(QMP.MigrateCancel())
                    throw try await failed("finishing the disk copy: \(error)")
                }
            case .failed, .cancelled:
                throw try await failed(info.errorDescription ?? info.status.rawValue)
            default:
                if let ram = info.ram {
                    progress(
                        MigrationProgress(
                            transferredBytes: ram.transferred, remainingBytes: ram.remaining, totalBytes: ram.total,
                            dirtyPagesPerSecond: ram.dirtyPagesRate, storageCopiedBytes: mirrored?.bytes,
                            storageTotalBytes: mirrored?.bytes))
                }
                if ContinuousClock.now > deadline {
                    _ = try? await qmp.execute(QMP.MigrateCancel())
                    throw try await failed("it did not finish within \(configuration.migrationTimeout); cancelled")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// Opens the destination's export and mirrors the disk into it until the mirror is ready (both
    /// copies hold the same data). Returns the bytes copied and how long it took.
    private func mirrorDisk(
        _ qmp: QMPClient, to target: IncomingEndpoint.Disk, tls: String?,
        progress: @escaping @Sendable (MigrationProgress) -> Void
    ) async throws -> (bytes: UInt64, ms: Int) {
        let started = ContinuousClock.now
        try await qmp.execute(
            QMP.BlockdevAddNBD(
                nodeName: Self.mirrorNode, host: target.host, port: target.port, export: QEMUInvocation.diskNode,
                tlsCreds: tls))
        try await qmp.execute(
            QMP.BlockdevMirror(jobID: Self.mirrorNode, device: QEMUInvocation.diskNode, target: Self.mirrorNode))
        let deadline = started + configuration.migrationTimeout
        while true {
            guard let job = try await qmp.execute(QMP.QueryBlockJobs()).first(where: { $0.device == Self.mirrorNode })
            else {
                throw VireoError(.unavailable, "the disk mirror ended before it was ready")
            }
            if let error = job.error { throw VireoError(.unavailable, "the disk mirror failed: \(error)") }
            if job.status == .concluded { throw VireoError(.unavailable, "the disk mirror ended before it was ready") }
            progress(
                MigrationProgress(
                    transferredBytes: 0, remainingBytes: 0, totalBytes: 0, storageCopiedBytes: job.offset,
                    storageTotalBytes: job.len))
            if job.ready { return (job.offset, Self.milliseconds(ContinuousClock.now - started)) }
            guard ContinuousClock.now < deadline else {
                throw VireoError(.unavailable, "the disk mirror was not ready within \(configuration.migrationTimeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Ends a ready mirror with the guest paused: cancelling a ready mirror writes what is still
    /// dirty to the target and then stops, without switching the guest to it.
    private func finishMirror(_ qmp: QMPClient) async throws {
        try await qmp.execute(QMP.BlockJobCancel(device: Self.mirrorNode))
        let deadline = ContinuousClock.now + .seconds(30)
        while let job = try await qmp.execute(QMP.QueryBlockJobs()).first(where: { $0.device == Self.mirrorNode }) {
            if job.status == .concluded {
                _ = try? await qmp.execute(QMP.JobDismiss(id: Self.mirrorNode))
                if let error = job.error { throw VireoError(.unavailable, "the disk mirror failed: \(error)") }
                return
            }
            guard ContinuousClock.now < deadline else { throw VireoError(.unavailable, "the disk mirror did not end") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// After a failure: stops the mirror, if any, and closes the connection to the destination's export.
    private func dropMirror(_ qmp: QMPClient) async {
        _ = try? await qmp.execute(QMP.BlockJobCancel(device: Self.mirrorNode))
        for _ in 0..<100 {
            guard let job = try? await qmp.execute(QMP.QueryBlockJobs()).first(where: { $0.device == Self.mirrorNode })
            else { break }
            if job.status == .concluded {
                _ = try? await qmp.execute(QMP.JobDismiss(id: Self.mirrorNode))
                break
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        _ = try? await qmp.execute(QMP.BlockdevDel(nodeName: Self.mirrorNode))
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
        // A disk the destination copied is its own now: this one goes (it may be in shared storage).
        await forget(id, instance.record, removingDisk: instance.outgoingDiskCopy)
    }

    /// When the guest paused here for its last paused migration, and when a guest that arrived
    /// here resumed: from one host's first to the other's second the guest ran nowhere (both
    /// hosts' drivers in one process, as in `vireo bench migrate`, read the same clock).
    public func migrationInstants(_ id: VMID) -> (paused: ContinuousClock.Instant?, resumed: ContinuousClock.Instant?) {
        (instances[id]?.migrationPausedAt, instances[id]?.arrivedResumedAt)
    }

    public func finishIncoming(_ id: VMID) async throws {
        await instances[id]?.incomingTunnel?.close()
        instances[id]?.incomingTunnel = nil
        if let qmp = instances[id]?.qmp {
            await closeIncomingDiskExport(id, qmp: qmp)
            await removeIncomingTLS(qmp)
        }
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

/// Where a destination waits: its migration URI (`tcp:ADDR:PORT`) and, for a copy-storage move,
/// its disk's NBD export. Written as `tcp:ADDR:PORT` or `tcp:ADDR:PORT;disk=nbd:ADDR:PORT`; opaque
/// outside the driver.
struct IncomingEndpoint: CustomStringConvertible, Equatable {
    struct Disk: CustomStringConvertible, Equatable {
        var host: String
        var port: Int
        var description: String { "nbd:\(host):\(port)" }
    }
    var migrationURI: String
    var disk: Disk?
    /// KiB the destination's QEMU has less RAM than the VM's size (`Record.memoryTrimKiB`); the
    /// source's must be the same, or QEMU refuses the stream. Written only when not 0, so a
    /// destination that trims nothing gives the address an earlier Vireo gave.
    var memoryTrimKiB = 0

    init(migrationURI: String, disk: Disk? = nil, memoryTrimKiB: Int = 0) {
        self.migrationURI = migrationURI
        self.disk = disk
        self.memoryTrimKiB = memoryTrimKiB
    }

    init(parsing text: String) throws {
        let parts = text.split(separator: ";").map(String.init)
        migrationURI = parts.first ?? ""
        func invalid() -> VireoError {
            VireoError.invalid(
                field: "incomingURI", value: "'\(text)'", "expected tcp:ADDR:PORT[;disk=nbd:ADDR:PORT][;ram-trim-kib=N]")
        }
        for part in parts.dropFirst() {
            if part.hasPrefix("disk=nbd:") {
                guard let colon = part.lastIndex(of: ":"), let port = Int(part[part.index(after: colon)...]),
                    (1...65535).contains(port)
                else { throw invalid() }
                disk = Disk(host: String(part[part.index(part.startIndex, offsetBy: 9)..<colon]), port: port)
            } else if part.hasPrefix("ram-trim-kib=") {
                guard let trim = Int(part.dropFirst("ram-trim-kib=".count)), trim > 0 else { throw invalid() }
                memoryTrimKiB = trim
            } else {
                throw invalid()
            }
        }
    }

    var description: String {
        migrationURI + (disk.map { ";disk=\($0)" } ?? "") + (memoryTrimKiB > 0 ? ";ram-trim-kib=\(memoryTrimKiB)" : "")
    }

    /// Refuses a move whose two ends would give the guest RAM of different sizes (a VM made by an
    /// earlier Vireo, untrimmed, to a host that trims): QEMU would only fail it halfway, with a
    /// message about the stream.
    static func checkSameRAM(vm name: String, memoryMiB: Int, sourceTrimKiB: Int, destinationTrimKiB: Int) throws {
        guard sourceTrimKiB != destinationTrimKiB else { return }
        func size(_ trim: Int) -> String { trim == 0 ? "\(memoryMiB) MiB" : "\(memoryMiB) MiB less \(trim) KiB" }
        throw VireoError(
            .failedPrecondition,
            "VM \(name) has \(size(sourceTrimKiB)) of RAM here and the destination prepared \(size(destinationTrimKiB)): "
                + "a VM made under TCG by a Vireo before 2026-12-07 keeps its full size (docs/migration.md, "
                + "\"Live or paused\"); move it cold or re-create it to move it live; the VM keeps running here")
    }

    /// The host and port of the migration URI (`tcp:HOST:PORT`, `tcp:[V6]:PORT`).
    func tcpAddress() throws -> (host: String, port: Int) {
        guard migrationURI.hasPrefix("tcp:"), let colon = migrationURI.lastIndex(of: ":"),
            let port = Int(migrationURI[migrationURI.index(after: colon)...]), (1...65535).contains(port)
        else { throw VireoError.invalid(field: "incomingURI", value: "'\(migrationURI)'", "expected tcp:ADDR:PORT") }
        let host = migrationURI[migrationURI.index(migrationURI.startIndex, offsetBy: 4)..<colon]
        return (String(host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))), port)
    }
}
