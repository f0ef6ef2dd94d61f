/// Things a hypervisor driver can do beyond the basic lifecycle. Hosts advertise them in their
/// fingerprint; placement filters on them; a driver asked for one it lacks answers `.unsupported`.
public enum Capability: String, Sendable, Codable, CaseIterable, Comparable {
    case liveMigration = "live-migration"
    case snapshots = "snapshots"
    case pause = "pause"
    case serialConsole = "serial-console"
    case virtualTime = "virtual-time"

    public static func < (a: Capability, b: Capability) -> Bool { a.rawValue < b.rawValue }
}
