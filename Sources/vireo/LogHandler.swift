import Foundation
import Logging

/// Writes log lines to standard error: `2026-11-25T06:03:34Z info vireo: message key=value`.
///
/// Unlike `StreamLogHandler`, which re-renders all metadata each time one key is set, this one
/// renders only when a line is actually written — the HTTP server sets a request ID on every
/// request, and most requests log nothing.
struct StandardErrorLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let extra = event.metadata { all.merge(extra) { $1 } }
        var line = "\(Date().formatted(.iso8601)) \(event.level) \(label): \(event.message)"
        for (key, value) in all.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(value)" }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

extension LoggingSystem {
    static func bootstrapStandardError() {
        bootstrap({ label, provider in StandardErrorLogHandler(label: label, metadataProvider: provider) }, metadataProvider: nil)
    }
}
