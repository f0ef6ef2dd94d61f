import Foundation
import VireoModel

/// Whether a host's file system can take a VM's disk, before a driver makes one that a copy fills.
public enum DiskRoom {
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
