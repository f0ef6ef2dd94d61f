import Hummingbird
import VireoAPI
import VireoController

extension VireoServer {
    /// `GET /v1/history?since=24h&step=60`: what the cluster recorded over the window, for
    /// replaying it (`ClusterHistory`). Bad parameters are refused naming them.
    func addHistoryRoutes(_ router: Router<VireoRequestContext>) {
        let controller = self.controller
        router.get("/v1/history") { request, _ in
            let parameters = request.uri.queryParameters
            let query = try HistoryQuery(
                since: parameters.get("since"), step: parameters.get("step"),
                recordingStepSeconds: controller.historyStepSeconds)
            return try json(try await controller.history(query))
        }
    }
}
