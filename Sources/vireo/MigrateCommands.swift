import ArgumentParser
import Foundation
import VireoAPI
import VireoClient
import VireoModel

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Move a VM to another host: live while it keeps running, or cold (--cold).",
        discussion: """
            Both hosts need the live-migration capability and the same hypervisor family. Where both \
            hosts see the VM's disk (shared storage, as in `vireo testbed`) only memory and devices \
            move; otherwise the disk is copied first while the guest runs (hosts with the \
            storage-migration capability, e.g. the qemu driver), and the source's copy is removed once \
            the guest has moved. --copy-storage copies even between hosts that share storage; \
            --no-copy-storage refuses to copy. Shows the transfer as it goes; at the end prints the \
            total time, the downtime (how long the guest was paused) and the bytes sent. \
            --cold moves a running or stopped VM between any two hosts whose drivers have cold-migration, \
            whatever their hypervisors (qemu and libvirt): the VM stops, the destination copies its disk \
            from the source (NBD), the VM starts there if it ran, and the source's copy is removed. A host set \
            to migration-mode paused (and, under TCG, a VM made before 2026-12-07 or on a libvirt host) pauses \
            the guest for the whole copy (docs/migration.md says why), so the downtime is the copy. \
            If the migration fails, the VM keeps running on its current host and the \
            reason is printed (exit code 1).
            Example: vireo migrate web-1 --to h2
            """)

    @Argument(help: "VM name or ID.") var vm: String
    @Option(help: ArgumentHelp("Destination host.", valueName: "host")) var to: String
    @Flag(
        inversion: .prefixedNo,
        help: "Copy the VM's disk to the destination during the move (default: only when the hosts do not share storage)."
    ) var copyStorage: Bool?
    @Flag(
        help:
            "Move it cold: stop it, copy its disk, start it on the destination (if it ran). Works between hosts of different hypervisors."
    ) var cold = false
    @Flag(help: "Return once the migration is accepted, without waiting for it to end.") var noWait = false
    @Option(help: ArgumentHelp("Give up waiting after this many seconds.", valueName: "seconds")) var timeout: Double = 300
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let api = client.client()
        if cold, copyStorage == false {
            throw ValidationError("--cold always copies the disk; drop --no-copy-storage")
        }
        var migration = try await api.migrateVM(vm, to: to, copyStorage: copyStorage, cold: cold)
        if !noWait {
            let bar = ProgressBar(enabled: output.output == .table && isatty(STDERR_FILENO) != 0)
            let deadline = ContinuousClock.now + .seconds(timeout)
            while migration.state.isActive {
                guard ContinuousClock.now < deadline else {
                    bar.finish()
                    throw VireoError(
                        .unavailable, "migration \(migration.id) still \(migration.state.rawValue) after \(Int(timeout)) s")
                }
                try await Task.sleep(for: .milliseconds(100))
                migration = try await api.migration(migration.id)
                bar.show(migration)
            }
            bar.finish()
            // The destination can report the guest running before the source's figures arrive.
            for _ in 0..<30 where migration.state == .completed && migration.stats == nil {
                try await Task.sleep(for: .milliseconds(100))
                migration = try await api.migration(migration.id)
            }
        }
        if output.output == .json {
            try printJSON(migration)
        } else {
            print(summary(migration))
        }
        if migration.state == .failed { throw ExitCode(1) }
    }

    func summary(_ m: MigrationView) -> String {
        switch m.state {
        case .completed where m.kind == .cold:
            guard let stats = m.stats else { return "\(m.vm) moved cold from \(m.source) to \(m.destination)" }
            return
                "\(m.vm) moved cold from \(m.source) to \(m.destination): down \(stats.downtimeMs) ms, disk copied in \(stats.storageTimeMs ?? 0) ms"
        case .completed:
            guard let stats = m.stats else { return "\(m.vm) moved from \(m.source) to \(m.destination)" }
            var line = String(
                format: "%@ moved from %@ to %@: total %d ms, downtime %d ms%@, %@ sent", m.vm, m.source, m.destination,
                stats.totalTimeMs, stats.downtimeMs, stats.mode == .paused ? " (paused copy)" : "",
                ByteSize.describe(bytes: stats.transferredBytes))
            if let disk = stats.storageBytes {
                line += ", disk copied: \(ByteSize.describe(bytes: disk)) in \(stats.storageTimeMs ?? 0) ms"
            }
            return line
        case .failed:
            return
                "migration of \(m.vm) to \(m.destination) failed: \(m.message ?? "unknown reason"); it keeps running on \(m.source)"
        default:
            return "migration \(m.id) of \(m.vm) from \(m.source) to \(m.destination): \(m.state.rawValue)"
        }
    }
}

/// One line on standard error, redrawn: state, bytes sent of the guest's memory, dirty rate.
struct ProgressBar {
    let enabled: Bool

    func show(_ m: MigrationView) {
        guard enabled else { return }
        var line = "\(m.vm) → \(m.destination): \(m.state.rawValue)"
        if let p = m.progress, p.totalBytes == 0, let total = p.storageTotalBytes, total > 0 {
            let done = min(1, Double(p.storageCopiedBytes ?? 0) / Double(total))
            let width = 30
            let filled = Int(done * Double(width))
            line += " disk [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
            line += String(format: " %3.0f%% of %@", done * 100, ByteSize.describe(bytes: total))
        } else if let p = m.progress, p.totalBytes > 0 {
            let done = min(1, Double(p.totalBytes - min(p.remainingBytes, p.totalBytes)) / Double(p.totalBytes))
            let width = 30
            let filled = Int(done * Double(width))
            line += " [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
            line += String(format: " %3.0f%%, %@ sent", done * 100, ByteSize.describe(bytes: p.transferredBytes))
            if p.dirtyPagesPerSecond > 0 { line += ", \(p.dirtyPagesPerSecond) dirty pages/s" }
        }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}

struct MigrationCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migration", abstract: "Past and running live migrations.",
        subcommands: [MigrationList.self, MigrationShow.self])
}

struct MigrationList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List migrations, newest first.")

    @Option(help: ArgumentHelp("Only this VM's migrations.", valueName: "vm")) var vm: String?
    @Option(help: "At most this many.") var limit: Int = 100
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list = try await client.client().migrations(vm: vm, limit: limit)
        if output.output == .json { return try printJSON(list.items) }
        printTable(
            ["ID", "VM", "FROM", "TO", "STATE", "TOTAL", "DOWNTIME", "SENT", "AGE"],
            list.items.map { m in
                [
                    String(m.id.rawValue.prefix(8)), m.vm, m.source, m.destination, m.state.rawValue,
                    m.stats.map { "\($0.totalTimeMs) ms" } ?? "-", m.stats.map { "\($0.downtimeMs) ms" } ?? "-",
                    m.stats.map { ByteSize.describe(bytes: $0.transferredBytes) } ?? "-", age(since: m.requestedAt),
                ]
            })
    }
}

struct MigrationShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one migration.")

    @Argument(help: "Migration ID.") var id: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let m = try await client.client().migration(MigrationID(id))
        if output.output == .json { return try printJSON(m) }
        print("Migration \(m.id)")
        print("  VM:          \(m.vm)")
        print("  From → to:   \(m.source) → \(m.destination)")
        print("  State:       \(m.state.rawValue)\(m.message.map { " (\($0))" } ?? "")")
        print("  Reason:      \(m.reason)")
        print("  Requested:   \(m.requestedAt.formatted(.iso8601))")
        if let stats = m.stats {
            print("  Total time:  \(stats.totalTimeMs) ms")
            print("  Downtime:    \(stats.downtimeMs) ms\(stats.mode == .paused ? " (paused for the whole copy)" : "")")
            print("  Sent:        \(ByteSize.describe(bytes: stats.transferredBytes))")
        }
    }
}
