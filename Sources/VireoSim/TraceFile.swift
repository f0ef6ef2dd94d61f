import CompressNIO
import Foundation
import NIOCore
import VireoModel

/// Loads utilisation traces from disk: plain CSV, or gzip-compressed CSV (`.gz`).
public enum TraceFile {
    public static func load(_ path: String, sampleSeconds: Double = 300) throws -> UtilisationTrace {
        guard FileManager.default.fileExists(atPath: path) else {
            throw VireoError(.invalidArgument, "--trace: file '\(path)' does not exist")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VireoError(.invalidArgument, "--trace: file '\(path)' cannot be read")
        }
        let bytes = path.hasSuffix(".gz") ? try gunzip(data, path: path) : [UInt8](data)
        return try TraceParser.parse(bytes, file: (path as NSString).lastPathComponent, sampleSeconds: sampleSeconds)
    }

    /// A trace is at most a few MiB; 1 GiB of output means the file is not one.
    static func gunzip(_ data: Data, path: String) throws -> [UInt8] {
        var input = ByteBuffer(bytes: data)
        do {
            let output = try input.decompress(with: .gzip(), maxSize: 1 << 30)
            return Array(output.readableBytesView)
        } catch {
            throw VireoError(.invalidArgument, "--trace: '\(path)' is not valid gzip: \(error)")
        }
    }
}
