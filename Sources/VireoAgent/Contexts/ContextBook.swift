import Foundation
import VireoAPI
import VireoDriver
import VireoModel

/// What an agent keeps about its desktop contexts: `<directory>/contexts.json`, replaced
/// atomically (write to a temporary file, then rename) after every change, so a `kill -9` at any
/// moment leaves the last complete version.
///
/// Each operation that needs several steps (open, reset, keep, close) is written down as
/// `pending` before its first step and cleared after its last; the next agent start finishes or
/// undoes what a crash cut short (`ContextManager.repair`).
struct ContextBook: Codable, Equatable {
    var contexts: [ContextRecord] = []
    /// The last answers to the controller's commands, so a command sent again after an agent
    /// restart is answered, not carried out twice.
    var results: [ContextCommandResult] = []

    static let maxResults = 100

    static func load(from path: String) throws -> ContextBook {
        guard FileManager.default.fileExists(atPath: path) else { return ContextBook() }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(ContextBook.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw VireoError(.internal, "cannot read the contexts of this host from \(path): \(error)")
        }
    }

    func save(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    func index(of name: String) -> Int? { contexts.firstIndex { !$0.pooled && $0.spec.name == name } }
}

/// One context (or one booted disposable waiting in the pool) as its agent keeps it.
struct ContextRecord: Codable, Equatable {
    enum Pending: Codable, Equatable {
        /// Being made: VM created and started, clean state not saved yet.
        case open
        /// Loading the clean state.
        case reset
        /// Saving `tag`, which becomes the clean state once saved.
        case keep(tag: String)
        /// Removing its VM.
        case close
    }

    var spec: ContextSpec
    var vm: VMID
    /// Waiting in the pool to be handed out; `spec.name` is then a placeholder.
    var pooled = false
    /// The snapshot of the VM that is the clean state; nil until saved.
    var cleanTag: String?
    var cleanSince: Date?
    /// The number in the next clean state's tag (`clean-N`).
    var nextTag = 1
    var pending: Pending?
    var resets = 0
    var resetMs: Int?
    var loadMs: Int?
    var openedAt: Date
    var fromPool = false
    /// Why it failed, when it did.
    var failure: String?

    /// The private network its VM is on: its own (isolated), or the named one.
    var privateNetwork: String { ContextManager.privateNetwork(spec.network, vm: vm) }

    var instanceSpec: InstanceSpec {
        InstanceSpec(
            id: vm, name: spec.name, image: spec.image, cpus: spec.cpus, memoryMiB: spec.memoryMiB,
            privateNetwork: privateNetwork, display: spec.display)
    }
}

/// What an agent's context book says of one context, for readers outside the agent (`vireo chaos`
/// checks hosts against it). Read with `ContextBookView.read(from:)`.
public struct ContextBookView: Sendable, Equatable {
    public var name: String
    public var vm: VMID
    /// Waiting in the pool to be handed out; `name` is then a placeholder.
    public var pooled: Bool
    /// The snapshot that is the context's clean state; nil until saved.
    public var cleanTag: String?
    /// The operation a crash left unfinished (`open`, `reset`, `keep`, `close`); nil when none.
    public var pending: String?

    /// The contexts in the book at `path` (`<state-dir>/contexts/contexts.json`); none when there
    /// is no book yet. Throws when the file cannot be read as a book.
    public static func read(from path: String) throws -> [ContextBookView] {
        try ContextBook.load(from: path).contexts.map { record in
            let pending: String? =
                switch record.pending {
                case .open: "open"
                case .reset: "reset"
                case .keep: "keep"
                case .close: "close"
                case nil: nil
                }
            return ContextBookView(
                name: record.spec.name, vm: record.vm, pooled: record.pooled, cleanTag: record.cleanTag, pending: pending)
        }
    }
}
