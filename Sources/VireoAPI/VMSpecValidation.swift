import VireoModel

/// Turns an API body or a manifest's `spec` into a `VMSpec`, or says exactly what is wrong.
public enum VMSpecValidation {
    public static let maxCPUs = 512
    public static let maxMemoryMiB = 16 * 1024 * 1024
    public static let maxDiskMiB = 16 * 1024 * 1024

    /// Fields of the flat form used by `POST /v1/vms`.
    static let apiFields: Set<String> = ["name", "image", "cpus", "memory", "disk", "host", "app", "restartPolicy"]
    /// Fields of a manifest's `spec` (the name lives in `metadata`).
    static let manifestFields: Set<String> = ["image", "cpus", "memory", "disk", "host", "app", "restartPolicy"]

    /// Validates the body of `POST /v1/vms`.
    public static func fromAPIBody(_ body: JSONValue) throws(VireoError) -> VMSpec {
        let fields = try FieldReader(body, path: "")
        try fields.rejectUnknown(allowed: apiFields)
        let name = try fields.requiredString("name")
        return try spec(name: name, nameField: "name", fields: fields)
    }

    /// Validates a manifest spec whose name came from `metadata.name`.
    public static func fromManifest(name: String, nameField: String, spec: FieldReader) throws(VireoError) -> VMSpec {
        try spec.rejectUnknown(allowed: manifestFields)
        return try self.spec(name: name, nameField: nameField, fields: spec)
    }

    static func spec(name: String, nameField: String, fields: FieldReader) throws(VireoError) -> VMSpec {
        try ResourceName.validate(name, field: nameField)
        let sizing = try self.sizing(fields, defaultMemoryMiB: 128)
        let host = try fields.string("host")
        if let host { try ResourceName.validate(host, field: fields.field("host")) }
        let app = try fields.string("app")
        if let app { try ResourceName.validate(app, field: fields.field("app")) }
        let diskMiB = try fields.sizeMiB("disk")
        if let diskMiB {
            guard diskMiB >= ImageCatalogue.virtualDiskMiB else {
                throw VireoError.invalid(
                    field: fields.field("disk"), value: ByteSize.format(mib: diskMiB),
                    "must be at least the image's \(ByteSize.format(mib: ImageCatalogue.virtualDiskMiB))")
            }
            guard diskMiB <= maxDiskMiB else {
                throw VireoError.invalid(field: fields.field("disk"), value: ByteSize.format(mib: diskMiB), "is too large")
            }
        }
        let restartPolicy = try fields.string("restartPolicy").map { text throws(VireoError) in
            guard let policy = RestartPolicy(rawValue: text) else {
                throw VireoError.invalid(
                    field: fields.field("restartPolicy"), value: "'\(text)'",
                    "must be one of: \(RestartPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return policy
        }
        return VMSpec(
            name: name, image: sizing.image, cpus: sizing.cpus, memoryMiB: sizing.memoryMiB, host: host, app: app,
            // `never` is the default: kept as no policy, so that saying it changes no spec.
            diskMiB: diskMiB, restartPolicy: restartPolicy == .never ? nil : restartPolicy)
    }

    /// A VM's `image`, `cpus` and `memory` (default: `defaultMemoryMiB`, or the image's minimum
    /// if larger), checked against the image catalogue and the limits. `image` defaults to
    /// `defaultImage` when given, else is required.
    static func sizing(_ fields: FieldReader, defaultMemoryMiB: Int, defaultImage: String? = nil) throws(VireoError) -> (
        image: String, cpus: Int, memoryMiB: Int
    ) {
        let imageName: String
        if let defaultImage {
            imageName = try fields.string("image") ?? defaultImage
        } else {
            imageName = try fields.requiredString("image")
        }
        guard let image = ImageCatalogue.image(named: imageName) else {
            let known = ImageCatalogue.builtIn.map(\.name).joined(separator: ", ")
            throw VireoError.invalid(field: fields.field("image"), value: "'\(imageName)'", "unknown image; known: \(known)")
        }
        let cpus = try fields.int("cpus") ?? 1
        guard cpus > 0 else { throw VireoError.invalid(field: fields.field("cpus"), value: "\(cpus)", "must be at least 1") }
        guard cpus <= maxCPUs else {
            throw VireoError.invalid(field: fields.field("cpus"), value: "\(cpus)", "must be at most \(maxCPUs)")
        }
        let memoryMiB = try fields.sizeMiB("memory") ?? max(defaultMemoryMiB, image.minimumMemoryMiB)
        guard memoryMiB >= image.minimumMemoryMiB else {
            throw VireoError.invalid(
                field: fields.field("memory"), value: ByteSize.format(mib: memoryMiB),
                "image '\(image.name)' needs at least \(ByteSize.format(mib: image.minimumMemoryMiB))")
        }
        guard memoryMiB <= maxMemoryMiB else {
            throw VireoError.invalid(field: fields.field("memory"), value: ByteSize.format(mib: memoryMiB), "is too large")
        }
        return (image.name, cpus, memoryMiB)
    }
}
