import VireoModel

/// Reads utilisation CSV text.
///
/// Two layouts, told apart by the first line:
/// - PlanetLab (CloudSim's workload): no header; `vm_name,v1,...,vN` with integer percents.
/// - Fleet CSV: a header `vm,mips,memory_mb,u1,u2,...`, then `name,MIPS,MB,u1,u2,...` with
///   percents that may have decimals. Lines starting with `#` and blank lines are skipped.
///
/// Every row must have the same number of samples and every value must be a number in
/// 0...100; otherwise the error names `file:line`, the column and the value.
public enum TraceParser {
    public static func parse(_ bytes: [UInt8], file: String, sampleSeconds: Double = 300) throws(VireoError)
        -> UtilisationTrace
    {
        var names: [String] = []
        var samples: [UInt16] = []
        var mips: [Double] = []
        var memory: [Double] = []
        var samplesPerVM = -1
        var fleetLayout: Bool?
        var seen = Set<String>()
        var lineNumber = 0
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 10 { end += 1 }
            lineNumber += 1
            var lineEnd = end
            if lineEnd > start && bytes[lineEnd - 1] == 13 { lineEnd -= 1 }
            defer { start = end + 1 }
            if lineEnd == start || bytes[start] == 35 { continue }  // blank or '#'
            let fields = bytes[start..<lineEnd].split(separator: 44, omittingEmptySubsequences: false)
            func fail(_ message: String) -> VireoError {
                VireoError(.invalidArgument, "\(file):\(lineNumber): \(message)")
            }
            if fleetLayout == nil {
                let header = fields.prefix(3).map { String(decoding: $0, as: UTF8.self).lowercased() }
                fleetLayout = header == ["vm", "mips", "memory_mb"]
                if fleetLayout == true { continue }
            }
            let fleet = fleetLayout == true
            let leading = fleet ? 3 : 1
            guard fields.count > leading else {
                throw fail(
                    "expected a VM name and utilisation samples, got '\(String(decoding: bytes[start..<lineEnd].prefix(80), as: UTF8.self))'"
                )
            }
            let name = String(decoding: fields[0], as: UTF8.self)
            guard !name.isEmpty else { throw fail("empty VM name in column 1") }
            guard seen.insert(name).inserted else { throw fail("VM name '\(name)' appears twice") }
            let count = fields.count - leading
            if samplesPerVM < 0 {
                samplesPerVM = count
            } else if count != samplesPerVM {
                throw fail("VM '\(name)' has \(count) samples, earlier rows have \(samplesPerVM)")
            }
            if fleet {
                for (column, target) in [(1, "mips"), (2, "memory_mb")] {
                    let text = String(decoding: fields[column], as: UTF8.self)
                    guard let value = Double(text), value > 0, value.isFinite else {
                        throw fail("column \(column + 1) (\(target)) value '\(text)' is not a positive number")
                    }
                    if column == 1 { mips.append(value) } else { memory.append(value) }
                }
            }
            names.append(name)
            for index in leading..<fields.count {
                guard let value = percent(fields[index], decimals: fleet) else {
                    let text = String(decoding: fields[index].prefix(40), as: UTF8.self)
                    throw fail("column \(index + 1) value '\(text)' is not \(fleet ? "a" : "an integer") percent in 0...100")
                }
                samples.append(value)
            }
        }
        guard !names.isEmpty else { throw VireoError(.invalidArgument, "\(file): no VM rows") }
        return UtilisationTrace(
            source: file, vmNames: names, samplesPerVM: samplesPerVM, samples: samples, sampleSeconds: sampleSeconds,
            vmMIPS: fleetLayout == true ? mips : nil, vmMemoryMB: fleetLayout == true ? memory : nil)
    }

    /// A percent field as hundredths of a percent; nil unless it is a number in 0...100.
    static func percent(_ field: ArraySlice<UInt8>, decimals: Bool) -> UInt16? {
        guard !field.isEmpty else { return nil }
        var whole = 0
        var index = field.startIndex
        while index < field.endIndex, field[index] >= 48, field[index] <= 57 {
            whole = whole * 10 + Int(field[index] - 48)
            if whole > 100 { return nil }
            index += 1
        }
        if index == field.endIndex { return index == field.startIndex ? nil : UInt16(whole * 100) }
        guard decimals, let value = Double(String(decoding: field, as: UTF8.self)), value >= 0, value <= 100 else {
            return nil
        }
        return UInt16((value * 100).rounded())
    }
}
