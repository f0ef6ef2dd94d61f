/// The OpenAPI 3.1 description of the HTTP API, served at `/openapi.json`.
///
/// Hand-written in `Embedded/openapi.json` (compiled in by the EmbedFiles plugin), and kept honest
/// by `OpenAPITests`: every route the server has is documented there and every response the tests
/// see matches its schema (no undocumented or missing properties).
public enum OpenAPIDocument {
    /// The document itself, from `Embedded/openapi.json`.
    public static let json = Embedded.openapiJson
}
