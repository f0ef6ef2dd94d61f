import Foundation
import VireoModel

/// Moving a stopped VM's disk between hosts (a cold move), whichever driver made it: the source
/// serves the disk read-only over NBD with `qemu-nbd`, the destination copies what the guest sees
/// into a qcow2 file of its own with `qemu-img convert`. The disk's format and backing chain stay
/// on the source; the copy stands alone.
public enum DiskTransfer {
    /// Serves the qcow2 `disk` read-only on `address` (at the port `port` picks, a free one), as a
    /// daemon that outlives the caller, until `stopExport(in:)`. Its pid and URI are kept in
    /// `directory` (the VM's), so asking again while it runs gives the same export. Returns the URI
    /// the destination copies from.
    public static func export(disk: String, on address: String, port: () throws -> Int, in directory: String)
        async throws -> String
    {
        let files = (pid: directory + "/nbd.pid", uri: directory + "/nbd.uri")
        if let uri = try? String(contentsOfFile: files.uri, encoding: .utf8), runningPID(files.pid) != nil {
            return uri
        }
        try? FileManager.default.removeItem(atPath: files.pid)
        let port = try port()
        try await HostTool.run(
            "qemu-nbd",
            [
                "--read-only", "--persistent", "--shared=4", "--format=qcow2", "--bind=\(address)", "--port=\(port)",
                "--fork", "--pid-file=\(files.pid)", disk,
            ])
        let uri = "nbd://\(address.contains(":") ? "[\(address)]" : address):\(port)"
        try uri.write(toFile: files.uri, atomically: true, encoding: .utf8)
        return uri
    }

    /// Stops the export kept in `directory`, if it still runs.
    public static func stopExport(in directory: String) {
        if let pid = runningPID(directory + "/nbd.pid") { kill(pid, SIGTERM) }
        try? FileManager.default.removeItem(atPath: directory + "/nbd.pid")
        try? FileManager.default.removeItem(atPath: directory + "/nbd.uri")
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

    /// The qemu-nbd whose pid `pidFile` holds, if it still runs (a pid file can outlive its process
    /// and the number be reused).
    private static func runningPID(_ pidFile: String) -> Int32? {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0,
            let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
            command.hasPrefix("qemu-nbd")
        else { return nil }
        return pid
    }
}
