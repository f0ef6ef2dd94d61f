import Foundation
import VireoModel
import Yams

/// One validated document of a manifest (`vireo apply -f`).
public enum ManifestDocument: Sendable, Equatable {
    case virtualMachine(VMSpec)
    case application(ApplicationSpec)
    /// An OpenSLO v1 SLO: objectives for the application named by its `service`.
    case slo(OpenSLODocument)
    /// A desktop context, opened on the host its `spec.host` names (or one the controller chooses)
    /// unless open already.
    case context(ContextOpenRequest)
    /// An OpenSLO v1 Service: a Vireo application of that name, which must exist (or be in the
    /// same manifest).
    case service(String)

    public var kind: String {
        switch self {
        case .virtualMachine: "VirtualMachine"
        case .application: "Application"
        case .slo: "SLO"
        case .context: "Context"
        case .service: "Service"
        }
    }

    public var name: String {
        switch self {
        case .virtualMachine(let spec): spec.name
        case .application(let spec): spec.name
        case .slo(let document): document.name
        case .context(let request): request.spec.name
        case .service(let name): name
        }
    }
}

/// Parses manifests: one or more YAML (or JSON) documents, each
/// `{apiVersion: vireo/v1, kind: ..., metadata: {name: ...}, spec: {...}}`.
///
/// Either every document is valid or the whole manifest is rejected, so an apply never half
/// happens. Errors name the document, the field path and the value.
public enum ManifestParser {
    public static let apiVersion = "vireo/v1"
    public static let kinds = ["VirtualMachine", "Application", "SLO", "Context"]
    /// OpenSLO documents keep their own version.
    public static let openSLOVersion = "openslo/v1"
    public static let openSLOKinds = [
        "Service", "SLI", "SLO", "DataSource", "AlertPolicy", "AlertCondition", "AlertNotificationTarget",
    ]
    /// Deeper documents are rejected rather than recursed into.
    static let maxDepth = 64
    static let maxDocuments = 10_000

    public static func parse(_ text: String) throws(VireoError) -> [ManifestDocument] {
        // A YAML list of documents (as OpenSLO's examples are written) counts as its documents.
        let values = try loadYAMLDocuments(text).flatMap { value -> [JSONValue] in
            if case .array(let list) = value { list } else { [value] }
        }
        guard !values.isEmpty else { throw VireoError(.invalidArgument, "manifest: contains no documents") }
        func prefix(_ index: Int) -> String { values.count > 1 ? "document \(index + 1): " : "" }
        // First the OpenSLO documents that SLOs name, wherever they are in the manifest.
        var library = OpenSLOLibrary()
        var seen: Set<String> = []
        var headers: [(kind: String, name: String, spec: FieldReader)] = []
        for (index, value) in values.enumerated() {
            do throws(VireoError) {
                let header = try self.header(value)
                guard seen.insert("\(header.kind)/\(header.name)").inserted else {
                    throw VireoError.invalid(field: "metadata.name", value: "'\(header.name)'", "appears twice in the manifest")
                }
                try library.collect(kind: header.kind, name: header.name, spec: header.spec)
                headers.append(header)
            } catch {
                throw VireoError(error.code, prefix(index) + error.message)
            }
        }
        var documents: [ManifestDocument] = []
        for (index, header) in headers.enumerated() {
            do throws(VireoError) {
                if let document = try parseDocument(header, library: &library) { documents.append(document) }
            } catch {
                throw VireoError(error.code, prefix(index) + error.message)
            }
        }
        for (index, header) in headers.enumerated()
        where OpenSLOLibrary.referenced.contains(header.kind) && !library.used.contains("\(header.kind)/\(header.name)") {
            throw VireoError(
                .invalidArgument,
                prefix(index)
                    + "\(header.kind) '\(header.name)' is used by no SLO of this manifest: Vireo keeps it only as part of the SLOs that use it"
            )
        }
        return documents
    }

    /// A document's kind, name and spec, with its version checked.
    static func header(_ value: JSONValue) throws(VireoError) -> (kind: String, name: String, spec: FieldReader) {
        let root = try FieldReader(value, path: "")
        try root.rejectUnknown(allowed: ["apiVersion", "kind", "metadata", "spec"])
        let version = try root.requiredString("apiVersion")
        let kind = try root.requiredString("kind")
        if version == openSLOVersion {
            guard openSLOKinds.contains(kind) else {
                throw VireoError.invalid(
                    field: "kind", value: "'\(kind)'",
                    "unknown OpenSLO kind; expected one of: \(openSLOKinds.joined(separator: ", "))")
            }
        } else if version == apiVersion {
            guard kinds.contains(kind) else {
                throw VireoError.invalid(
                    field: "kind", value: "'\(kind)'", "unknown kind; expected one of: \(kinds.joined(separator: ", "))")
            }
        } else {
            throw VireoError.invalid(
                field: "apiVersion", value: "'\(version)'", "unsupported; expected \(apiVersion) or \(openSLOVersion)")
        }
        guard let metadata = try root.object("metadata") else {
            throw VireoError(.invalidArgument, "metadata: is required")
        }
        try metadata.rejectUnknown(allowed: ["name", "labels", "displayName", "annotations"])
        let name = try metadata.requiredString("name")
        guard let spec = try root.object("spec") else { throw VireoError(.invalidArgument, "spec: is required") }
        return (kind, name, spec)
    }

    /// The document, or nil for the OpenSLO documents SLOs name (kept as parts of them).
    static func parseDocument(
        _ header: (kind: String, name: String, spec: FieldReader), library: inout OpenSLOLibrary
    ) throws(VireoError) -> ManifestDocument? {
        let (kind, name, spec) = header
        switch kind {
        case "VirtualMachine":
            return .virtualMachine(try VMSpecValidation.fromManifest(name: name, nameField: "metadata.name", spec: spec))
        case "Application":
            return .application(try ApplicationValidation.fromManifest(name: name, spec: spec))
        case "SLO":
            return .slo(try OpenSLODocument.parse(name: name, spec: spec, library: &library))
        case "SLI", "DataSource", "AlertPolicy", "AlertCondition", "AlertNotificationTarget":
            return nil
        case "Service":
            try ResourceName.validate(name, field: "metadata.name")
            try spec.rejectUnknown(allowed: ["description"])
            _ = try spec.string("description")
            return .service(name)
        case "Context":
            return .context(try ContextValidation.fromManifest(name: name, nameField: "metadata.name", spec: spec))
        default:
            throw VireoError.invalid(
                field: "kind", value: "'\(kind)'", "unknown kind; expected one of: \(kinds.joined(separator: ", "))")
        }
    }

    /// Loads every YAML document of `text` as plain values. JSON is YAML, so it works for both.
    public static func loadYAMLDocuments(_ text: String) throws(VireoError) -> [JSONValue] {
        do {
            // The parser, not `compose_all`, so a syntax error in any document is reported
            // instead of silently ending the sequence.
            let parser = try Parser(yaml: text)
            var values: [JSONValue] = []
            while let node = try parser.nextRoot() {
                guard values.count < maxDocuments else {
                    throw VireoError(.invalidArgument, "manifest: more than \(maxDocuments) documents")
                }
                values.append(try convert(node, path: "", depth: 0))
            }
            return values
        } catch let error as VireoError {
            throw error
        } catch {
            throw VireoError(.invalidArgument, "manifest: not valid YAML: \(describe(error))")
        }
    }

    private static func describe(_ error: any Error) -> String {
        String(describing: error).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: " ")
    }

    private static func convert(_ node: Node, path: String, depth: Int) throws -> JSONValue {
        guard depth < maxDepth else {
            throw VireoError(.invalidArgument, "\(path.isEmpty ? "manifest" : path): nested too deeply")
        }
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain {
                if node.null != nil { return .null }
                if let b = node.bool { return .bool(b) }
                if let i = node.int { return .number(Double(i)) }
                if let d = node.float, d.isFinite { return .number(d) }
            }
            return .string(scalar.string)
        case .sequence(let sequence):
            return .array(
                try sequence.enumerated().map { try convert($1, path: "\(path)[\($0)]", depth: depth + 1) })
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, value) in mapping {
                guard case .scalar(let k) = key else {
                    throw VireoError(.invalidArgument, "\(path.isEmpty ? "manifest" : path): keys must be strings")
                }
                let childPath = path.isEmpty ? k.string : "\(path).\(k.string)"
                guard object[k.string] == nil else {
                    throw VireoError(.invalidArgument, "\(childPath): appears twice")
                }
                object[k.string] = try convert(value, path: childPath, depth: depth + 1)
            }
            return .object(object)
        case .alias:
            throw VireoError(.invalidArgument, "\(path.isEmpty ? "manifest" : path): YAML aliases are not supported")
        }
    }
}
