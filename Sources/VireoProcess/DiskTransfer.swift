import Foundation
import VireoModel

/// Moving a stopped VM's disk between hosts (a cold move), whichever driver made it: the source
/// serves the disk read-only over NBD with `qemu-nbd`, the destination copies what the guest sees
/// into a qcow2 file of its own with `qemu-img convert`. The disk's format and backing chain stay
/// on the source; the copy stands alone.
///
/// With a move's credentials the export is TLS-only (`--tls-creds`): it admits only the peer the
/// credentials name (`--tls-authz`), and the copy presents the destination's certificate and
/// checks that the export's names the address it connects to.
public enum DiskTransfer {
    /// The ids of the `tls-creds-x509` and `authz-simple` objects on the tools' command lines.
    static let tlsObject = "vireo-tls"
    static let authzObject = "vireo-authz"

    /// Serves the qcow2 `disk` read-only on `address` (at the port `port` picks, a free one), as a
    /// daemon that outlives the caller, until `stopExport(in:)`. Its pid and URI are kept in
    /// `directory` (the VM's), so asking again while it runs gives the same export. Returns the URI
    /// the destination copies from.
    public static func export(
        disk: String, on address: String, port: () throws -> Int, in directory: String,
        credentials: MigrationCredentials? = nil
    ) async throws -> String {
        let files = (pid: directory + "/nbd.pid", uri: directory + "/nbd.uri")
        if let uri = try? String(contentsOfFile: files.uri, encoding: .utf8), runningPID(files.pid) != nil {
            return uri
        }
        try? FileManager.default.removeItem(atPath: files.pid)
        let port = try port()
        var arguments = [
            "--read-only", "--persistent", "--shared=4", "--format=qcow2", "--bind=\(address)", "--port=\(port)",
            "--fork", "--pid-file=\(files.pid)",
        ]
        // qemu-nbd reads the files before it forks; they go as soon as it runs.
        let tls = directory + "/nbd-tls"
        defer { try? FileManager.default.removeItem(atPath: tls) }
        if let credentials {
            try QEMUTLSFiles.write(credentials, endpoint: .server, into: tls, ownedLike: directory)
            arguments += [
                "--object", "tls-creds-x509,id=\(tlsObject),endpoint=server,verify-peer=on,dir=\(optionValue(tls))",
                "--object", "authz-simple,id=\(authzObject),identity=\(optionValue(credentials.peer))",
                "--tls-creds=\(tlsObject)", "--tls-authz=\(authzObject)",
            ]
        }
        try await HostTool.run("qemu-nbd", arguments + [disk])
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

    /// Copies the disk served at `uri` into a new qcow2 file at `path` (zeroes stay unallocated),
    /// over TLS with `credentials` (the destination's) if given. Returns the bytes the copy holds on
    /// this host.
    @discardableResult
    public static func copy(from uri: String, to path: String, credentials: MigrationCredentials? = nil) async throws
        -> UInt64
    {
        guard uri.hasPrefix("nbd://"), let colon = uri.lastIndex(of: ":"),
            let port = Int(uri[uri.index(after: colon)...]), (1...65535).contains(port)
        else {
            throw VireoError.invalid(field: "disk source", value: "'\(uri)'", "expected nbd://HOST:PORT")
        }
        var arguments = ["convert", "-f", "raw", "-O", "qcow2", uri, path]
        let tls = path + ".tls"
        defer { try? FileManager.default.removeItem(atPath: tls) }
        if let credentials {
            let host = uri[uri.index(uri.startIndex, offsetBy: 6)..<colon].trimmingCharacters(
                in: CharacterSet(charactersIn: "[]"))
            try QEMUTLSFiles.write(
                credentials, endpoint: .client, into: tls, ownedLike: (path as NSString).deletingLastPathComponent)
            arguments = [
                "convert", "--object", "tls-creds-x509,id=\(tlsObject),endpoint=client,dir=\(optionValue(tls))",
                "--image-opts",
                "driver=nbd,server.type=inet,server.host=\(optionValue(host)),server.port=\(port),tls-creds=\(tlsObject)",
                "-O", "qcow2", path,
            ]
        }
        do {
            try await HostTool.run("qemu-img", arguments)
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw VireoError(.unavailable, "copying the disk from \(uri): \(error)")
        }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        return (attributes?[.size] as? UInt64) ?? 0
    }

    /// `value` inside a QEMU option string, where a comma is written twice.
    static func optionValue(_ value: String) -> String {
        value.replacingOccurrences(of: ",", with: ",,")
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
