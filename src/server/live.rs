//! Live results: `GET /api/views/{name}/subscribe` streams a view's rows,
//! then every change, as Server-Sent Events.
//!
//! - `event: change`, `id: <run>-<n>`, `data: {"op": "+I", "row": {...}}`:
//!   the snapshot's rows come as `+I`, then `+I`/`-U`/`+U`/`-D` as each
//!   checkpoint of the view's job completes.
//! - `event: reset`: the view went back to a checkpoint (its job was
//!   restored); a fresh snapshot follows.
//! - `event: close`, `data: {"reason": ...}`: the client fell more than
//!   [`SUBSCRIBER_BUFFER`] changes behind and is disconnected; the job
//!   never waits for a client.
//! - A client reconnecting with `Last-Event-ID` resumes after that change
//!   if it is still retained, else gets a fresh snapshot.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use super::App;
use super::api::ApiError;
use super::views::{Change, SUBSCRIBER_BUFFER, View};

/// One subscriber's stream.
struct Subscription {
    view: Arc<View>,
    /// Changes to send before the live ones (a snapshot or a replay).
    queued: VecDeque<Change>,
    receiver: broadcast::Receiver<Change>,
    ended: bool,
}

pub(crate) async fn subscribe(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(view) = app.views.get(&name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no materialized view '{name}'"),
        )
        .into_response();
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| view.parse_event_id(id));
    let (queued, _, receiver) = match view.subscribe(last) {
        Ok(s) => s,
        Err(e) => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let subscription = Subscription {
        view,
        queued: queued.into(),
        receiver,
        ended: false,
    };
    let stream = futures::stream::unfold(subscription, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

impl Subscription {
    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        let change = match self.queued.pop_front() {
            Some(change) => change,
            None => match self.receiver.recv().await {
                Ok(change) => change,
                Err(RecvError::Lagged(n)) => {
                    return Some(self.close(&format!(
                        "the client fell behind by {n} changes (more than \
                         {SUBSCRIBER_BUFFER}); reconnect for a fresh snapshot"
                    )));
                }
                Err(RecvError::Closed) => return None,
            },
        };
        if let Change::Reset { .. } = change {
            // Start again from the rows as restored.
            return Some(match self.view.subscribe(None) {
                Ok((snapshot, seq, receiver)) => {
                    self.queued = snapshot.into();
                    self.receiver = receiver;
                    Event::default()
                        .event("reset")
                        .id(self.view.event_id(seq))
                        .data("{}")
                }
                Err(e) => self.close(&format!("the view cannot be read: {e}")),
            });
        }
        Some(self.event(&change))
    }

    fn event(&self, change: &Change) -> Event {
        match change {
            Change::Row { seq, op, row } => Event::default()
                .event("change")
                .id(self.view.event_id(*seq))
                .data(json!({"op": op, "row": row.as_ref()}).to_string()),
            Change::Reset { seq } => Event::default()
                .event("reset")
                .id(self.view.event_id(*seq))
                .data("{}"),
        }
    }

    fn close(&mut self, reason: &str) -> Event {
        self.ended = true;
        Event::default()
            .event("close")
            .data(json!({ "reason": reason }).to_string())
    }
}
