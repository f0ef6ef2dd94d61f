import Foundation
import Subprocess
import VireoModel

/// Loads utilisation traces from disk: plain CSV, or gzip-compressed CSV (`.gz`, decompressed
/// by the system's `gzip -dc`).
public enum TraceFile {
    public static func load(_ path: String, sampleSeconds: Double = 300) async throws -> UtilisationTrace {
        guard FileManager.default.fileExists(atPath: path) else {
            throw VireoError(.invalidArgument, "--trace: file '\(path)' does not exist")
        }
        let bytes: [UInt8]
        if path.hasSuffix(".gz") {
            bytes = try await gunzip(path)
        } else {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw VireoError(.invalidArgument, "--trace: file '\(path)' cannot be read")
            }
            bytes = [UInt8](data)
        }
        return try TraceParser.parse(bytes, file: (path as NSString).lastPathComponent, sampleSeconds: sampleSeconds)
    }

    static func gunzip(_ path: String) async throws -> [UInt8] {
        let result = try await Subprocess.run(
            .name("gzip"), arguments: ["-dc", "--", path], output: .bytes(limit: 1 << 31), error: .string(limit: 1 << 16))
        guard case .exited(0) = result.terminationStatus else {
            let detail = result.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
            throw VireoError(.invalidArgument, "--trace: '\(path)' is not valid gzip: \(detail)")
        }
        return result.standardOutput
    }
}
