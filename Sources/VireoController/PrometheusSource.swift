import AsyncHTTPClient
import Foundation
import NIOCore
import VireoModel
import VireoTelemetry

/// The controller's client for the servers it calls (Prometheus sources, alert receivers): it
/// gives up on a refused connection at once (a stopped server is an answer, not something to
/// retry until the timeout) and follows no redirect.
public let outboundHTTP: HTTPClient = {
    var configuration = HTTPClient.Configuration()
    configuration.redirectConfiguration = .disallow
    configuration.connectionPool.retryConnectionEstablishment = false
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}()

/// Asks a Prometheus server instant queries through its HTTP API (`POST /api/v1/query`).
public struct PrometheusQueryClient: Sendable {
    let http: HTTPClient

    public init(http: HTTPClient = outboundHTTP) { self.http = http }

    /// The values `query` gives at `time` (milliseconds since the epoch): one per series of a
    /// vector, or the one number of a scalar. Fails with Prometheus's own message when it refuses
    /// the query, and with what went wrong when it cannot be asked.
    public func values(of query: String, at time: Int64, from server: PrometheusServer) async throws(SourceError) -> [Double] {
        let base = server.url.hasSuffix("/") ? String(server.url.dropLast()) : server.url
        var request = HTTPClientRequest(url: base + "/api/v1/query")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        let form = "query=\(Self.formEncoded(query))&time=\(String(format: "%.3f", Double(time) / 1000))"
        request.body = .bytes(ByteBuffer(string: form))
        let body: ByteBuffer
        let status: UInt
        do {
            let response = try await http.execute(request, timeout: .milliseconds(Int64(server.timeoutSeconds * 1000)))
            status = response.status.code
            body = try await response.body.collect(upTo: 16 << 20)
        } catch {
            throw SourceError("cannot ask Prometheus at \(server.url): \(error)")
        }
        let decoded: QueryResponse
        do {
            decoded = try JSONDecoder().decode(QueryResponse.self, from: Data(body.readableBytesView))
        } catch {
            throw SourceError("Prometheus at \(server.url) answered HTTP \(status) with no query result")
        }
        guard decoded.status == "success", let data = decoded.data else {
            throw SourceError(
                "Prometheus at \(server.url) refused \(query): \(decoded.errorType ?? "error"): \(decoded.error ?? "HTTP \(status)")"
            )
        }
        switch data.result {
        case .scalar(let point): return [point.value]
        case .vector(let series): return series.map(\.value.value)
        case .other(let type):
            throw SourceError("\(query) gives a \(type), not a number or an instant vector")
        }
    }

    /// `text` as a form value: everything but unreserved characters percent-encoded (a `+`
    /// left as it is would be read as a space).
    static func formEncoded(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    struct QueryResponse: Decodable {
        var status: String
        var data: QueryData?
        var errorType: String?
        var error: String?
    }

    struct QueryData: Decodable {
        var result: Result

        enum CodingKeys: String, CodingKey { case resultType, result }

        enum Result {
            case scalar(Point)
            case vector([Series])
            case other(String)
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            let type = try container.decode(String.self, forKey: .resultType)
            switch type {
            case "scalar": result = .scalar(try container.decode(Point.self, forKey: .result))
            case "vector": result = .vector(try container.decode([Series].self, forKey: .result))
            default: result = .other(type)
            }
        }
    }

    struct Series: Decodable {
        var value: Point
    }

    /// `[time, "value"]`: the value is a string so that NaN and ±Inf survive JSON.
    struct Point: Decodable {
        var value: Double

        init(from decoder: any Decoder) throws {
            var container = try decoder.unkeyedContainer()
            _ = try container.decode(Double.self)
            let text = try container.decode(String.self)
            guard let value = Double(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text)' is not a number")
            }
            self.value = value
        }
    }
}

extension Controller {
    /// Asks the Prometheus sources about every window that is due, each application on its own
    /// (a slow or stopped server holds back only its applications), its objectives at once; then
    /// judges those windows and publishes the changes. An application still being asked when the
    /// next tick comes is left to finish.
    func askSources() async {
        let due = await telemetry.dueQueries(now: Self.milliseconds(now()))
        let client = prometheus
        for (app, queries) in Dictionary(grouping: due, by: \.app) where sourceRounds[app] == nil {
            sourceRounds[app] = Task {
                let answers = await withTaskGroup(of: SourceAnswer.self) { group in
                    for query in queries { group.addTask { await Self.ask(client, query) } }
                    return await group.reduce(into: []) { $0.append($1) }
                }
                let time = self.now()
                self.publish(
                    await self.telemetry.judge(answers, now: Self.milliseconds(time)), at: time)
                self.sourceRounds[app] = nil
            }
        }
    }

    /// Returns when the questions to sources under way have been answered and judged.
    func sourcesAnswered() async {
        for round in sourceRounds.values { await round.value }
    }

    private static func ask(_ client: PrometheusQueryClient, _ query: SourceQuery) async -> SourceAnswer {
        var windows: [(end: Int64, values: [Double])] = []
        for end in query.ends {
            do {
                windows.append((end, try await client.values(of: query.query, at: end, from: query.server)))
            } catch {
                // The windows answered so far are judged; the rest are asked again.
                return SourceAnswer(query, windows.isEmpty ? .failure(error) : .success(windows))
            }
        }
        return SourceAnswer(query, .success(windows))
    }
}
