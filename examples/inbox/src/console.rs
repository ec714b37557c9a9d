//! The web console: plain HTML, CSS and JavaScript modules, embedded in the binary
//! (`include_bytes!`), served at `/console/` with no build step.
//!
//! The page signs in with the API's bearer token (kept in the tab's `sessionStorage` only) and
//! talks to `/api/v1` like any other client: every request carries `Authorization: Bearer`.
//! The event stream is read with `fetch` (not `EventSource`, which cannot send that header):
//! the token never appears in a URL, and the page resumes with `Last-Event-ID` after a drop.
//!
//! The files are served with a strict Content-Security-Policy (same origin only, no inline
//! script) and `Cache-Control: no-cache`, so that a new binary's console is loaded at once.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The console's files: (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../console/index.html")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../console/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../console/api.js")),
    ("events.js", "text/javascript; charset=utf-8", include_bytes!("../console/events.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_bytes!("../console/pages.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_bytes!("../console/dom.js")),
    (
        "vendor/qrcode.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/vendor/qrcode.mjs"),
    ),
    (
        "vendor/LICENSE-qrcode-generator",
        "text/plain; charset=utf-8",
        include_bytes!("../console/vendor/LICENSE-qrcode-generator"),
    ),
];

/// What the console's files may do: load from this origin only, no inline script; the QR
/// code is drawn into a `data:` image.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// The console's routes: `/` and `/console` lead to `/console/`, where `index.html` is; the
/// other files beside it. Merged into the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(|| async { file("index.html") }))
        .route("/console/{*path}", get(|Path(path): Path<String>| async move { file(&path) }))
}

/// One embedded file, or 404.
fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file in the console").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let names: Vec<&str> = FILES.iter().map(|(n, _, _)| *n).collect();
        for (name, _, bytes) in FILES.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            let text = std::str::from_utf8(bytes).expect("utf-8");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split('\'').nth(1) else { continue };
                let target = from.trim_start_matches("./");
                assert!(names.contains(&target), "{name} imports {from}, which is not served");
            }
        }
    }
}
