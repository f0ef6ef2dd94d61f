import CLibvirt
import Foundation
import VireoDriver
import VireoModel
import VireoProcess

/// Live migration without shared storage: libvirt's own copy of the disk
/// (`VIR_MIGRATE_NON_SHARED_DISK`). The destination's libvirtd starts its QEMU on the empty disk the
/// destination agent made and exports it over NBD on the migration address; the source's QEMU
/// mirrors the whole guest-visible disk into it (`blockdev-mirror sync=full`) while the guest runs,
/// and libvirt sends the memory once the mirror is ready, ending it with the guest paused.
extension LibvirtDriver {
    /// Makes the empty qcow2 of `diskMiB` a copy fills.
    func makeEmptyDisk(_ path: String, diskMiB: Int) async throws {
        try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2", path, "\(diskMiB)M"])
    }

    /// `virDomainMigrateToURI3`'s flags: peer to peer, defined at the destination, live or not, and
    /// either the disk shared or copied. UNSAFE with a shared disk: libvirt calls a disk safe to
    /// share only on a file system it knows as shared (NFS, GlusterFS...) or with cache='none';
    /// `shared-disks` is the operator saying it is shared. Without LIVE, libvirt pauses the guest
    /// for the memory (after a disk copy, which runs with the guest running). No UNDEFINE_SOURCE:
    /// the source domain stays defined (shut off, "migrated") so that its completed job statistics
    /// can be read; `release` undefines it.
    static func migrationFlags(mode: MigrationCopyMode, storage: MigrationStorage, tls: Bool = false) -> UInt32 {
        var flags = VIR_MIGRATE_PEER2PEER.rawValue | VIR_MIGRATE_PERSIST_DEST.rawValue
        if mode == .live { flags |= VIR_MIGRATE_LIVE.rawValue }
        // QEMU's TLS for the memory stream and, in a copy, for the disk's NBD connection too.
        if tls { flags |= VIR_MIGRATE_TLS.rawValue }
        switch storage {
        case .shared: flags |= VIR_MIGRATE_UNSAFE.rawValue
        case .copy: flags |= VIR_MIGRATE_NON_SHARED_DISK.rawValue
        }
        return flags
    }
}

extension LibvirtIncoming {
    /// The migration parameters a copy adds: only the VM's disk is copied, and the destination's
    /// NBD server listens on the migration address (not every interface), which the source's
    /// QEMU connects to; its port comes from the destination's migration port range.
    var copyParameters: [(String, String)] {
        guard storage == .copy else { return [] }
        var parameters = [(VIR_MIGRATE_PARAM_MIGRATE_DISKS, LibvirtRecord.diskTarget)]
        if let host = URLComponents(string: migrationURI)?.host, !host.isEmpty {
            parameters.append((VIR_MIGRATE_PARAM_LISTEN_ADDRESS, host))
        }
        return parameters
    }
}

extension LibvirtRecord {
    /// The guest's disk device in the domain definition.
    static let diskTarget = "vda"

    /// `xml` with the backing chain of the disk at `disk` replaced by none (`<backingStore/>`): a
    /// copied disk holds the whole guest-visible disk and stands alone.
    static func withoutBackingChain(_ xml: String, disk: String) throws -> String {
        guard let source = xml.range(of: "<source file='\(disk.xmlEscaped)'"),
            let start = xml.range(of: "<disk", options: .backwards, range: xml.startIndex..<source.lowerBound),
            let end = xml.range(of: "</disk>", range: source.upperBound..<xml.endIndex)
        else { throw VireoError(.internal, "the domain's definition has no disk at \(disk)") }
        let element = start.lowerBound..<end.lowerBound
        guard let chain = xml.range(of: "<backingStore", range: element) else { return xml }
        let chainEnd =
            xml.range(of: "</backingStore>", options: .backwards, range: chain.upperBound..<end.lowerBound)?.upperBound
            ?? xml.range(of: "/>", range: chain.upperBound..<end.lowerBound)?.upperBound ?? end.lowerBound
        return xml.replacingCharacters(in: chain.lowerBound..<chainEnd, with: "<backingStore/>")
    }
}

/// libvirt's job statistics (`virDomainGetJobStats`, numeric fields by name) as Vireo's.
enum LibvirtJobStatistics {
    /// A migration under way; nil when the statistics have neither memory nor disk figures (no
    /// job, or the migration is still being set up: libvirt then reports totals of 0). While a disk
    /// is copied, before any memory is sent, the memory figures are 0.
    static func progress(from stats: [String: UInt64]) -> MigrationProgress? {
        let total = stats[VIR_DOMAIN_JOB_MEMORY_TOTAL] ?? 0
        let disk = disk(in: stats)
        guard total > 0 || disk != nil else { return nil }
        return MigrationProgress(
            transferredBytes: total > 0 ? stats[VIR_DOMAIN_JOB_MEMORY_PROCESSED] ?? 0 : 0,
            remainingBytes: total > 0 ? stats[VIR_DOMAIN_JOB_MEMORY_REMAINING] ?? 0 : 0, totalBytes: total,
            dirtyPagesPerSecond: stats[VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE] ?? 0, storageCopiedBytes: disk?.processed,
            storageTotalBytes: disk?.total)
    }

    /// The disk copy's bytes copied and to copy, when the job copies one.
    static func disk(in stats: [String: UInt64]) -> (processed: UInt64, total: UInt64)? {
        guard let total = stats[VIR_DOMAIN_JOB_DISK_TOTAL], total > 0 else { return nil }
        return (stats[VIR_DOMAIN_JOB_DISK_PROCESSED] ?? 0, total)
    }

    /// A completed migration: time elapsed, downtime and memory sent, as the QEMU driver reports
    /// QEMU's (times in milliseconds, bytes of guest memory sent including pages sent again).
    /// libvirt times the downtime itself, from the guest's pause at the source to its resumption at
    /// the destination, so it is taken as it is in both modes; the job's time also counts the
    /// phases before the pause (connecting to the destination, starting its QEMU, copying a disk).
    /// A copied disk's bytes are the disk's; its time is the caller's to measure.
    static func stats(from stats: [String: UInt64], mode: MigrationCopyMode) -> MigrationStats {
        MigrationStats(
            totalTimeMs: Int(stats[VIR_DOMAIN_JOB_TIME_ELAPSED] ?? 0),
            downtimeMs: Int(stats[VIR_DOMAIN_JOB_DOWNTIME] ?? 0),
            transferredBytes: stats[VIR_DOMAIN_JOB_MEMORY_PROCESSED] ?? stats[VIR_DOMAIN_JOB_DATA_PROCESSED] ?? 0,
            setupTimeMs: stats[VIR_DOMAIN_JOB_SETUP_TIME].map { Int($0) }, mode: mode,
            storageBytes: disk(in: stats)?.processed)
    }
}
