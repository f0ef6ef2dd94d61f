import Foundation

/// The per-interval series of a run as CSV and as an SVG line chart.
public enum SeriesOutput {
    /// `time_s,hour,active_hosts,overloaded_hosts,energy_kwh,migrations`, one line per interval.
    public static func csv(_ series: [IntervalSample]) -> String {
        var text = "time_s,hour,active_hosts,overloaded_hosts,energy_kwh,migrations\n"
        for sample in series {
            text += String(
                format: "%.1f,%.3f,%d,%d,%.6f,%d\n", sample.time, sample.time / 3600, sample.activeHosts,
                sample.overloadedHosts, sample.energyKWh, sample.migrations)
        }
        return text
    }

    /// Three stacked panels sharing the time axis (hours): hosts (active and overloaded),
    /// migrations started, and energy per interval.
    public static func svg(_ series: [IntervalSample], title: String) -> String {
        let width = 900.0, panelHeight = 170.0, left = 70.0, right = 30.0, top = 60.0, gap = 40.0
        let plotWidth = width - left - right
        let height = top + 3 * panelHeight + 2 * gap + 50
        let hours = series.map { $0.time / 3600 }
        let maxHour = max(1, (hours.last ?? 24).rounded(.up))
        func x(_ hour: Double) -> Double { left + hour / maxHour * plotWidth }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(Int(width / 2))" y="28" text-anchor="middle" font-size="16" font-weight="bold">\(escape(title))</text>

            """
        struct Line {
            var label: String
            var color: String
            var values: [Double]
        }
        let panels: [(String, [Line])] = [
            (
                "Hosts",
                [
                    Line(label: "active hosts", color: "#1f77b4", values: series.map { Double($0.activeHosts) }),
                    Line(label: "overloaded hosts", color: "#d62728", values: series.map { Double($0.overloadedHosts) }),
                ]
            ),
            ("Migrations started", [Line(label: "migrations", color: "#ff7f0e", values: series.map { Double($0.migrations) })]),
            ("Energy per interval (kWh)", [Line(label: "energy", color: "#2ca02c", values: series.map(\.energyKWh))]),
        ]
        for (index, (name, lines)) in panels.enumerated() {
            let y0 = top + Double(index) * (panelHeight + gap)
            let maxValue = niceCeiling(lines.flatMap(\.values).max() ?? 1)
            func y(_ value: Double) -> Double { y0 + panelHeight - value / maxValue * panelHeight }
            svg += "<text x=\"\(Int(left))\" y=\"\(Int(y0 - 8))\" font-weight=\"bold\">\(escape(name))</text>\n"
            for tick in 0...4 {
                let value = maxValue * Double(tick) / 4
                let ty = y(value)
                svg += "<line x1=\"\(left)\" y1=\"\(ty)\" x2=\"\(left + plotWidth)\" y2=\"\(ty)\" stroke=\"#e5e5e5\"/>\n"
                svg += "<text x=\"\(left - 6)\" y=\"\(ty + 4)\" text-anchor=\"end\" fill=\"#555\">\(label(value))</text>\n"
            }
            for hour in stride(from: 0.0, through: maxHour, by: maxHour > 12 ? 3 : 1) {
                let tx = x(hour)
                svg +=
                    "<line x1=\"\(tx)\" y1=\"\(y0 + panelHeight)\" x2=\"\(tx)\" y2=\"\(y0 + panelHeight + 4)\" stroke=\"#333\"/>\n"
                svg +=
                    "<text x=\"\(tx)\" y=\"\(y0 + panelHeight + 17)\" text-anchor=\"middle\" fill=\"#555\">\(Int(hour))</text>\n"
            }
            svg +=
                "<rect x=\"\(left)\" y=\"\(y0)\" width=\"\(plotWidth)\" height=\"\(panelHeight)\" fill=\"none\" stroke=\"#333\"/>\n"
            for line in lines where !line.values.isEmpty {
                let points = zip(hours, line.values).map { String(format: "%.1f,%.1f", x($0), y($1)) }.joined(separator: " ")
                svg += "<polyline fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"1.6\" points=\"\(points)\"/>\n"
            }
            // Legend, top right of the panel.
            var lx = left + plotWidth - 10
            for line in lines.reversed() {
                let textWidth = Double(line.label.count) * 6.5
                lx -= textWidth + 26
                svg +=
                    "<line x1=\"\(lx)\" y1=\"\(y0 - 12)\" x2=\"\(lx + 18)\" y2=\"\(y0 - 12)\" stroke=\"\(line.color)\" stroke-width=\"3\"/>\n"
                svg += "<text x=\"\(lx + 22)\" y=\"\(y0 - 8)\">\(escape(line.label))</text>\n"
            }
        }
        svg += "<text x=\"\(Int(left + plotWidth / 2))\" y=\"\(Int(height - 12))\" text-anchor=\"middle\">time (hours)</text>\n"
        svg += "</svg>\n"
        return svg
    }

    /// 1, 2, 2.5 or 5 times a power of ten, at least `value`.
    static func niceCeiling(_ value: Double) -> Double {
        guard value > 0 else { return 1 }
        let magnitude = pow(10, (log10(value)).rounded(.down))
        for step in [1.0, 2, 2.5, 5, 10] where step * magnitude >= value { return step * magnitude }
        return 10 * magnitude
    }

    static func label(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: value < 1 ? "%.2f" : "%.1f", value)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
