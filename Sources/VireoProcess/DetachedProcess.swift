import Foundation
import VireoModel

extension HostTool {
    /// Starts `command` in a session of its own (`setsid -f`): no child of this process, it
    /// outlives it. Before `exec` the shell writes its pid to `pidFile` (so the pid is the
    /// command's), joins `cgroups` (directories: their `cgroup.procs`), sets `umask` when given and
    /// exports the token in `tokenFile` as `VIREO_TOKEN` (the environment, not the command line
    /// `ps` shows). Output is appended to `log`. Returns the pid.
    public static func spawnDetached(
        _ command: [String], log: String, pidFile: String, cgroups: [String] = [], umask: String? = nil,
        tokenFile: String? = nil
    ) async throws -> Int32 {
        func quoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        var script = "echo $$ > \(quoted(pidFile)) || exit 125; "
        for group in cgroups { script += "echo $$ > \(quoted(group + "/cgroup.procs")) || exit 125; " }
        if let umask { script += "umask \(umask); " }
        if let tokenFile { script += "VIREO_TOKEN=$(cat \(quoted(tokenFile))); export VIREO_TOKEN; " }
        script += "exec " + command.map(quoted).joined(separator: " ") + " >> \(quoted(log)) 2>&1 < /dev/null"
        try? FileManager.default.removeItem(atPath: pidFile)
        try await run("setsid", ["-f", "sh", "-c", script])
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                return pid
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw VireoError(.internal, "\(command[0]) did not start (see \(log))")
    }
}
