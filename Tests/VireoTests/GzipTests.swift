import Foundation
import Subprocess
import Testing

@testable import VireoImage

/// gzip runs in process (compress-nio): what it writes the system's gzip reads, and what it
/// reads may be followed by other bytes, as a kernel payload is inside its bzImage.
@Suite("Gzip")
struct GzipTests {
    let text = Data((0..<20_000).map { "line \($0) of a compressible text\n" }.joined().utf8)

    @Test("compressed bytes round-trip and are deterministic")
    func roundTrip() throws {
        let packed = try Gzip.compress(text)
        #expect(packed.count < text.count / 4)
        #expect(packed.prefix(3).elementsEqual([0x1F, 0x8B, 0x08]))
        #expect(try Gzip.compress(text) == packed)
        #expect(try Gzip.decompress(packed, name: "t") == text)
    }

    @Test("the system's gzip reads what Vireo wrote")
    func systemGzipReads() async throws {
        let path = temporaryDirectory() + "/t.gz"
        try Gzip.compress(text).write(to: URL(fileURLWithPath: path))
        let result = try await Subprocess.run(.name("gzip"), arguments: ["-dc", path], output: .data(limit: 1 << 24))
        #expect(result.terminationStatus.isSuccess)
        #expect(result.standardOutput == text)
    }

    @Test("bytes after the gzip member are ignored; corrupt input names what it was")
    func trailingAndCorrupt() throws {
        let packed = try Gzip.compress(text)
        #expect(try Gzip.decompress(packed + Data(repeating: 0xAB, count: 4096), name: "t") == text)
        var corrupt = packed
        corrupt[corrupt.count / 2] ^= 0xFF
        corrupt[corrupt.count / 2 + 1] ^= 0xFF
        let error = #expect(throws: (any Error).self) { try Gzip.decompress(corrupt, name: "/boot/x") }
        #expect("\(error.map { "\($0)" } ?? "")".contains("/boot/x is not valid gzip"))
    }

    @Test("a gzip kernel payload inside a bzImage is extracted to its ELF file")
    func kernelPayload() async throws {
        let directory = temporaryDirectory()
        let elf = Data([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1]) + text
        // A setup header, the compressed payload, then the bzImage's trailing bytes.
        let bzImage = Data(repeating: 0x90, count: 8192) + (try Gzip.compress(elf)) + Data(repeating: 0, count: 512)
        try bzImage.write(to: URL(fileURLWithPath: directory + "/vmlinuz"))
        try await KernelExtraction.extractELF(from: directory + "/vmlinuz", to: directory + "/vmlinux")
        #expect(FileManager.default.contents(atPath: directory + "/vmlinux") == elf)
    }
}
