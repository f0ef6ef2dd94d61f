import Foundation
import VireoDriver
import VireoModel

extension QEMUDriver {
    // MARK: Supervision

    /// Watches a launched or re-adopted QEMU: its console for the ready marker (for an incoming
    /// migration, QMP's `RESUME`; for a guest restored from a snapshot, QEMU's run state), its QMP
    /// events for shutdown, and the end of the QMP connection for its exit.
    func attach(_ id: VMID, run: Int, pid: Int32, qmp: QMPClient, serialOffset: UInt64, readiness: Readiness = .marker) {
        let incoming = readiness == .incoming
        instances[id]?.pid = pid
        instances[id]?.qmp = qmp
        let serial = paths(id).serial
        let marker = instances[id]?.record.image.readyMarker ?? "VIREO-READY"
        let readyTimeout = configuration.readyTimeout
        Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    switch readiness {
                    case .incoming:
                        // An incoming guest printed its marker long ago, on the source: it is ready
                        // when it resumes here.
                        return
                    case .restored:
                        // A restored guest printed its marker in the run it was saved from.
                        if await Self.waitForRunState(qmp, timeout: readyTimeout) {
                            await self.becameReady(id, run: run)
                        } else if !Task.isCancelled {
                            await self.neverReady(id, run: run, after: readyTimeout, restored: true)
                        }
                        return
                    case .marker: break
                    }
                    if await Self.waitForMarker(marker, in: serial, from: serialOffset, timeout: readyTimeout) {
                        await self.becameReady(id, run: run)
                    } else if !Task.isCancelled {
                        await self.neverReady(id, run: run, after: readyTimeout)
                    }
                }
                group.addTask {
                    for await event in qmp.events {
                        switch QMP.Event(event) {
                        case .shutdown(let guest): await self.shutdownEvent(id, run: run, guest: guest)
                        case .resume where incoming: await self.becameReady(id, run: run, arrived: true)
                        case .stop: await self.stopped(id, run: run)
                        case .migration(.completed) where incoming: await self.continueArrived(id, run: run, qmp: qmp)
                        default: break
                        }
                    }
                    // The event stream ends when QEMU closes the socket: the process is gone.
                    await self.exited(id, run: run)
                }
                // Either QEMU exited or the guest became ready; readiness must not outlive the process.
                while await group.next() != nil {
                    if self.isCurrent(id, run: run, pid: pid) == false { group.cancelAll() }
                }
            }
        }
    }

    private func isCurrent(_ id: VMID, run: Int, pid: Int32) -> Bool {
        instances[id]?.run == run && instances[id]?.pid == pid
    }

    private func becameReady(_ id: VMID, run: Int, arrived: Bool = false) {
        guard instances[id]?.run == run, instances[id]?.state == .starting else { return }
        if arrived { instances[id]?.arrivedResumedAt = .now }
        instances[id]?.state = .running
        stateChanged()
        if let launchedAt = instances[id]?.launchedAt {
            let bootMs = Self.milliseconds(ContinuousClock.now - launchedAt)
            instances[id]?.bootMs = bootMs
            logger.info(
                "guest ready",
                metadata: ["vm": "\(instances[id]?.record.spec.name ?? "\(id)")", "since-launch-ms": "\(bootMs)"])
        }
    }

    /// The guest's vCPUs stopped: during a live migration, QEMU's pause for the switch-over.
    private func stopped(_ id: VMID, run: Int) {
        guard instances[id]?.run == run, instances[id]?.awaitingMigrationPause == true else { return }
        instances[id]?.awaitingMigrationPause = false
        instances[id]?.migrationPausedAt = .now
    }

    /// A guest sent by a paused migration arrives paused (the source stopped it first); only
    /// running guests are migrated, so it runs on here.
    private func continueArrived(_ id: VMID, run: Int, qmp: QMPClient) async {
        guard instances[id]?.run == run, instances[id]?.state == .starting else { return }
        // A copied disk is complete before the last state left the source: its export goes before
        // the guest runs here.
        await closeIncomingDiskExport(id, qmp: qmp)
        guard let status = try? await qmp.execute(QMP.QueryStatus()), status.status == .paused else { return }
        do {
            try await qmp.execute(QMP.Cont())
        } catch {
            logger.error("cannot resume the arrived guest", metadata: ["vm": "\(id)", "error": "\(error)"])
        }
    }

    private func neverReady(_ id: VMID, run: Int, after timeout: Duration, restored: Bool = false) async {
        guard instances[id]?.run == run, instances[id]?.state == .starting, let qmp = instances[id]?.qmp else { return }
        instances[id]?.message =
            restored
            ? "the guest restored from its snapshot (or moved here) did not run within \(timeout)"
            : "the guest printed no ready marker within \(timeout)"
        _ = try? await qmp.execute(QMP.Quit(), timeout: .seconds(2))
    }

    private func shutdownEvent(_ id: VMID, run: Int, guest: Bool) {
        guard instances[id]?.run == run else { return }
        if guest { instances[id]?.guestPoweredOff = true }
    }

    private func exited(_ id: VMID, run: Int) {
        guard !detached, var instance = instances[id], instance.run == run, instance.pid != nil else { return }
        let pid = instance.pid
        instance.qmp = nil
        instance.pid = nil
        let lastLine = Self.lastLine(of: paths(id).serial).map { "; last console line: \($0)" } ?? ""
        if instance.message == nil, !instance.stopRequested, !instance.guestPoweredOff {
            instance.state = .failed
            instance.message = "QEMU (pid \(pid.map(String.init) ?? "?")) exited unexpectedly" + lastLine
        } else if instance.message == nil, !instance.stopRequested, instance.state == .starting {
            // Off before it was ready, and nobody asked: a guest panicking at boot resets, and
            // `-no-reboot` turns the reset into this.
            instance.state = .failed
            instance.message = "the guest went off while booting" + lastLine
        } else {
            instance.state = instance.message == nil ? .stopped : .failed
        }
        instances[id] = instance
        stateChanged()
        try? FileManager.default.removeItem(atPath: paths(id).run)
        try? FileManager.default.removeItem(atPath: paths(id).pid)
        releaseCgroup(id)
        if case .tap(let device, _, _) = instance.record.network {
            let namespace = privateNamespace(of: instance.record)
            instances[id]?.tapRemoval = Task { await PrivateNetwork.removeTap(device, namespace: namespace) }
        }
    }

    func escalate(_ id: VMID, run: Int, after timeout: Duration) async {
        guard let pid = instances[id]?.pid else { return }
        if await Self.waitForExit(pid, timeout: timeout) { return }
        guard instances[id]?.run == run else { return }
        logger.notice(
            "guest did not power off; quitting QEMU",
            metadata: ["vm": "\(instances[id]?.record.spec.name ?? "\(id)")", "timeout": "\(timeout)"])
        _ = try? await instances[id]?.qmp?.execute(QMP.Quit(), timeout: .seconds(2))
        if await Self.waitForExit(pid, timeout: .seconds(2)) { return }
        if instances[id]?.run == run, Self.isQEMU(pid, running: id) { kill(pid, SIGKILL) }
    }

    // MARK: Re-adoption

    /// Re-adopts the VMs of a previous agent process: records on disk become instances, and a QEMU
    /// still running (pidfile, live process, answering QMP) is attached to instead of started again.
    public func recover() async throws -> [InstanceStatus] {
        let directory = configuration.stateDirectory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for entry in try FileManager.default.contentsOfDirectory(atPath: directory).sorted() {
            let id = VMID(entry)
            guard instances[id] == nil, let record = try? Self.read(Record.self, from: paths(id).record) else {
                continue
            }
            var instance = Instance(record: record, state: .stopped)
            instance.run = 1
            instances[id] = instance
            let paths = paths(id)
            guard let info = try? Self.read(RunInfo.self, from: paths.run), Self.isQEMU(info.pid, running: id) else {
                try? FileManager.default.removeItem(atPath: paths.run)
                continue
            }
            do {
                // QEMU answers no QMP while it saves or loads a snapshot: a connection made during
                // one an earlier agent started completes once it has ended.
                let qmp = try await QMPClient.connect(path: paths.qmp, timeout: configuration.snapshotTimeout)
                if info.incoming == true, !record.ownsDisk,
                    let status = try? await qmp.execute(QMP.QueryStatus()), status.status == .inmigrate
                {
                    // Still waiting for a migration the previous agent prepared: what would have seen
                    // it through (its tunnel, its word to the controller) ended with that agent, and
                    // the move has failed or will. Re-adopted, it sat paused for good beside the
                    // source's running guest (seen in `vireo chaos --driver qemu`).
                    await qmp.close()
                    kill(info.pid, SIGKILL)
                    _ = await Self.waitForExit(info.pid, timeout: .seconds(2))
                    await forget(id, record, removingDisk: false)
                    logger.notice(
                        "discarded an incoming migration the previous agent left waiting",
                        metadata: ["vm": "\(record.spec.name)", "pid": "\(info.pid)"])
                    continue
                }
                instances[id]?.state = .starting
                instances[id]?.cgroup = cgroupParent.flatMap { VMCgroup.existing(cgroupName(id), under: $0) }
                attach(id, run: 1, pid: info.pid, qmp: qmp, serialOffset: info.serialOffset, readiness: info.readiness)
                logger.info("re-adopted QEMU", metadata: ["vm": "\(record.spec.name)", "pid": "\(info.pid)"])
                // Stopped vCPUs: paused on purpose, or the source of a paused migration that ended
                // while no agent watched; the agent resumes it if no move of it is under way.
                if let status = try? await qmp.execute(QMP.QueryStatus()),
                    status.status == .paused || status.status == .postmigrate
                {
                    instances[id]?.paused = true
                    logger.notice(
                        "re-adopted guest is paused", metadata: ["vm": "\(record.spec.name)", "status": "\(status.status)"])
                }
                // Snapshot jobs the previous agent did not see to their end are waited for and
                // dismissed; should that fail, the next snapshot operation tries again.
                do {
                    try await settleSnapshotJobs(id, qmp)
                } catch {
                    logger.warning(
                        "cannot settle the snapshot jobs left by the previous agent",
                        metadata: ["vm": "\(record.spec.name)", "error": "\(error)"])
                }
            } catch {
                instances[id]?.state = .failed
                instances[id]?.message = "QEMU pid \(info.pid) is running but does not answer QMP: \(error)"
            }
        }
        await removeStaleCgroups()
        return try await status()
    }

    /// Calls `handler` whenever a VM changes state on its own (its guest became ready, its QEMU
    /// exited), so the agent reports it without waiting for its next poll.
    public func onStateChange(_ handler: @escaping @Sendable () -> Void) {
        stateChanged = handler
    }

    /// Lets go of every VM without touching it, as an exiting agent does: QMP connections close
    /// (QEMU serves one client at a time) and the QEMU processes keep running, to be re-adopted by
    /// the next driver over the same state directory.
    public func detach() async {
        detached = true
        for instance in instances.values { await instance.qmp?.close() }
    }

    // MARK: Processes

    /// Polls the console for `marker` from `offset` on. Polling every 2 ms costs a read syscall
    /// and bounds how late readiness is noticed.
    static func waitForMarker(_ marker: String, in path: String, from offset: UInt64, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        var position = offset
        var pending = Data()
        let needle = Data(marker.utf8)
        while ContinuousClock.now < deadline, !Task.isCancelled {
            if let handle = FileHandle(forReadingAtPath: path) {
                try? handle.seek(toOffset: position)
                if let data = try? handle.readToEnd(), !data.isEmpty {
                    position += UInt64(data.count)
                    pending.append(data)
                    if pending.range(of: needle) != nil { try? handle.close(); return true }
                    pending = pending.suffix(needle.count)
                }
                try? handle.close()
            }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return false
    }

    /// Polls QEMU's run state until its vCPUs run (or are paused, as a re-adopted guest may have
    /// been on purpose): a guest restored from a snapshot is then ready.
    static func waitForRunState(_ qmp: QMPClient, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !Task.isCancelled {
            guard let status = try? await qmp.execute(QMP.QueryStatus()) else { return false }
            if status.running || status.status == .paused { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    static func waitForExit(_ pid: Int32, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if kill(pid, 0) != 0 { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return kill(pid, 0) != 0
    }

    /// True when `pid` is alive and is the QEMU of this VM (pids are reused).
    static func isQEMU(_ pid: Int32, running id: VMID) -> Bool {
        guard kill(pid, 0) == 0, let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
            return false
        }
        return String(decoding: cmdline, as: UTF8.self).contains("process=vireo-\(id)")
    }

    static func readPID(_ path: String) throws -> Int32 {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw VireoError(.internal, "QEMU started but wrote no pid to \(path)") }
        return pid
    }
}
