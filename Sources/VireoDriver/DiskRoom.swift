import Foundation
import VireoModel

/// Whether a host's file system can take a VM's disk, before a driver makes one that a copy fills.
public enum DiskRoom {
    /// Where an incoming live migration's disk is on this host: the VM's file in the shared
    /// storage `sharedDisks` (which must hold it already), or, for a copy, `disk.qcow2` in
    /// `vmDirectory`, once `stateDirectory` is known to have room for the guest's whole disk.
    public static func incomingDisk(
        for spec: InstanceSpec, storage: MigrationStorage, sharedDisks: String?, vmDirectory: String,
        stateDirectory: String
    ) throws -> String {
        switch storage {
        case .shared:
            guard let shared = sharedDisks else {
                throw VireoError(
                    .failedPrecondition,
                    "live migration with a shared disk needs shared storage (driver setting shared-disks); "
                        + "this host has none: copy the disk instead (vireo migrate --copy-storage)")
            }
            let disk = "\(shared)/\(spec.id).qcow2"
            guard FileManager.default.fileExists(atPath: disk) else {
                throw VireoError(.failedPrecondition, "the VM's disk \(disk) is not visible on this host")
            }
            return disk
        case .copy:
            // A disk of our own, of the guest's size, that the source's copy fills.
            try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
            try check(forDiskMiB: spec.diskMiB ?? ImageCatalogue.virtualDiskMiB, in: stateDirectory)
            return vmDirectory + "/disk.qcow2"
        }
    }

    /// Fails unless the file system holding `directory` has room for a disk of `diskMiB`: a copy
    /// may grow to the guest's full disk size.
    public static func check(forDiskMiB diskMiB: Int, in directory: String) throws {
        var stats = statvfs()
        guard statvfs(directory, &stats) == 0 else {
            throw VireoError(.internal, "cannot read the free space of \(directory): \(String(cString: strerror(errno)))")
        }
        let freeMiB = Int((UInt64(stats.f_bavail) * UInt64(stats.f_frsize)) >> 20)
        guard freeMiB >= diskMiB else {
            throw VireoError(
                .failedPrecondition,
                "no room for the VM's disk: it may grow to \(ByteSize.format(mib: diskMiB)) and \(directory) has "
                    + "\(ByteSize.format(mib: freeMiB)) free")
        }
    }
}
