import Foundation
import Testing
import VireoDriver
import VireoModel

@testable import VireoDriverQEMU

/// Snapshot jobs, private networks and displays as far as they can be checked without a guest:
/// the command line, what QMP is sent and how its replies (captured from QEMU 7.2.22 saving,
/// loading and deleting snapshots of a 256 MiB guest) are read.
@Suite("QEMU snapshots, private networks and displays without a guest")
struct QEMUSnapshotCommandTests {
    static let jobsConcluded = #"""
        {"return": [{"current-progress": 1, "status": "concluded", "total-progress": 1, "type": "snapshot-save", "id": "save-1"}], "id": 7}
        """#
    static let jobsFailed = #"""
        {"return": [{"current-progress": 1, "status": "concluded", "total-progress": 1, "type": "snapshot-save", "id": "save-2", "error": "Snapshot 'a' already exists in one or more devices"}], "id": 9}
        """#
    static let blockWithSnapshots = #"""
        {"return": [{"io-status": "ok", "device": "virtio0", "locked": false, "removable": false, "inserted": {"iops_rd": 0, "image": {"virtual-size": 67108864, "filename": "disk.qcow2", "format": "qcow2", "snapshots": [{"vm-clock-nsec": 773010678, "name": "b", "date-sec": 1796434304, "date-nsec": 47147000, "vm-clock-sec": 7, "id": "12", "vm-state-size": 68611065}, {"vm-clock-nsec": 553751787, "name": "a", "date-sec": 1796434302, "date-nsec": 712771000, "vm-clock-sec": 6, "id": "2", "vm-state-size": 68606970}]}, "ro": false, "node-name": "vireo-disk", "drv": "qcow2", "file": "disk.qcow2"}, "type": "unknown"}], "id": 4}
        """#

    @Test("the disk has the node name snapshot jobs use; a display adds VNC and a graphics card; a snapshot start adds -loadvm")
    func commandLine() {
        let id = VMID("0b0e6c1e-0000-4000-8000-000000000002")
        var invocation = QEMUInvocation(
            name: "ctx", id: id, accelerator: .tcg, cpus: 1, memoryMiB: 256, kernel: "/i/vmlinux", initrd: "/i/initrd",
            kernelCommandLine: "console=ttyS0", disk: "/s/disk.qcow2", mac: QEMUInvocation.mac(for: id),
            network: .tap(device: "vt0123456789", address: "198.19.1.10/24", gateway: nil), qmpSocket: "/r/q.sock",
            serialLog: "/s/serial.log")
        let plain = invocation.arguments
        #expect(plain.contains("driver=qcow2,node-name=vireo-disk,discard=unmap,file.driver=file,file.filename=/s/disk.qcow2"))
        #expect(plain.contains("virtio-blk-pci,drive=vireo-disk"))
        #expect(!plain.contains("-vnc") && !plain.contains("-loadvm") && !plain.contains("VGA"))
        // A private guest has its address and no gateway: there is nowhere to route to.
        #expect(plain.contains("console=ttyS0 vireo.name=ctx vireo.ip=198.19.1.10/24"))
        invocation.vncPort = 5907
        invocation.loadSnapshot = "clean"
        let arguments = invocation.arguments
        #expect(arguments.firstIndex(of: "-vnc").map { arguments[$0 + 1] } == "127.0.0.1:7")
        #expect(arguments.contains("VGA"))
        #expect(arguments.suffix(2) == ["-loadvm", "clean"])
    }

    @Test("snapshot jobs are sent with their job id, tag and the disk node; a delete names no memory node")
    func jobCommands() throws {
        func json<C: QMPCommand>(_ command: C) throws -> JSONValue {
            try JSONDecoder().decode(JSONValue.self, from: try command.request(id: 5))
        }
        let save = try json(QMP.SnapshotSave(jobID: "j1", tag: "clean", vmstate: "vireo-disk", devices: ["vireo-disk"]))
        #expect(save["execute"] == .string("snapshot-save"))
        #expect(
            save["arguments"]
                == .object([
                    "job-id": .string("j1"), "tag": .string("clean"), "vmstate": .string("vireo-disk"),
                    "devices": .array([.string("vireo-disk")]),
                ]))
        let load = try json(QMP.SnapshotLoad(jobID: "j2", tag: "clean", vmstate: "vireo-disk", devices: ["vireo-disk"]))
        #expect(load["execute"] == .string("snapshot-load"))
        let delete = try json(QMP.SnapshotDelete(jobID: "j3", tag: "clean", devices: ["vireo-disk"]))
        #expect(delete["arguments"]?.objectValue?.keys.sorted() == ["devices", "job-id", "tag"])
        #expect(try json(QMP.JobDismiss(id: "j3"))["arguments"] == .object(["id": .string("j3")]))
        #expect(try json(QMP.QueryJobs())["arguments"] == nil)
    }

    @Test("query-jobs gives each job's status and error; query-block the disk's tags in the order taken")
    func replies() throws {
        let concluded = try QMP.QueryJobs.response(from: Data(Self.jobsConcluded.utf8))
        #expect(concluded == [QMP.JobInfo(id: "save-1", type: "snapshot-save", status: .concluded)])
        #expect(concluded[0].isSnapshotJob)
        let failed = try QMP.QueryJobs.response(from: Data(Self.jobsFailed.utf8))
        #expect(failed[0].error == "Snapshot 'a' already exists in one or more devices")
        let block = try QMP.QueryBlock.response(from: Data(Self.blockWithSnapshots.utf8))
        let disk = try #require(block.first?.inserted)
        #expect(disk.nodeName == QEMUInvocation.diskNode)
        // Ordered by QEMU's numeric id (2 before 12), not as listed or as text.
        #expect(disk.image.snapshotTags == ["a", "b"])
        #expect(QMP.ImageInfo(snapshots: nil).snapshotTags == [])
    }

    @Test("job status events decode with the job's id and status")
    func jobEvents() {
        let event = QMP.Event(
            QMPEvent(name: "JOB_STATUS_CHANGE", data: .object(["status": .string("concluded"), "id": .string("j1")])))
        #expect(event == .jobStatusChange(id: "j1", status: .concluded))
        let later = QMP.Event(
            QMPEvent(name: "JOB_STATUS_CHANGE", data: .object(["status": .string("some-new"), "id": .string("j1")])))
        #expect(later == .jobStatusChange(id: "j1", status: .unknown))
    }

    @Test("an expected event is delivered however it interleaves with the reply; otherwise a timeout or the disconnection")
    func expectedEvents() async throws {
        let qemu = try await BareQEMU.start()
        defer { qemu.kill() }
        let qmp = try await QMPClient.connect(path: qemu.socket)
        // Registered before the command: STOP may come before `stop`'s reply.
        let stopped = qmp.expectEvent("the VM stops") { $0.name == "STOP" }
        let resumed = qmp.expectEvent("the VM resumes") { $0.name == "RESUME" }
        try await qmp.execute(QMP.Stop())
        #expect(try await qmp.wait(for: stopped, timeout: .seconds(5)).name == "STOP")
        try await qmp.execute(QMP.Cont())
        #expect(try await qmp.wait(for: resumed, timeout: .seconds(5)).name == "RESUME")

        let never = qmp.expectEvent("a job that was never started concludes") { event in
            QMP.Event(event) == .jobStatusChange(id: "none", status: .concluded)
        }
        let late = await #expect(throws: QMPError.self) { try await qmp.wait(for: never, timeout: .milliseconds(100)) }
        #expect(late?.kind == .timeout && late?.message.contains("never started") == true)

        let gone = qmp.expectEvent("anything") { _ in false }
        _ = try? await qmp.execute(QMP.Quit())
        let closed = await #expect(throws: QMPError.self) { try await qmp.wait(for: gone, timeout: .seconds(10)) }
        #expect(closed?.kind == .disconnected)
        let afterwards = qmp.expectEvent("anything") { _ in true }
        let refused = await #expect(throws: QMPError.self) { try await qmp.wait(for: afterwards, timeout: .seconds(10)) }
        #expect(refused?.kind == .disconnected)
    }

    @Test("tags are names: letters, digits, '.', '_', '-', ':', up to 128, not only digits")
    func tags() throws {
        for good in ["clean", "kept-2026-12-05T01:02:03", "a.b_c", "1a", String(repeating: "t", count: 128)] {
            try SnapshotTag.validate(good)
        }
        for bad in ["", "7", "two words", "ü", "a/b", "a,b", String(repeating: "t", count: 129)] {
            let error = #expect(throws: VireoError.self) { try SnapshotTag.validate(bad) }
            #expect(error?.code == .invalidArgument && error?.message.contains("tag") == true, "\(bad)")
        }
    }

    @Test("private networks: a namespace per state directory and network, addresses 198.19.N.H")
    func privateNetworkNames() {
        let a = QEMUDriver.privateNetworkNamespace(stateDirectory: "/var/lib/vireo/vms", network: "a")
        #expect(a.hasPrefix("/run/netns/vireo-"))
        #expect(a == QEMUDriver.privateNetworkNamespace(stateDirectory: "/var/lib/vireo/vms", network: "a"))
        #expect(a != QEMUDriver.privateNetworkNamespace(stateDirectory: "/var/lib/vireo/vms", network: "b"))
        #expect(a != QEMUDriver.privateNetworkNamespace(stateDirectory: "/tmp/other/vms", network: "a"))
        #expect(PrivateNetwork.subnet(of: "198.19.7.10/24") == 7)
        #expect(PrivateNetwork.subnet(of: "198.18.7.10/24") == nil)
        #expect(PrivateNetwork.address(subnet: 7, host: 11) == "198.19.7.11")
    }
}
