import Foundation
import VireoModel
import VireoProcess

/// A testbed host's own libvirt: a `libvirtd` and a `virtlogd` started inside the host's network
/// namespace, so that its guests' user networking (a loopback port forward) is on the host's
/// network, and inside a private mount namespace whose `/run/libvirt`, `/var/lib/libvirt`,
/// `/etc/libvirt` (a copy with its own `host_uuid`), `/var/cache/libvirt` and `/var/log/libvirt`
/// are directories under `directory`, so that it shares nothing with the system daemon or with
/// the other hosts' (libvirt refuses to migrate to a daemon with its own host UUID). As
/// `scripts/libvirt-second-host.sh`, plus the network namespace.
///
/// Its socket is `<directory>/sock/libvirt-sock`, a file every namespace sees at the same path:
/// the host's agent connects through it, and so does another host's libvirtd sending it a VM
/// (peer to peer). No cgroups (`cgroup_controllers = [ ]`): the daemons are started inside the
/// host's cgroups instead, so its guests share the host's CPU.
struct TestbedLibvirtd: Sendable {
    /// `<testbed>/h<i>/libvirt`.
    let directory: String

    var socket: String { directory + "/sock/libvirt-sock" }
    var uri: String { "qemu+unix:///system?socket=\(socket)" }
    var log: String { directory + "/libvirtd.log" }
    /// Where its libvirtd loads migration certificates from (`migrate_tls_x509_cert_dir`).
    var tlsDirectory: String { directory + "/tls" }
    static let daemons = ["libvirtd", "virtlogd"]

    /// Writes the daemon's configuration, starts both daemons in `namespace` and waits until
    /// libvirtd answers (its first QEMU capability probe takes seconds).
    func start(namespace: String, cgroups: [String], timeout: Duration = .seconds(60)) async throws {
        // sockaddr_un holds 108 bytes with the terminating zero.
        guard socket.utf8.count < 108 else {
            throw VireoError.invalid(
                field: "--dir", value: "'\(directory)'", "too long for libvirt's socket path (\(socket))")
        }
        let fm = FileManager.default
        for sub in ["sock", "run", "lib", "etc", "cache", "log"] {
            try fm.createDirectory(atPath: directory + "/" + sub, withIntermediateDirectories: true)
        }
        try await HostTool.run("cp", ["-a", "/etc/libvirt/.", directory + "/etc/"])
        // The system daemon's networks are not this host's business: none autostarts here.
        let autostart = directory + "/etc/qemu/networks/autostart"
        for entry in (try? fm.contentsOfDirectory(atPath: autostart)) ?? [] {
            try? fm.removeItem(atPath: autostart + "/" + entry)
        }
        try append(
            """

            host_uuid = "\(UUID().uuidString.lowercased())"
            unix_sock_dir = "\(directory)/sock"
            log_outputs = "3:file:\(log)"

            """, to: directory + "/etc/libvirtd.conf")
        // Each daemon would otherwise name a migrated domain's cgroup machine/qemu-<id>-<name>.
        // QEMU runs as root, as the qemu hosts' does: the testbed's directories (by default under
        // root's home, mode 0700) are then readable to it without relabelling.
        // Migration certificates: the agent's `migration-tls-dir`, put there for each move.
        try fm.createDirectory(
            atPath: tlsDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try append(
            "\ncgroup_controllers = [ ]\nuser = \"+0\"\ngroup = \"+0\"\nmigrate_tls_x509_cert_dir = \"\(tlsDirectory)\"\n",
            to: directory + "/etc/qemu.conf")

        func quoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        var script = ""
        for group in cgroups { script += "echo $$ > \(quoted(group + "/cgroup.procs")); " }
        for (target, sub) in [
            ("/run/libvirt", "run"), ("/var/lib/libvirt", "lib"), ("/etc/libvirt", "etc"),
            ("/var/cache/libvirt", "cache"), ("/var/log/libvirt", "log"),
        ] {
            script += "mkdir -p \(target) && mount --bind \(quoted(directory + "/" + sub)) \(target); "
        }
        script += "mkdir -p /var/lib/libvirt/qemu /var/lib/libvirt/images; "
        for daemon in Self.daemons.reversed() {
            script +=
                "\(daemon) --daemon --pid-file \(quoted(pidFile(daemon))) < /dev/null >> \(quoted(log)) 2>&1; "
        }
        try await HostTool.run(
            "nsenter",
            ["--net=/run/netns/\(namespace)", "unshare", "--mount", "--propagation", "private", "sh", "-ec", script])

        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if fm.fileExists(atPath: socket),
                (try? await HostTool.run("virsh", ["-c", uri, "version"])) != nil
            {
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw VireoError(.unavailable, "libvirtd in \(namespace) did not answer on \(uri) within \(timeout); see \(log)")
    }

    func pidFile(_ daemon: String) -> String { "\(directory)/\(daemon).pid" }

    /// Destroys and undefines the daemon's domains, ends both daemons (their mount namespace goes
    /// with them) and removes `directory`. Safe after a partial start and when nothing runs.
    func stop(progress: @Sendable (String) -> Void) async {
        if FileManager.default.fileExists(atPath: socket), let pid = runningPID("libvirtd") {
            let names = (try? await HostTool.text("virsh", ["-c", uri, "list", "--all", "--name"])) ?? ""
            for domain in names.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) })
            where !domain.isEmpty {
                progress("libvirtd \(pid): removing domain \(domain)")
                _ = try? await HostTool.run("virsh", ["-c", uri, "destroy", domain], acceptedStatus: [0, 1])
                _ = try? await HostTool.run(
                    "virsh", ["-c", uri, "undefine", "--snapshots-metadata", domain], acceptedStatus: [0, 1])
            }
        }
        for daemon in Self.daemons {
            if let pid = runningPID(daemon) {
                progress("\(daemon) \(pid): stopping")
                Testbed.terminate(pid)
            }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The pid in the daemon's pid file if that process still runs and is that daemon (a pid file
    /// left by a crash may name a process that has since reused the number).
    func runningPID(_ daemon: String) -> Int32? {
        guard let text = try? String(contentsOfFile: pidFile(daemon), encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0,
            let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
            comm.trimmingCharacters(in: .whitespacesAndNewlines) == daemon
        else { return nil }
        return pid
    }

    /// Every `<testbed>/h*/libvirt` directory: what `down` removes even when `testbed.json` does
    /// not list the host (an `up` that crashed while starting its daemon).
    static func all(in testbed: String) -> [TestbedLibvirtd] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: testbed)) ?? []
        return entries.filter { $0.hasPrefix("h") && Int($0.dropFirst()) != nil }.sorted()
            .map { TestbedLibvirtd(directory: "\(testbed)/\($0)/libvirt") }
            .filter { FileManager.default.fileExists(atPath: $0.directory) }
    }

    private func append(_ text: String, to path: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(text.utf8))
    }
}
