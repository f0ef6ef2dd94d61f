import Foundation
import VireoModel

/// Moving a stopped VM's disk between hosts (a cold move), whichever driver made it: the source
/// serves the disk read-only over NBD with `qemu-nbd`, the destination copies what the guest sees
/// into a qcow2 file of its own with `qemu-img convert`. The disk's format and backing chain stay
/// on the source; the copy stands alone.
public enum DiskTransfer {
    /// Serves the qcow2 `disk` read-only on `address`:`port` (a free one), as a daemon that
    /// outlives the caller, until `stopExport(pidFile:)`. Returns the URI the destination copies from.
    public static func export(disk: String, on address: String, port: Int, pidFile: String) async throws -> String {
        try? FileManager.default.removeItem(atPath: pidFile)
        try await HostTool.run(
            "qemu-nbd",
            [
                "--read-only", "--persistent", "--shared=4", "--format=qcow2", "--bind=\(address)", "--port=\(port)",
                "--fork", "--pid-file=\(pidFile)", disk,
            ])
        return "nbd://\(address.contains(":") ? "[\(address)]" : address):\(port)"
    }

    /// Stops the export started with `pidFile`, if it still runs.
    public static func stopExport(pidFile: String) {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0
        else { return }
        if isQEMUNBD(pid) { kill(pid, SIGTERM) }
        try? FileManager.default.removeItem(atPath: pidFile)
    }

    /// Copies the disk served at `uri` into a new qcow2 file at `path` (zeroes stay unallocated).
    /// Returns the bytes the copy holds on this host.
    @discardableResult
    public static func copy(from uri: String, to path: String) async throws -> UInt64 {
        guard uri.hasPrefix("nbd://") else {
            throw VireoError.invalid(field: "disk source", value: "'\(uri)'", "expected nbd://HOST:PORT")
        }
        do {
            try await HostTool.run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", uri, path])
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw VireoError(.unavailable, "copying the disk from \(uri): \(error)")
        }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        return (attributes?[.size] as? UInt64) ?? 0
    }

    /// Whether `pid` is a qemu-nbd (a pid file can outlive its process and the number be reused).
    private static func isQEMUNBD(_ pid: Int32) -> Bool {
        guard let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return false }
        return command.hasPrefix("qemu-nbd")
    }
}
