//! The web client (`ui/`), embedded in the binary so that `serve` alone gives a working chat in a browser.
//! Debug builds read the files from disk, so editing `ui/` needs no rebuild.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../ui/"]
struct Assets;

/// The client never renders HTML from messages; this policy is the second line of defence: scripts,
/// styles and connections from this origin only, no framing.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Serves a file of the client; `/` is `index.html`.
pub async fn asset(uri: Uri) -> Response {
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html",
        path => path,
    };
    match Assets::get(path) {
        Some(file) => (
            [
                (CONTENT_TYPE, file.metadata.mimetype().to_owned()),
                // Revalidated on every load: a new server version is picked up at once.
                (CACHE_CONTROL, "no-cache".to_owned()),
                (CONTENT_SECURITY_POLICY, POLICY.to_owned()),
                (X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                (REFERRER_POLICY, "no-referrer".to_owned()),
            ],
            file.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
