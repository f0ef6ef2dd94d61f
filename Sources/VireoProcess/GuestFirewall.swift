import Foundation
import VireoModel

/// Keeps guests off the services of the machines they run on (docs/security.md): the agent's and
/// the controller's APIs, migration and disk-export ports, anything a host listens on.
///
/// Guests are recognised by their frames' source MAC: every Vireo guest's MAC starts 52:54 (as
/// QEMU's and libvirt's do), and a frame that comes in on a guest's tap (`vt.…`) with any other
/// source MAC is dropped, so a guest cannot pass for something else. On each bridge of the
/// namespace, frames from a guest MAC are marked (ebtables); IPv4 and IPv6 packets so marked
/// that are addressed to this namespace itself are dropped unless they belong to a connection
/// the host opened (iptables/ip6tables, conntrack). Guests still reach each other, on this host
/// and others, and answer whoever connects to them; a port a host forwards to a guest (DNAT)
/// is routed, not delivered locally, so it stays open.
///
/// The agent of a host with a tap network installs this in its namespace; the testbed also in the
/// namespace of its controller. Installing is idempotent (the chains are flushed and refilled).
/// Guests on QEMU's user networking are cut off from the host by `restrict=on` instead.
public enum GuestFirewall {
    /// The source MACs of guests.
    public static let guestMACs = "52:54:00:00:00:00/ff:ff:00:00:00:00"
    /// Guests' tap devices (`vt.` and a hash of the VM ID), as ebtables matches interface names.
    public static let guestTaps = "vt.+"
    /// The packet mark bit that says "from a guest".
    public static let mark = "0x40000"
    /// The chain, in ebtables' filter table and in iptables' and ip6tables' filter tables.
    public static let chain = "VIREO-GUESTS"

    /// Installs (or refreshes) the rules in the current network namespace; with `namespace`, in
    /// that one (`ip netns exec`).
    public static func install(namespace: String? = nil) async throws {
        try await ensureChain("ebtables", namespace: namespace)
        try await run(namespace, "ebtables", ["-A", chain, "-i", guestTaps, "-s", "!", guestMACs, "-j", "DROP"])
        try await run(
            namespace, "ebtables",
            ["-A", chain, "-s", guestMACs, "-j", "mark", "--mark-or", mark, "--mark-target", "CONTINUE"])
        for hook in ["INPUT", "FORWARD"] {
            let listed = String(decoding: try await run(namespace, "ebtables", ["-L", hook]), as: UTF8.self)
            if !listed.contains("-j \(chain)") { try await run(namespace, "ebtables", ["-A", hook, "-j", chain]) }
        }
        for tool in ["iptables", "ip6tables"] {
            try await ensureChain(tool, namespace: namespace)
            try await run(namespace, tool, ["-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"])
            try await run(namespace, tool, ["-A", chain, "-j", "DROP"])
            // One jump, first in INPUT: one left by an earlier install goes first.
            await removeJumps(tool, namespace: namespace)
            try await run(namespace, tool, ["-I"] + jump)
        }
    }

    /// Removes the rules from the current namespace (or `namespace`); what is not there is skipped.
    public static func remove(namespace: String? = nil) async {
        for hook in ["INPUT", "FORWARD"] {
            _ = try? await run(namespace, "ebtables", ["-D", hook, "-j", chain], acceptedStatus: [0, 1, 4])
        }
        _ = try? await run(namespace, "ebtables", ["-F", chain], acceptedStatus: [0, 1, 4])
        _ = try? await run(namespace, "ebtables", ["-X", chain], acceptedStatus: [0, 1, 4])
        for tool in ["iptables", "ip6tables"] {
            await removeJumps(tool, namespace: namespace)
            _ = try? await run(namespace, tool, ["-F", chain], acceptedStatus: [0, 1])
            _ = try? await run(namespace, tool, ["-X", chain], acceptedStatus: [0, 1])
        }
    }

    /// The rule of iptables' (or ip6tables') INPUT that sends guests' packets to `chain`.
    private static let jump = ["INPUT", "-m", "mark", "--mark", "\(mark)/\(mark)", "-j", chain]

    private static func removeJumps(_ tool: String, namespace: String?) async {
        for _ in 0..<16 {
            guard (try? await run(namespace, tool, ["-D"] + jump)) != nil else { return }
        }
    }

    /// Creates `chain` in `tool`'s filter table, or empties it when it is there.
    private static func ensureChain(_ tool: String, namespace: String?) async throws {
        _ = try await run(namespace, tool, ["-N", chain], acceptedStatus: [0, 1, 4])
        try await run(namespace, tool, ["-F", chain])
    }

    @discardableResult
    private static func run(_ namespace: String?, _ tool: String, _ arguments: [String], acceptedStatus: Set<Int32> = [0])
        async throws -> Data
    {
        if let namespace {
            return try await HostTool.run(
                "ip", ["netns", "exec", namespace, try HostTool.locate(tool)] + arguments, acceptedStatus: acceptedStatus)
        }
        return try await HostTool.run(tool, arguments, acceptedStatus: acceptedStatus)
    }
}
