//! The dashboard at `/`: one page and its assets, compiled into the
//! binary (no CDN). The page is a client of the public API only:
//!
//! ```text
//!  #/             jobs (GET /api/jobs, each second), views (GET /api/views), a SQL box (POST /api/sql)
//!  #/jobs/<id>    the dataflow graph and per-operator charts (GET /api/jobs/<id>, each second)
//!  #/views/<v>    the view as a table and a chart (GET /api/views/<v>/subscribe, SSE)
//! ```
//!
//! The assets hold no data, so they are served without the bearer token;
//! with `--auth-token` the page asks for it once and sends it with every
//! API request (it reads SSE through `fetch`, which can carry the header).
//! uPlot (MIT, `vendor/uPlot.LICENSE`) is vendored from npm, version 1.6.32.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// An embedded file: its path under `/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("dashboard/index.html"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/app.js"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/app.css"),
    },
    Asset {
        path: "/assets/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "/assets/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/vendor/uPlot.min.css"),
    },
];

/// The dashboard's routes, one per asset.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let (content_type, body) = (asset.content_type, asset.body);
        router.route(
            asset.path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    body,
                )
                    .into_response()
            }),
        )
    })
}
