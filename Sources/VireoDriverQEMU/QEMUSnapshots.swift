import Foundation
import VireoDriver
import VireoModel
import VireoProcess

/// Snapshots: internal qcow2 snapshots of the VM's overlay, holding its memory, devices and disk.
///
/// A running VM is saved, loaded and pruned with QMP's snapshot jobs on its disk node (memory goes
/// into the same qcow2); a stopped one is listed and pruned with `qemu-img`, and started from a
/// snapshot with `-loadvm`.
///
/// Crash safety. QEMU runs a job on its own: an agent killed in the middle of one leaves QEMU
/// (detached from the agent) to finish it, and the job then waits, concluded, to be dismissed. The next agent
/// re-adopting the VM (`recover`) and every snapshot operation first wait for snapshot jobs still
/// running and dismiss concluded ones (`settleSnapshotJobs`). A save that did not finish leaves
/// no snapshot behind: QEMU writes the memory state first and adds the snapshot to the qcow2's
/// snapshot table only at the end — checked by hand on QEMU 7.2 by listing the table with
/// `qemu-img snapshot -l -U` every 8 ms during the 350 ms save of a 256 MiB guest whose memory was
/// full: the tag appeared in the first listing after the save had completed, never before. While
/// QEMU saves or loads it answers no QMP, so an agent that connects meanwhile finds the job
/// concluded.
extension QEMUDriver {
    public func saveSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        try SnapshotTag.validate(tag)
        await lockSnapshots(id)
        defer { unlockSnapshots(id) }
        let (qmp, name) = try runningGuest(id, to: "save a snapshot")
        try await settleSnapshotJobs(id, qmp)
        guard !(try await Self.liveSnapshots(qmp)).contains(tag) else {
            throw VireoError(.conflict, "VM \(name) already has a snapshot '\(tag)'")
        }
        let jobID = Self.jobID("save")
        let took = try await runSnapshotJob(
            qmp, jobID: jobID, what: "save snapshot '\(tag)' of VM \(name)",
            QMP.SnapshotSave(jobID: jobID, tag: tag, vmstate: QEMUInvocation.diskNode, devices: [QEMUInvocation.diskNode]))
        logger.info("snapshot saved", metadata: ["vm": "\(name)", "tag": "\(tag)", "ms": "\(Self.milliseconds(took))"])
        return took
    }

    public func loadSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        try SnapshotTag.validate(tag)
        await lockSnapshots(id)
        defer { unlockSnapshots(id) }
        let (qmp, name) = try runningGuest(id, to: "load a snapshot")
        try await settleSnapshotJobs(id, qmp)
        // Checked first: QEMU fails the load of a tag the disk lacks only after stopping the VM,
        // and leaves it stopped.
        guard try await Self.liveSnapshots(qmp).contains(tag) else {
            throw VireoError(.notFound, "VM \(name) has no snapshot '\(tag)'")
        }
        let jobID = Self.jobID("load")
        do {
            let took = try await runSnapshotJob(
                qmp, jobID: jobID, what: "load snapshot '\(tag)' of VM \(name)",
                QMP.SnapshotLoad(jobID: jobID, tag: tag, vmstate: QEMUInvocation.diskNode, devices: [QEMUInvocation.diskNode]))
            logger.info("snapshot loaded", metadata: ["vm": "\(name)", "tag": "\(tag)", "ms": "\(Self.milliseconds(took))"])
            return took
        } catch let error as VireoError where error.code == .internal {
            // The memory may be half loaded: QEMU keeps the vCPUs stopped, and so does the driver.
            throw VireoError(
                .internal, "\(error.message); the VM is left paused (load another snapshot, or stop and start it)")
        }
    }

    public func deleteSnapshot(_ id: VMID, tag: String) async throws {
        try SnapshotTag.validate(tag)
        await lockSnapshots(id)
        defer { unlockSnapshots(id) }
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let name = instance.record.spec.name
        guard let qmp = instance.qmp else {
            // QEMU is not running: the disk is ours to change.
            guard try await Self.storedSnapshots(instance.record.disk).contains(tag) else {
                throw VireoError(.notFound, "VM \(name) has no snapshot '\(tag)'")
            }
            try await HostTool.run("qemu-img", ["snapshot", "-d", tag, instance.record.disk])
            return
        }
        try await settleSnapshotJobs(id, qmp)
        // Checked first: QEMU 7.2 reports the delete of a missing tag as a success.
        guard try await Self.liveSnapshots(qmp).contains(tag) else {
            throw VireoError(.notFound, "VM \(name) has no snapshot '\(tag)'")
        }
        let jobID = Self.jobID("delete")
        let took = try await runSnapshotJob(
            qmp, jobID: jobID, what: "delete snapshot '\(tag)' of VM \(name)",
            QMP.SnapshotDelete(jobID: jobID, tag: tag, devices: [QEMUInvocation.diskNode]))
        logger.info("snapshot deleted", metadata: ["vm": "\(name)", "tag": "\(tag)", "ms": "\(Self.milliseconds(took))"])
    }

    public func snapshots(_ id: VMID) async throws -> [String] {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        if let qmp = instance.qmp { return try await Self.liveSnapshots(qmp) }
        return try await Self.storedSnapshots(instance.record.disk)
    }

    public func start(_ id: VMID, fromSnapshot tag: String) async throws {
        try SnapshotTag.validate(tag)
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let name = instance.record.spec.name
        guard instance.state == .stopped || instance.state == .failed, instance.qmp == nil else {
            throw VireoError(
                .failedPrecondition,
                "VM \(name) is \(instance.state), not stopped: a running VM goes back to a snapshot with a load")
        }
        guard try await Self.storedSnapshots(instance.record.disk).contains(tag) else {
            throw VireoError(.notFound, "VM \(name) has no snapshot '\(tag)'")
        }
        // Re-read after the await: another call may have started it meanwhile.
        guard let current = instances[id], current.state == .stopped || current.state == .failed, current.qmp == nil else {
            throw VireoError(.failedPrecondition, "VM \(name) was started meanwhile")
        }
        instance = current
        instance.beginRun()
        instances[id] = instance
        try await launch(id, run: instance.run, snapshot: tag)
    }

    // MARK: Jobs

    /// The QMP connection and name of a VM whose guest is running; `.failedPrecondition` otherwise.
    private func runningGuest(_ id: VMID, to action: String) throws -> (QMPClient, String) {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard instance.state == .running, let qmp = instance.qmp else {
            throw VireoError(
                .failedPrecondition, "VM \(instance.record.spec.name) is \(instance.state): only a running VM can \(action)")
        }
        return (qmp, instance.record.spec.name)
    }

    /// A job id no other job of this or an earlier agent has used.
    static func jobID(_ action: String) -> String {
        "vireo-\(action)-\(UUID().uuidString.lowercased())"
    }

    /// Starts a snapshot job and waits for it to conclude, then reads its outcome and dismisses
    /// it. Returns the time from sending the command to the job concluding. A job that does not
    /// conclude in time is left to QEMU (the next operation waits for it).
    private func runSnapshotJob<C: QMPCommand>(_ qmp: QMPClient, jobID: String, what: String, _ command: C)
        async throws -> Duration
    {
        let concluded = qmp.expectEvent("\(what) (job \(jobID))") { event in
            QMP.Event(event) == .jobStatusChange(id: jobID, status: .concluded)
        }
        let sentAt = ContinuousClock.now
        do {
            try await qmp.execute(command)
        } catch {
            qmp.cancel(concluded)
            throw VireoError(.internal, "QEMU cannot \(what): \(error)")
        }
        do {
            _ = try await qmp.wait(for: concluded, timeout: configuration.snapshotTimeout)
        } catch let error as QMPError where error.kind == .timeout {
            throw VireoError(
                .unavailable,
                "QEMU did not \(what) within \(configuration.snapshotTimeout); it goes on, and the next snapshot "
                    + "operation waits for it")
        }
        let took = ContinuousClock.now - sentAt
        let job = try await qmp.execute(QMP.QueryJobs()).first { $0.id == jobID }
        try await qmp.execute(QMP.JobDismiss(id: jobID))
        if let error = job?.error { throw VireoError(.internal, "QEMU could not \(what): \(error)") }
        return took
    }

    /// Waits for the snapshot jobs still running on this VM's QEMU and dismisses the concluded
    /// ones — left by an agent killed during an operation, or by an operation that timed out.
    func settleSnapshotJobs(_ id: VMID, _ qmp: QMPClient) async throws {
        let name = instances[id]?.record.spec.name ?? "\(id)"
        for job in try await qmp.execute(QMP.QueryJobs()) where job.isSnapshotJob && job.status != .null {
            if job.status != .concluded {
                let concluded = qmp.expectEvent("\(job.type) job \(job.id) left running") { event in
                    QMP.Event(event) == .jobStatusChange(id: job.id, status: .concluded)
                }
                // It may have concluded between the query and the registration: ask again.
                let now = try await qmp.execute(QMP.QueryJobs()).first { $0.id == job.id }
                if let now, now.status != .concluded, now.status != .null {
                    logger.notice("waiting for a snapshot job to end", metadata: ["vm": "\(name)", "job": "\(job.id)"])
                    _ = try await qmp.wait(for: concluded, timeout: configuration.snapshotTimeout)
                } else {
                    qmp.cancel(concluded)
                }
            }
            let final = try await qmp.execute(QMP.QueryJobs()).first { $0.id == job.id }
            guard final?.status == .concluded else { continue }
            try await qmp.execute(QMP.JobDismiss(id: job.id))
            logger.notice(
                "dismissed a snapshot job an earlier operation left",
                metadata: ["vm": "\(name)", "job": "\(job.id)", "type": "\(job.type)", "error": "\(final?.error ?? "none")"])
        }
    }

    // MARK: Tags

    /// The snapshots of the disk of a running QEMU, in the order they were taken.
    static func liveSnapshots(_ qmp: QMPClient) async throws -> [String] {
        let block = try await qmp.execute(QMP.QueryBlock())
        guard let disk = block.compactMap(\.inserted).first(where: { $0.nodeName == QEMUInvocation.diskNode }) else {
            throw VireoError(.internal, "QEMU has no block node '\(QEMUInvocation.diskNode)' (the VM's disk)")
        }
        return disk.image.snapshotTags
    }

    /// The snapshots in a qcow2 file, in the order they were taken. `-U`: reading needs no lock,
    /// so a QEMU that has the file open, or is starting on it, is not disturbed (a QEMU writing a
    /// snapshot meanwhile may show the list before or after it).
    public static func storedSnapshots(_ disk: String) async throws -> [String] {
        let info = try await HostTool.run("qemu-img", ["info", "-U", "--output=json", disk])
        do {
            return try JSONDecoder().decode(QMP.ImageInfo.self, from: info).snapshotTags
        } catch {
            throw VireoError(.internal, "qemu-img info \(disk): unexpected output: \(error)")
        }
    }

    // MARK: One operation at a time

    /// Waits until no other snapshot operation runs on the VM: each checks the tags before it
    /// starts its job, which only holds while no other job changes them.
    func lockSnapshots(_ id: VMID) async {
        if snapshotWaiters[id] == nil {
            snapshotWaiters[id] = []
            return
        }
        await withCheckedContinuation { snapshotWaiters[id, default: []].append($0) }
    }

    func unlockSnapshots(_ id: VMID) {
        guard var waiters = snapshotWaiters[id], !waiters.isEmpty else {
            snapshotWaiters[id] = nil
            return
        }
        let next = waiters.removeFirst()
        snapshotWaiters[id] = waiters
        next.resume()
    }
}
