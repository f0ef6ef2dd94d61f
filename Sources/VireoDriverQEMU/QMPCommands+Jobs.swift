import Foundation
import VireoModel

/// Snapshot jobs and the job and block queries the driver needs around them.
///
/// QEMU runs `snapshot-save`, `snapshot-load` and `snapshot-delete` as jobs: the command returns
/// at once, `JOB_STATUS_CHANGE` events report the job's progress, a job that ended stays
/// `concluded` (with its error, if any, in `query-jobs`) until it is dismissed with `job-dismiss`.
extension QMP {
    // MARK: Snapshot jobs

    /// What every snapshot job is told: its job id, the tag, and the block nodes involved.
    public struct SnapshotJobArguments: Encodable, Sendable, Equatable {
        public var jobID: String
        public var tag: String
        /// The node the memory and device state goes into (or comes from); nil for a delete.
        public var vmstate: String?
        /// The nodes whose disk state is part of the snapshot.
        public var devices: [String]

        enum CodingKeys: String, CodingKey {
            case jobID = "job-id"
            case tag, vmstate, devices
        }
    }

    /// Saves memory, devices and the disks of `devices` as internal snapshot `tag`; the vCPUs are
    /// stopped for the save and run again afterwards.
    public struct SnapshotSave: QMPCommand {
        public static let name = "snapshot-save"
        public var arguments: SnapshotJobArguments
        public init(jobID: String, tag: String, vmstate: String, devices: [String]) {
            arguments = SnapshotJobArguments(jobID: jobID, tag: tag, vmstate: vmstate, devices: devices)
        }
    }

    /// Brings memory, devices and disks back to snapshot `tag`. QEMU leaves the VM stopped when the
    /// load fails, and running (if it ran before) when it succeeds.
    public struct SnapshotLoad: QMPCommand {
        public static let name = "snapshot-load"
        public var arguments: SnapshotJobArguments
        public init(jobID: String, tag: String, vmstate: String, devices: [String]) {
            arguments = SnapshotJobArguments(jobID: jobID, tag: tag, vmstate: vmstate, devices: devices)
        }
    }

    /// Deletes snapshot `tag` from the disks of `devices`. QEMU 7.2 reports success for a tag that
    /// does not exist, so callers check first.
    public struct SnapshotDelete: QMPCommand {
        public static let name = "snapshot-delete"
        public var arguments: SnapshotJobArguments
        public init(jobID: String, tag: String, devices: [String]) {
            arguments = SnapshotJobArguments(jobID: jobID, tag: tag, vmstate: nil, devices: devices)
        }
    }

    // MARK: Jobs

    /// Every job QEMU knows about, those concluded but not yet dismissed included.
    public struct QueryJobs: QMPCommand {
        public static let name = "query-jobs"
        public typealias Response = [JobInfo]
        public init() {}
    }

    public struct JobInfo: Decodable, Sendable, Equatable {
        public var id: String
        /// `snapshot-save`, `snapshot-load`, `snapshot-delete`, `mirror`, ...
        public var type: String
        public var status: JobStatus
        /// Why the job failed; only once it has concluded, and only if it failed.
        public var error: String?

        public init(id: String, type: String, status: JobStatus, error: String? = nil) {
            self.id = id
            self.type = type
            self.status = status
            self.error = error
        }

        /// The jobs the QEMU driver starts; other jobs are left alone.
        public var isSnapshotJob: Bool { type.hasPrefix("snapshot-") }
    }

    /// QEMU's `JobStatus`. A status this QEMU adds later decodes to `.unknown`.
    public enum JobStatus: String, Decodable, Sendable, CaseIterable {
        case undefined, created, running, paused, ready, standby, waiting, pending, aborting, concluded
        /// Dismissed: the job is gone.
        case null
        case unknown

        public init(from decoder: any Decoder) throws {
            self = JobStatus(rawValue: try decoder.singleValueContainer().decode(String.self)) ?? .unknown
        }
    }

    /// Forgets a concluded job (its id can be used again).
    public struct JobDismiss: QMPCommand {
        public static let name = "job-dismiss"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var id: String
        }
        public var arguments: Arguments
        public init(id: String) { arguments = Arguments(id: id) }
    }

    // MARK: Block devices

    /// The block devices and the images behind them; the driver reads the internal snapshots of
    /// its disk node.
    public struct QueryBlock: QMPCommand {
        public static let name = "query-block"
        public typealias Response = [BlockInfo]
        public init() {}
    }

    public struct BlockInfo: Decodable, Sendable, Equatable {
        public var device: String
        /// Nil when no medium is inserted.
        public var inserted: InsertedImage?
    }

    public struct InsertedImage: Decodable, Sendable, Equatable {
        /// The node name given on the command line (`-drive ...,node-name=`), or one QEMU made up.
        public var nodeName: String
        public var image: ImageInfo

        enum CodingKeys: String, CodingKey {
            case nodeName = "node-name"
            case image
        }
    }

    /// What `query-block` (and `qemu-img info --output=json`) say about an image file.
    public struct ImageInfo: Decodable, Sendable, Equatable {
        /// Absent when the image has none.
        public var snapshots: [SnapshotInfo]?
    }

    public struct SnapshotInfo: Decodable, Sendable, Equatable {
        /// QEMU's numeric id, as a string: qcow2 gives each new snapshot one more than the largest
        /// in the image, so ordering by it is the order snapshots were taken in.
        public var id: String
        public var name: String
        /// Bytes of memory and device state stored.
        public var vmStateSize: UInt64?

        enum CodingKeys: String, CodingKey {
            case id, name
            case vmStateSize = "vm-state-size"
        }
    }
}

extension QMP.ImageInfo {
    /// The snapshot tags in the order they were taken.
    public var snapshotTags: [String] {
        (snapshots ?? []).sorted { (Int($0.id) ?? .max, $0.id) < (Int($1.id) ?? .max, $1.id) }.map(\.name)
    }
}
