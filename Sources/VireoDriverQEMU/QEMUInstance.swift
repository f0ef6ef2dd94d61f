import Foundation
import VireoDriver
import VireoModel
import VireoTunnel

extension QEMUDriver {
    /// What is stored about a VM: enough to start it again after any restart.
    struct Record: Codable, Equatable {
        var spec: InstanceSpec
        var image: GuestImage
        var mac: String
        var network: GuestNetwork
        /// The qcow2 overlay; in the VM's directory, or in shared storage.
        var disk: String
        /// False on the destination of a migration until it completes: the source still owns the
        /// shared disk, and a failed migration must not delete it.
        var ownsDisk = true
        /// The loopback port of the VM's VNC display (`spec.display == .vnc`), chosen at create and
        /// kept, so the display is found at the same place after every start.
        var vncPort: Int?
        /// The uid (and gid) QEMU runs as (`QEMUConfinement`); absent when it runs as the agent.
        var uid: UInt32?
        /// KiB its RAM is short of `spec.memoryMiB` (`QEMUInvocation.memoryTrimKiB(on:)`), fixed
        /// when the record is made: its snapshots and a migration's two ends need the same size.
        /// Absent in records of VMs made before it existed: they keep their full size.
        var memoryTrimKiB: Int?
    }

    /// What is stored about a running QEMU, to re-adopt it after an agent restart.
    struct RunInfo: Codable {
        var pid: Int32
        /// Where this run's console output starts in `serial.log`.
        var serialOffset: UInt64
        var startedAt: Date
        /// The snapshot this run started from (`-loadvm`): its guest printed no ready marker in
        /// this run, so a driver re-adopting it asks QEMU whether it runs instead.
        var snapshot: String?
        /// Whether this run was a migration's destination: its guest printed its marker on the
        /// source, so a driver re-adopting it asks QEMU too. (Without it, a guest that had arrived
        /// waited for a marker that never came, and was failed after the ready timeout.)
        var incoming: Bool?

        /// What tells a driver re-adopting this run that its guest is ready.
        var readiness: Readiness { snapshot != nil || incoming == true ? .restored : .marker }
    }

    /// What tells that a run's guest is ready.
    enum Readiness {
        /// It booted and printed the image's ready marker on the console.
        case marker
        /// It arrived by live migration: ready when it resumes here.
        case incoming
        /// It runs from a snapshot: ready once QEMU says its vCPUs run.
        case restored
    }

    /// A VM as the driver tracks it in memory: its record and what its current run is doing.
    struct Instance {
        var record: Record
        var state: InstanceState
        var message: String?
        var qmp: QMPClient?
        var pid: Int32?
        /// Bumped on every start, so a monitor of an earlier run cannot touch this one.
        var run = 0
        var stopRequested = false
        var guestPoweredOff = false
        /// Waiting for (or receiving) a live migration: ready when the guest resumes, not on a marker.
        var incomingURI: String?
        /// Sending a live migration that copies the disk: once it is done, this host's disk goes.
        var outgoingDiskCopy = false
        /// Receiving a copy-storage migration: the disk's NBD export is open.
        var incomingDiskExport = false
        /// Receiving an encrypted migration: the tunnel that admits its source.
        var incomingTunnel: IncomingMigrationTunnel?
        /// A migration's source: when the guest was paused for it (before the copy, or by QEMU for
        /// a live migration's switch-over). A destination: when the guest that arrived resumed.
        /// Between the two, the guest ran nowhere.
        var migrationPausedAt: ContinuousClock.Instant?
        /// Sending a live migration: the guest's next `STOP` is QEMU's pause for the switch-over.
        var awaitingMigrationPause = false
        /// Its vCPUs stopped by `pause`, or found stopped when re-adopted (a paused migration's
        /// source whose move ended while no agent watched it).
        var paused = false
        var arrivedResumedAt: ContinuousClock.Instant?
        /// When this run's QEMU was launched, and how long it took the guest to be ready.
        var launchedAt: ContinuousClock.Instant?
        var bootMs: Int?
        /// The VM's cgroup while its QEMU runs, and its removal once QEMU has exited.
        var cgroup: VMCgroup?
        var cgroupRemoval: Task<Void, Never>?
        /// Removing the tap device of the last run (its QEMU exited); the next launch waits for it,
        /// so it cannot remove the new run's tap.
        var tapRemoval: Task<Void, Never>?

        /// A new run begins: starting, with nothing left of the last one but its record.
        mutating func beginRun() {
            state = .starting
            message = nil
            stopRequested = false
            guestPoweredOff = false
            paused = false
            run += 1
        }
    }

    /// Where a VM's files are: its directory in the state directory (QEMU's output in
    /// `qemu.log`), and its sockets in a directory of its own in the short runtime directory: QMP,
    /// and an encrypted migration's local ends (`incoming`, where a destination's QEMU waits;
    /// `outgoing`, where a source's QEMU sends).
    struct Paths {
        var directory, record, serial, pid, run, log, runtime, qmp: String
        var incoming: String { runtime + "/incoming" }
        var outgoing: String { runtime + "/outgoing" }
    }

    func paths(_ id: VMID) -> Paths {
        let directory = "\(configuration.stateDirectory)/\(id)"
        let runtime = "\(runtimeDirectory)/\(id)"
        return Paths(
            directory: directory, record: directory + "/vm.json", serial: directory + "/serial.log", pid: directory + "/qemu.pid",
            run: directory + "/run.json", log: directory + "/qemu.log", runtime: runtime, qmp: runtime + "/qmp")
    }

    /// The address a VM's service is reached at: the forwarded loopback port, or the tap address.
    static func address(of network: GuestNetwork) -> String? {
        switch network {
        case .none: nil
        case .user(let port): "127.0.0.1:\(port)"
        case .tap(_, let address, _): String(address.split(separator: "/")[0])
        }
    }

    // MARK: State files

    /// Replaces the file at `path` with `value` as JSON, atomically.
    static func write<T: Encodable>(_ value: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(value).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    static func read<T: Decodable>(_ type: T.Type, from path: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}
