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
