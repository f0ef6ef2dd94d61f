import Foundation
import Subprocess
import VireoModel

/// Runs the host tools Vireo needs (qemu-img, gzip, cc, ip, ...) to their end, and reports a
/// missing one as the Debian package to install.
public enum HostTool {
    /// Tool name -> the Debian package that provides it.
    public static let packages: [String: String] = [
        "busybox": "busybox-static", "cc": "gcc", "dpkg-query": "dpkg", "gzip": "gzip", "lz4": "lz4",
        "mkfs.ext4": "e2fsprogs", "qemu-img": "qemu-utils", "qemu-nbd": "qemu-utils", "qemu-system-x86_64": "qemu-system-x86",
        "sha256sum": "coreutils", "xz": "xz-utils", "zstd": "zstd", "ip": "iproute2", "iptables": "iptables",
        "ip6tables": "iptables", "ebtables": "iptables", "setpriv": "util-linux", "setsid": "util-linux", "nice": "coreutils",
    ]

    /// The absolute path of `tool`, searched in PATH and the sbin directories (mkfs.ext4 lives
    /// in /usr/sbin, which is not on every user's PATH).
    public static func locate(_ tool: String) throws -> String {
        if tool.hasPrefix("/") {
            guard FileManager.default.isExecutableFile(atPath: tool) else {
                throw VireoError(.failedPrecondition, "\(tool) is not an executable file")
            }
            return tool
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for directory in directories where FileManager.default.isExecutableFile(atPath: "\(directory)/\(tool)") {
            return "\(directory)/\(tool)"
        }
        throw VireoError(
            .failedPrecondition, "'\(tool)' is not installed: install the Debian package \(packages[tool] ?? tool)")
    }

    /// Runs `tool` and returns its standard output; throws with the tool's standard error unless
    /// the exit status is in `acceptedStatus`.
    @discardableResult
    public static func run(
        _ tool: String, _ arguments: [String], input: Data? = nil, stdoutPath: String? = nil,
        acceptedStatus: Set<Int32> = [0]
    ) async throws -> Data {
        let executable = Executable.path(.init(try locate(tool)))
        let result =
            if let input {
                try await Subprocess.run(
                    executable, arguments: Arguments(arguments), input: .data(input), output: .data(limit: 1 << 30),
                    error: .string(limit: 1 << 20))
            } else {
                try await Subprocess.run(
                    executable, arguments: Arguments(arguments), output: .data(limit: 1 << 30),
                    error: .string(limit: 1 << 20))
            }
        let status: Int32 =
            switch result.terminationStatus {
            case .exited(let code): code
            case .signaled(let signal): 128 + signal
            }
        guard acceptedStatus.contains(status) else {
            let detail = result.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
            throw VireoError(
                .internal, "\(tool) \(arguments.prefix(4).joined(separator: " ")) exited with status \(status): \(detail)")
        }
        if let stdoutPath {
            try result.standardOutput.write(to: URL(fileURLWithPath: stdoutPath))
        }
        return result.standardOutput
    }

    /// Runs `tool` and returns its standard output as text.
    @discardableResult
    public static func text(_ tool: String, _ arguments: [String]) async throws -> String {
        String(decoding: try await run(tool, arguments), as: UTF8.self)
    }

    /// The installed version of a Debian package, or nil when it is not installed.
    public static func packageVersion(_ package: String) async throws -> String? {
        let output = try await run("dpkg-query", ["-W", "-f=${Version}", package], acceptedStatus: [0, 1])
        let version = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return version.isEmpty ? nil : version
    }

    /// Hex SHA-256 of `data`.
    public static func sha256(_ data: Data) async throws -> String {
        let output = String(decoding: try await run("sha256sum", ["-"], input: data), as: UTF8.self)
        return String(output.prefix { $0 != " " })
    }
}
