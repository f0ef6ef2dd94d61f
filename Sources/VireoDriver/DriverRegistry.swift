import VireoModel

/// Options every driver factory receives; drivers read the keys they understand.
public struct DriverOptions: Sendable {
    /// Directory the driver may keep its files in (disks, sockets, logs).
    public var stateDirectory: String
    /// Driver-specific settings (`boot-delay`, `accel`, ...), from the command line.
    public var settings: [String: String]

    public init(stateDirectory: String, settings: [String: String] = [:]) {
        self.stateDirectory = stateDirectory
        self.settings = settings
    }

    /// A misspelt setting must not be silently ignored.
    public func rejectUnknown(driver: String, allowed: Set<String>) throws(VireoError) {
        for key in settings.keys.sorted() where !allowed.contains(key) {
            throw VireoError.invalid(
                field: "--driver-opt", value: "'\(key)'",
                "not a setting of the \(driver) driver; it has: \(allowed.sorted().joined(separator: ", "))")
        }
    }

    /// The setting `key` as a non-negative integer.
    public func int(_ key: String) throws(VireoError) -> Int? {
        guard let text = settings[key] else { return nil }
        guard let value = Int(text), value >= 0 else {
            throw VireoError.invalid(field: key, value: "'\(text)'", "must be a non-negative integer")
        }
        return value
    }
}

/// Name → driver factory. The simulated driver is registered exactly like the real ones.
public struct DriverRegistry: Sendable {
    public typealias Factory = @Sendable (DriverOptions) throws -> any HypervisorDriver

    private var factories: [String: Factory] = [:]

    public init() {}

    public mutating func register(_ name: String, factory: @escaping Factory) {
        factories[name] = factory
    }

    public var names: [String] { factories.keys.sorted() }

    public func make(_ name: String, options: DriverOptions) throws -> any HypervisorDriver {
        guard let factory = factories[name] else {
            throw VireoError.invalid(
                field: "driver", value: "'\(name)'", "unknown driver; available: \(names.joined(separator: ", "))")
        }
        return try factory(options)
    }
}
