//! Live results: a view's rows, then every change, to a subscriber over
//! Server-Sent Events (`GET /api/views/{name}/subscribe`) or WebSocket
//! (`GET /ws?view=name`), with the same messages:
//!
//! - `change`, id `<run>-<n>`, data `{"op": "+I", "row": {...}}`: the
//!   snapshot's rows come as `+I`, then `+I`/`-U`/`+U`/`-D` as each
//!   checkpoint of the view's job completes.
//! - `reset`: the view went back to a checkpoint (its job was restored); a
//!   fresh snapshot follows.
//! - `close`, data `{"reason": ...}`: the client fell more than
//!   [`SUBSCRIBER_BUFFER`] changes behind and is disconnected; the job
//!   never waits for a client.
//! - A client reconnecting with the last id it got (SSE's `Last-Event-ID`
//!   header, WebSocket's `last_event_id` parameter) resumes after that
//!   change if it is still retained, else gets a fresh snapshot.
//!
//! Over SSE a message is an event with that name, id and data; over
//! WebSocket it is a text frame `{"event": ..., "id": ..., "data": ...}`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};

use super::App;
use super::api::ApiError;
use super::views::{Change, SUBSCRIBER_BUFFER, View, json_rows};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::OperatorError;

/// One message to a subscriber.
pub(crate) struct Message {
    pub event: &'static str,
    pub id: Option<String>,
    pub data: Value,
}

/// Snapshot rows turned into JSON messages at a time.
const SNAPSHOT_CHUNK: usize = 256;

/// One subscriber's stream.
pub(crate) struct Subscription {
    view: Arc<View>,
    /// Changes to send before the live ones (a replay, or the snapshot's
    /// next rows).
    queued: VecDeque<Change>,
    /// Snapshot rows not yet queued, from the first, and their number.
    snapshot: Option<(RecordBatch, u64)>,
    receiver: broadcast::Receiver<Change>,
    ended: bool,
}

/// A subscription to view `name` after the change of id `last`.
fn open(app: &App, name: &str, last: Option<&str>) -> Result<Subscription, ApiError> {
    let view = app.views.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no materialized view '{name}'"),
        )
    })?;
    let last = last.and_then(|id| view.parse_event_id(id));
    Subscription::of(view, last).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// `GET /api/views/{name}/subscribe`: Server-Sent Events.
pub(crate) async fn subscribe(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let subscription = match open(&app, &name, last) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let stream = futures::stream::unfold(subscription, |mut s| async move {
        let m = s.next().await?;
        let mut event = Event::default().event(m.event).data(m.data.to_string());
        if let Some(id) = m.id {
            event = event.id(id);
        }
        Some((Ok::<_, Infallible>(event), s))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /api/jobs/{id}/output`: a materialized view's job streams its
/// view, as `/api/views/{name}/subscribe` does. Other jobs' rows go to
/// their sinks, where they are read.
pub(crate) async fn job_output(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let record = app.store().jobs().get(&id).cloned();
    match record.map(|r| r.view) {
        None => {
            ApiError::new(StatusCode::NOT_FOUND, format!("there is no job '{id}'")).into_response()
        }
        Some(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "job '{id}' writes its rows to its sink, where they are read; \
                 a materialized view's job streams its output here"
            ),
        )
        .into_response(),
        Some(Some(view)) => subscribe(State(app), Path(view), headers).await,
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct WsParams {
    view: String,
    last_event_id: Option<String>,
}

/// `GET /ws?view=name[&last_event_id=id]`: the same messages over a
/// WebSocket.
pub(crate) async fn websocket(
    State(app): State<Arc<App>>,
    Query(params): Query<WsParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let subscription = match open(&app, &params.view, params.last_event_id.as_deref()) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    upgrade.on_upgrade(move |socket| send_all(socket, subscription))
}

async fn send_all(mut socket: WebSocket, mut subscription: Subscription) {
    while let Some(m) = subscription.next().await {
        let text = json!({"event": m.event, "id": m.id, "data": m.data}).to_string();
        if socket.send(ws::Message::Text(text.into())).await.is_err() {
            return; // the client went away
        }
    }
    let _ = socket.send(ws::Message::Close(None)).await;
}

impl Subscription {
    /// A subscription to `view` after change `last`: the changes after it
    /// if they are retained, else a snapshot; then the live ones.
    pub(crate) fn of(view: Arc<View>, last: Option<u64>) -> Result<Self, OperatorError> {
        let catchup = view.subscribe(last)?;
        let mut subscription = Subscription {
            view,
            queued: VecDeque::new(),
            snapshot: None,
            receiver: catchup.receiver,
            ended: false,
        };
        subscription.catch_up(catchup.replay, catchup.snapshot, catchup.seq);
        Ok(subscription)
    }

    fn catch_up(&mut self, replay: Vec<Change>, snapshot: Option<RecordBatch>, seq: u64) {
        self.queued = replay.into();
        self.snapshot = snapshot.map(|rows| (rows, seq));
    }

    /// The next change to send before the live ones, if any: the snapshot
    /// turns its next rows into JSON when the queue runs out.
    fn queued(&mut self) -> Result<Option<Change>, OperatorError> {
        if self.queued.is_empty()
            && let Some((rows, seq)) = self.snapshot.take()
        {
            let n = rows.num_rows().min(SNAPSHOT_CHUNK);
            for row in json_rows(&rows.slice(0, n))? {
                self.queued.push_back(Change::Row {
                    seq,
                    op: "+I",
                    row: Arc::new(row),
                });
            }
            if n < rows.num_rows() {
                self.snapshot = Some((rows.slice(n, rows.num_rows() - n), seq));
            }
        }
        Ok(self.queued.pop_front())
    }

    /// The next event to send; `None` ends the stream.
    pub(crate) async fn next(&mut self) -> Option<Message> {
        if self.ended {
            return None;
        }
        let queued = match self.queued() {
            Ok(queued) => queued,
            Err(e) => return Some(self.close(&format!("the view cannot be read: {e}"))),
        };
        let change = match queued {
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
                Ok(catchup) => {
                    self.receiver = catchup.receiver;
                    self.catch_up(catchup.replay, catchup.snapshot, catchup.seq);
                    Message {
                        event: "reset",
                        id: Some(self.view.event_id(catchup.seq)),
                        data: json!({}),
                    }
                }
                Err(e) => self.close(&format!("the view cannot be read: {e}")),
            });
        }
        Some(self.event(&change))
    }

    fn event(&self, change: &Change) -> Message {
        match change {
            Change::Row { seq, op, row } => Message {
                event: "change",
                id: Some(self.view.event_id(*seq)),
                data: json!({"op": op, "row": row.as_ref()}),
            },
            Change::Reset { seq } => Message {
                event: "reset",
                id: Some(self.view.event_id(*seq)),
                data: json!({}),
            },
        }
    }

    fn close(&mut self, reason: &str) -> Message {
        self.ended = true;
        Message {
            event: "close",
            id: None,
            data: json!({ "reason": reason }),
        }
    }
}
