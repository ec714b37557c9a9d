//! The inbox's HTTP interface (axum), on the engine's façade only:
//!
//! - `GET /healthz`: 200, or 503 naming the failed loops; `GET /readyz`: 200 once the store
//!   answers, else 503. Both open.
//! - `GET /metrics`: Prometheus text (`metrics-exporter-prometheus`), open or behind the token.
//! - Under `/api/v1`, behind `Authorization: Bearer <token>`:
//!   - `GET accounts`, `GET accounts/{id}`;
//!   - `GET conversations?status=&account=&limit=&after=` (keyset pages, newest activity first;
//!     `next` is the `after` of the next page);
//!   - `GET conversations/{id}/messages?limit=&after=`; `POST conversations/{id}/messages`
//!     with `{"text": ..., "idempotency_key": ...}` queues a send (202 with its message id);
//!   - `POST conversations/{id}/assignment` with `{"claim": op}`, `{"release": op}` or
//!     `{"transfer": {"from": op, "to": op}}` (409 naming the holder when another operator
//!     has it);
//!   - `GET messages/{id}`, `GET messages/{id}/attachments/{n}` (the bytes, with their type
//!     and name); a send may carry `"attachments": [{"name", "mime_type", "data": base64}]`;
//!   - `GET accounts/{id}/identities?unlinked=true` (the people an account talks to; the
//!     unlinked ones are the new ones), `POST identities/{id}/link` with `{"contact": ...}`
//!     (`null` unlinks), `POST identities/{id}/merge` with `{"merge": <identity id>}`;
//!   - `POST accounts/{id}/history` with `{"thread_key": ..., "limit": ...}` queues a history
//!     sync (202 with its job id; its pages come as `history_synced` events);
//!   - `GET jobs?state=&account=` (the dead letter: `state=discarded`), `GET jobs/{id}`,
//!     `GET jobs/{id}/attempts`,
//!     `POST jobs/{id}/retry` (out of the dead letter);
//!   - `GET workers`;
//!   - `GET events`: server-sent events from the durable feed, each with its position as `id`,
//!     resuming after `Last-Event-ID` (or `?after=`).
//!
//! - `GET /api/v1/openapi.json`: the OpenAPI description of all of it (open; utoipa).
//!
//! Errors are JSON `{"error": "<a sentence saying what to do>"}` with the status that fits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use channel_core::feed::{FeedEvent, FeedPosition};
use channel_core::page::{PageRequest, PageToken};
use channel_core::provider::{LoginError, LoginInput};
use channel_core::reads::{ConversationQuery, JobQuery};
use channel_core::runtime::Runtime;
use channel_core::{
    AccountId, ConversationId, ConversationStatus, Engine, EngineError, JobId, JobState, MessageId,
    OutboundMessage, StoreError, Timestamp,
};
use channel_watchdog::Watchdog;
use futures::Stream;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    engine: Engine,
    runtime: Option<Arc<Runtime>>,
    watchdog: Option<Watchdog>,
    token: Arc<str>,
    metrics: Option<PrometheusHandle>,
    open_metrics: bool,
    stopping: channel_watchdog::CancellationToken,
}

impl ApiState {
    /// The API of `engine`, behind `token`.
    pub fn new(engine: Engine, token: impl Into<Arc<str>>) -> Self {
        Self {
            engine,
            runtime: None,
            watchdog: None,
            token: token.into(),
            metrics: None,
            open_metrics: true,
            stopping: channel_watchdog::CancellationToken::new(),
        }
    }

    /// Cancelled when the server stops: the event streams end then, so that a graceful stop
    /// does not wait for clients that never hang up (they reconnect with `Last-Event-ID`).
    pub fn stopping(&self) -> channel_watchdog::CancellationToken {
        self.stopping.clone()
    }

    /// The runtime that adds, logs in, enables, disables and removes accounts (without it
    /// those routes answer 503).
    pub fn runtime(mut self, runtime: Arc<Runtime>) -> Self {
        self.watchdog = Some(runtime.watchdog().clone());
        self.runtime = Some(runtime);
        self
    }

    /// The watchdog whose health `/healthz` reports.
    pub fn watchdog(mut self, watchdog: Watchdog) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// The Prometheus recorder `/metrics` renders; `open`: without the token.
    pub fn metrics(mut self, handle: PrometheusHandle, open: bool) -> Self {
        self.metrics = Some(handle);
        self.open_metrics = open;
        self
    }
}

/// The OpenAPI description of every route, served at `/api/v1/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "inbox",
        description = "The inbox worker's API. Every route under /api/v1 takes `Authorization: Bearer <token>` (the data directory's api.token). Errors are `{\"error\": \"<what to do>\"}`."
    ),
    paths(
        healthz,
        readyz,
        metrics,
        accounts,
        account,
        add_account,
        remove_account,
        set_enabled,
        login,
        identities,
        link_identity,
        merge_identity,
        history,
        conversations,
        conversation,
        messages,
        assign,
        send,
        message,
        attachment,
        jobs,
        job,
        attempts,
        retry,
        workers,
        events
    )
)]
pub struct ApiDoc;

/// The largest request body: a send with its attachments, base64 in JSON (25 MiB).
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// The router of the whole interface.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/accounts", get(accounts).post(add_account))
        .route("/accounts/{id}", get(account).delete(remove_account))
        .route("/accounts/{id}/login", post(login))
        .route("/accounts/{id}/identities", get(identities))
        .route("/accounts/{id}/history", post(history))
        .route("/identities/{id}/link", post(link_identity))
        .route("/identities/{id}/merge", post(merge_identity))
        .route("/accounts/{id}/enabled", axum::routing::put(set_enabled))
        .route("/conversations", get(conversations))
        .route("/conversations/{id}", get(conversation))
        .route("/conversations/{id}/messages", get(messages).post(send))
        .route("/conversations/{id}/assignment", post(assign))
        .route("/messages/{id}", get(message))
        .route("/messages/{id}/attachments/{index}", get(attachment))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/attempts", get(attempts))
        .route("/jobs/{id}/retry", post(retry))
        .route("/workers", get(workers))
        .route("/events", get(events))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let metrics = if state.open_metrics {
        Router::new().route("/metrics", get(metrics))
    } else {
        Router::new()
            .route("/metrics", get(metrics))
            .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(metrics)
        .merge(crate::console::router())
        .nest("/api/v1", api)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// Binds `addr`, saying which address could not be bound and why.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}; choose another address with --listen"))
}

/// The API token kept in `path`: read, or made (32 random bytes, hex) and written with mode
/// 0600 on the first run. A token file others can read is refused.
pub fn token(path: &std::path::Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{} can be read by others (mode {:o}): `chmod 600` it",
                    path.display(),
                    mode & 0o777
                ));
            }
            let t = t.trim().to_owned();
            if t.len() < 32 {
                return Err(format!(
                    "{} holds no token: delete it to make a new one",
                    path.display()
                ));
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create the API token {}: {e}", path.display()))?;
            file.write_all(token.as_bytes())
                .map_err(|e| format!("cannot write the API token {}: {e}", path.display()))?;
            Ok(token)
        }
        Err(e) => Err(format!("cannot read the API token {}: {e}", path.display())),
    }
}

/// An API error: a status and a sentence.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::UnknownAccount(_)
            | EngineError::UnknownConversation(_)
            | EngineError::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            EngineError::Invalid(_)
            | EngineError::Unsupported { .. }
            | EngineError::Store(StoreError::InvalidInput { .. }) => StatusCode::BAD_REQUEST,
            EngineError::IdempotencyConflict { .. } | EngineError::AssignedElsewhere { .. } => {
                StatusCode::CONFLICT
            }
            EngineError::Store(StoreError::FeedCursorExpired { .. }) => StatusCode::GONE,
            e if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn bad_request(what: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, what.into())
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| bad_request(format!("`{text}` is not a valid {what}")))
}

async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|t| constant_time_eq(t.as_bytes(), state.token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "send the token of this inbox as `Authorization: Bearer <token>` (it is in the data \
             directory's api.token)"
                .to_owned(),
        )
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn openapi() -> Response {
    Json(<ApiDoc as utoipa::OpenApi>::openapi()).into_response()
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "every loop is healthy and the database answers"), (status = 503, description = "names the failed loops, and the database's error while it does not answer")))]
async fn healthz(State(state): State<ApiState>) -> Response {
    let failed: Vec<String> = match &state.watchdog {
        Some(w) => w.status().into_iter().filter(|l| !l.healthy).map(|l| l.name).collect(),
        None => Vec::new(),
    };
    // The database is part of health: while it does not answer, nothing can be stored or
    // sent, whatever the loops say.
    let store = match tokio::time::timeout(
        HEALTH_STORE_TIMEOUT,
        state.engine.accounts(PageRequest::first(1)),
    )
    .await
    {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("the database did not answer within {HEALTH_STORE_TIMEOUT:?}")),
    };
    if failed.is_empty() && store.is_none() {
        return Json(json!({ "status": "ok" })).into_response();
    }
    let mut body = json!({ "status": "failed", "failed_loops": failed });
    if let Some(e) = store {
        body["store"] = json!(e);
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// How long `/healthz` waits for the database.
const HEALTH_STORE_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "the store answers"), (status = 503, description = "the store does not answer")))]
async fn readyz(State(state): State<ApiState>) -> Response {
    match state.engine.accounts(PageRequest::first(1)).await {
        Ok(_) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            let body = json!({ "status": "not ready", "error": e.to_string() });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text")))]
async fn metrics(State(state): State<ApiState>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not recorded by this process").into_response(),
    }
}

/// A query string, refused with a JSON error naming what is wrong.
struct Q<T>(T);

impl<T, S> axum::extract::FromRequestParts<S> for Q<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(e) => {
                Err(bad_request(format!("the query string is not understood: {}", e.body_text())))
            }
        }
    }
}

/// `?limit=&after=`.
#[derive(Debug, Default, Deserialize)]
struct Paging {
    limit: Option<usize>,
    after: Option<String>,
}

impl Paging {
    fn request(&self) -> Result<PageRequest, ApiError> {
        let size = self.limit.unwrap_or(50);
        match &self.after {
            None => Ok(PageRequest::first(size)),
            Some(t) => Ok(PageRequest::after(size, parse::<PageToken>("page token", t)?)),
        }
    }
}

/// A page as JSON: the items and the `after` of the next page.
#[derive(Serialize)]
struct PageJson<T> {
    items: Vec<T>,
    next: Option<String>,
}

impl<T> From<channel_core::page::Page<T>> for PageJson<T> {
    fn from(p: channel_core::page::Page<T>) -> Self {
        Self { items: p.items, next: p.next.map(|t| t.to_string()) }
    }
}

#[utoipa::path(get, path = "/api/v1/accounts", params(("limit" = Option<usize>, Query, description = "page size (50 by default, 500 at most)"), ("after" = Option<String>, Query, description = "the previous page's `next`")), responses((status = 200, description = "a page of accounts, newest first")))]
async fn accounts(
    State(state): State<ApiState>,
    Q(paging): Q<Paging>,
) -> Result<Json<PageJson<channel_core::Account>>, ApiError> {
    Ok(Json(state.engine.accounts(paging.request()?).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}", params(("id" = String, Path, description = "the account's id")), responses((status = 200, description = "the account"), (status = 404, description = "no such account")))]
async fn account(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<channel_core::Account>, ApiError> {
    Ok(Json(state.engine.account(parse::<AccountId>("account id", &id)?).await?))
}

/// The body of a new account: its provider's kind, a name, the provider's configuration.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct NewAccountBody {
    kind: String,
    name: String,
    #[serde(default)]
    config: serde_json::Value,
}

fn runtime_of(state: &ApiState) -> Result<&Arc<Runtime>, ApiError> {
    state.runtime.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process runs no worker: manage accounts through `inbox run`".to_owned(),
        )
    })
}

#[utoipa::path(post, path = "/api/v1/accounts", request_body = NewAccountBody, responses((status = 201, description = "the account, saved; log it in next"), (status = 400, description = "a configuration its provider refuses, naming the field")))]
async fn add_account(
    State(state): State<ApiState>,
    body: Result<Json<NewAccountBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let runtime = runtime_of(&state)?;
    let Json(body) = body.map_err(|e| {
        bad_request(format!(
            "the body must be JSON like {{\"kind\": \"email\", \"name\": ..., \"config\": {{...}}}}: {}",
            e.body_text()
        ))
    })?;
    let kind =
        channel_core::ChannelKind::parse(&body.kind).map_err(|e| bad_request(e.to_string()))?;
    let new = channel_core::NewAccount::new(kind, body.name).with_config(body.config);
    let account = runtime.add_account(new).await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/accounts/{id}", params(("id" = String, Path, description = "the account's id")), responses((status = 204, description = "removed; its messages stay")))]
async fn remove_account(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let runtime = runtime_of(&state)?;
    runtime.remove_account(parse::<AccountId>("account id", &id)?, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct EnabledBody {
    enabled: bool,
}

#[utoipa::path(put, path = "/api/v1/accounts/{id}/enabled", params(("id" = String, Path, description = "the account's id")), request_body = EnabledBody, responses((status = 200, description = "the account")))]
async fn set_enabled(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<EnabledBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<channel_core::Account>, ApiError> {
    let runtime = runtime_of(&state)?;
    let Json(body) = body.map_err(|e| {
        bad_request(format!("send {{\"enabled\": true}} or false: {}", e.body_text()))
    })?;
    let id = parse::<AccountId>("account id", &id)?;
    Ok(Json(runtime.set_account_enabled(id, body.enabled).await?))
}

/// A login step: the flow and what the person entered (secrets: never logged, never kept
/// but by the provider).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct LoginBody {
    flow: String,
    #[serde(default)]
    input: std::collections::BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/login", params(("id" = String, Path, description = "the account's id")), request_body = LoginBody, responses((status = 200, description = "the next step: input to ask for, something to display, or done"), (status = 400, description = "wrong input, asked again"), (status = 409, description = "the account is connected by another worker")))]
async fn login(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let runtime = runtime_of(&state)?;
    let Json(body) = body.map_err(|e| {
        bad_request(format!(
            "the body must be JSON like {{\"flow\": \"password\", \"input\": {{...}}}}: {}",
            e.body_text()
        ))
    })?;
    let account = parse::<AccountId>("account id", &id)?;
    let mut input = LoginInput::none();
    for (field, value) in body.input {
        input = input.with(field, value);
    }
    match runtime.login_step(account, &body.flow, input).await {
        Ok(step) => Ok(Json(step).into_response()),
        Err(e) => {
            let status = match &e {
                LoginError::UnknownFlow { .. } | LoginError::InvalidInput { .. } => {
                    StatusCode::BAD_REQUEST
                }
                LoginError::FloodWait { .. } => StatusCode::TOO_MANY_REQUESTS,
                LoginError::Elsewhere(_) => StatusCode::CONFLICT,
                LoginError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            Err(ApiError(status, e.to_string()))
        }
    }
}

#[derive(Debug, Deserialize)]
struct IdentityFilter {
    #[serde(default)]
    unlinked: bool,
    limit: Option<usize>,
    after: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/identities", params(("id" = String, Path, description = "the account's id"), ("unlinked" = Option<bool>, Query, description = "only the people no contact is linked to"), ("limit" = Option<usize>, Query, description = "page size (50 by default, 500 at most)"), ("after" = Option<String>, Query, description = "the previous page's `next`")), responses((status = 200, description = "a page of identities, newest first")))]
async fn identities(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Q(filter): Q<IdentityFilter>,
) -> Result<Json<PageJson<channel_core::Identity>>, ApiError> {
    let account = parse::<AccountId>("account id", &id)?;
    let paging = Paging { limit: filter.limit, after: filter.after };
    Ok(Json(state.engine.identities(account, filter.unlinked, paging.request()?).await?.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct LinkBody {
    contact: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/identities/{id}/link", params(("id" = String, Path, description = "the identity's id")), request_body = LinkBody, responses((status = 200, description = "the identity")))]
async fn link_identity(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<LinkBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<channel_core::Identity>, ApiError> {
    let identity = parse::<channel_core::IdentityId>("identity id", &id)?;
    let Json(body) = body.map_err(|e| {
        bad_request(format!(
            "send {{\"contact\": \"<your contact id>\"}} or null: {}",
            e.body_text()
        ))
    })?;
    let contact = body.contact.map(channel_core::ContactId::new);
    Ok(Json(state.engine.link_identity(identity, contact).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct MergeBody {
    merge: String,
}

#[utoipa::path(post, path = "/api/v1/identities/{id}/merge", params(("id" = String, Path, description = "the identity's id")), request_body = MergeBody, responses((status = 200, description = "the identity kept")))]
async fn merge_identity(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<MergeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<channel_core::Identity>, ApiError> {
    let keep = parse::<channel_core::IdentityId>("identity id", &id)?;
    let Json(body) = body.map_err(|e| {
        bad_request(format!("send {{\"merge\": \"<identity id>\"}}: {}", e.body_text()))
    })?;
    let merge = parse::<channel_core::IdentityId>("identity id", &body.merge)?;
    Ok(Json(state.engine.merge_identities(keep, merge).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
struct HistoryBody {
    thread_key: Option<String>,
    #[serde(default)]
    limit: usize,
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/history", params(("id" = String, Path, description = "the account's id")), request_body = HistoryBody, responses((status = 202, description = "the history job's id")))]
async fn history(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Option<Json<HistoryBody>>,
) -> Result<Response, ApiError> {
    let account = parse::<AccountId>("account id", &id)?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let request = channel_core::HistoryRequest {
        thread_key: body.thread_key,
        limit: body.limit,
        before: None,
        after: None,
    };
    let job = state.engine.request_history(account, request).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

#[derive(Debug, Deserialize)]
struct ConversationFilter {
    status: Option<String>,
    account: Option<String>,
    assignee: Option<String>,
    #[serde(default)]
    unassigned: bool,
    #[serde(default)]
    unlinked: bool,
    limit: Option<usize>,
    after: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/conversations", params(("status" = Option<String>, Query, description = "open, idle, closed or expired"), ("account" = Option<String>, Query, description = "an account's id"), ("assignee" = Option<String>, Query, description = "only those this operator claimed"), ("unassigned" = Option<bool>, Query, description = "only those no operator claimed"), ("unlinked" = Option<bool>, Query, description = "only those whose person is linked to no contact yet (the new ones)"), ("limit" = Option<usize>, Query, description = "page size (50 by default, 500 at most)"), ("after" = Option<String>, Query, description = "the previous page's `next`")), responses((status = 200, description = "a page of conversations, newest activity first")))]
async fn conversations(
    State(state): State<ApiState>,
    Q(filter): Q<ConversationFilter>,
) -> Result<Json<PageJson<channel_core::Conversation>>, ApiError> {
    let mut query = ConversationQuery::all();
    if let Some(s) = &filter.status {
        query = query.status(parse::<ConversationStatus>("conversation status", s)?);
    }
    if let Some(a) = &filter.account {
        query = query.account(parse::<AccountId>("account id", a)?);
    }
    match (filter.assignee.as_deref().map(str::trim), filter.unassigned) {
        (Some(a), true) if !a.is_empty() => {
            return Err(bad_request(format!(
                "ask for `assignee={a}` or `unassigned=true`, not both"
            )));
        }
        (Some(""), _) | (None, true) | (Some(_), true) => query = query.unassigned(),
        (Some(a), false) => query = query.assignee(a),
        (None, false) => {}
    }
    if filter.unlinked {
        query = query.unlinked();
    }
    let paging = Paging { limit: filter.limit, after: filter.after };
    Ok(Json(state.engine.conversations(&query, paging.request()?).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}", params(("id" = String, Path, description = "the conversation's id")), responses((status = 200, description = "the conversation"), (status = 404, description = "no such conversation")))]
async fn conversation(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<channel_core::Conversation>, ApiError> {
    Ok(Json(state.engine.conversation(parse::<ConversationId>("conversation id", &id)?).await?))
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", params(("id" = String, Path, description = "the conversation's id"), ("limit" = Option<usize>, Query, description = "page size (50 by default, 500 at most)"), ("after" = Option<String>, Query, description = "the previous page's `next`")), responses((status = 200, description = "a page of messages, newest first")))]
async fn messages(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Q(paging): Q<Paging>,
) -> Result<Json<PageJson<channel_core::Message>>, ApiError> {
    let conversation = parse::<ConversationId>("conversation id", &id)?;
    Ok(Json(state.engine.messages(conversation, paging.request()?).await?.into()))
}

/// An assignment change: `{"claim": "ana"}`, `{"release": "ana"}` or
/// `{"transfer": {"from": "ana", "to": "ben"}}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum AssignBody {
    Claim(String),
    Release(String),
    Transfer { from: String, to: String },
}

#[utoipa::path(post, path = "/api/v1/conversations/{id}/assignment", params(("id" = String, Path, description = "the conversation's id")), request_body = AssignBody, responses((status = 200, description = "the conversation"), (status = 409, description = "another operator has it (named)")))]
async fn assign(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<AssignBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<channel_core::Conversation>, ApiError> {
    use channel_core::assignment::Assignment;
    let conversation = parse::<ConversationId>("conversation id", &id)?;
    let Json(body) = body.map_err(|e| {
        bad_request(format!(
            "send {{\"claim\": \"<operator>\"}}, {{\"release\": \"<operator>\"}} or \
             {{\"transfer\": {{\"from\": ..., \"to\": ...}}}}: {}",
            e.body_text()
        ))
    })?;
    let change = match &body {
        AssignBody::Claim(operator) => Assignment::Claim { operator },
        AssignBody::Release(operator) => Assignment::Release { operator },
        AssignBody::Transfer { from, to } => Assignment::Transfer { from, to },
    };
    Ok(Json(state.engine.assign(conversation, change).await?))
}

/// The body of a send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct SendBody {
    text: String,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    attachments: Vec<AttachmentBody>,
}

/// A file to send: its name, type and bytes (base64).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct AttachmentBody {
    name: Option<String>,
    mime_type: String,
    data: String,
}

#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", params(("id" = String, Path, description = "the conversation's id")), request_body = SendBody, responses((status = 202, description = "queued: the message's id"), (status = 409, description = "the idempotency key was used with other content")))]
async fn send(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<SendBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let conversation = parse::<ConversationId>("conversation id", &id)?;
    let Json(body) = body.map_err(|e| {
        bad_request(format!("the body must be JSON like {{\"text\": \"...\"}}: {}", e.body_text()))
    })?;
    let mut message = OutboundMessage::text(conversation, body.text).label("api");
    for (n, a) in body.attachments.into_iter().enumerate() {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(a.data.as_bytes())
            .map_err(|e| bad_request(format!("attachment {n}: `data` is not base64: {e}")))?;
        message.attachments.push(channel_core::AttachmentData {
            name: a.name,
            mime_type: a.mime_type,
            data: data.into(),
        });
    }
    if let Some(key) = body.idempotency_key {
        message = message.idempotency_key(key);
    }
    let id = state.engine.send(None, message).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "message_id": id }))).into_response())
}

#[utoipa::path(get, path = "/api/v1/messages/{id}", params(("id" = String, Path, description = "the message's id")), responses((status = 200, description = "the message and its status")))]
async fn message(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<channel_core::Message>, ApiError> {
    Ok(Json(state.engine.message(parse::<MessageId>("message id", &id)?).await?))
}

/// One attachment of a message: its bytes, with its type and name.
#[utoipa::path(get, path = "/api/v1/messages/{id}/attachments/{index}", params(("id" = String, Path, description = "the message's id"), ("index" = usize, Path, description = "the attachment, from 0")), responses((status = 200, description = "its bytes, with its type and name"), (status = 404, description = "no such attachment")))]
async fn attachment(
    State(state): State<ApiState>,
    Path((id, index)): Path<(String, usize)>,
) -> Result<Response, ApiError> {
    let message = state.engine.message(parse::<MessageId>("message id", &id)?).await?;
    let Some(a) = message.attachments.get(index) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("message {id} has {} attachments, counted from 0", message.attachments.len()),
        ));
    };
    let bytes = state.engine.blobs().get(&a.blob_key).await.map_err(|e| {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the attachment cannot be read: {e}"))
    })?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| "attachment".to_owned())
        .replace(['"', '\\', '\r', '\n'], "_");
    let headers = [
        (header::CONTENT_TYPE, a.mime_type.clone()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
    ];
    Ok((headers, bytes).into_response())
}

#[derive(Debug, Deserialize)]
struct JobFilter {
    state: Option<String>,
    account: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/jobs", params(("state" = Option<String>, Query, description = "available, running, retryable, completed, discarded (the dead letter) or cancelled"), ("account" = Option<String>, Query, description = "an account's id"), ("kind" = Option<String>, Query, description = "send (an account's sends), history_sync or lifecycle_sweep"), ("since" = Option<String>, Query, description = "created at or after this time (RFC 3339, such as 2026-12-07T10:00:00Z)"), ("until" = Option<String>, Query, description = "created before this time (RFC 3339)"), ("limit" = Option<usize>, Query, description = "page size (50 by default, 500 at most)"), ("after" = Option<String>, Query, description = "the previous page's `next`")), responses((status = 200, description = "a page of jobs, newest first")))]
async fn jobs(
    State(state): State<ApiState>,
    Q(filter): Q<JobFilter>,
) -> Result<Json<PageJson<channel_core::Job>>, ApiError> {
    let mut query = JobQuery::all();
    if let Some(s) = &filter.state {
        query = query.state(parse::<JobState>("job state", s)?);
    }
    if let Some(a) = &filter.account {
        query = query.account(parse::<AccountId>("account id", a)?);
    }
    if let Some(k) = &filter.kind {
        query = query.kind(parse::<channel_core::JobKind>("job kind", k)?);
    }
    let since = filter.since.as_deref().map(|t| time_of("since", t)).transpose()?;
    let until = filter.until.as_deref().map(|t| time_of("until", t)).transpose()?;
    query = query.created(since, until);
    let paging = Paging { limit: filter.limit, after: filter.after };
    Ok(Json(state.engine.jobs(&query, paging.request()?).await?.into()))
}

/// A time given in a query: RFC 3339 (`2026-12-07T10:00:00Z`).
fn time_of(what: &str, text: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(text).ok_or_else(|| {
        bad_request(format!(
            "`{what}` must be a time in RFC 3339, such as 2026-12-07T10:00:00Z, not `{}`",
            text.chars().take(40).collect::<String>()
        ))
    })
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/attempts", params(("id" = String, Path, description = "the job's id")), responses((status = 200, description = "every attempt, with its times and error")))]
async fn attempts(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<channel_core::JobAttempt>>, ApiError> {
    Ok(Json(state.engine.job_attempts(parse::<JobId>("job id", &id)?).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = String, Path, description = "the job's id")), responses((status = 200, description = "the job")))]
async fn job(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<channel_core::Job>, ApiError> {
    Ok(Json(state.engine.job(parse::<JobId>("job id", &id)?).await?))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", params(("id" = String, Path, description = "the job's id")), responses((status = 200, description = "the job, available again"), (status = 400, description = "the job is not in the dead letter")))]
async fn retry(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<channel_core::Job>, ApiError> {
    Ok(Json(state.engine.retry_job(parse::<JobId>("job id", &id)?).await?))
}

#[utoipa::path(get, path = "/api/v1/workers", responses((status = 200, description = "the worker processes, their loops and accounts, alive or not")))]
async fn workers(
    State(state): State<ApiState>,
) -> Result<Json<Vec<channel_core::workers::WorkerInfo>>, ApiError> {
    Ok(Json(state.engine.workers().await?))
}

#[derive(Debug, Deserialize)]
struct EventsFrom {
    after: Option<String>,
}

/// Server-sent events from the durable feed, after `Last-Event-ID` (or `?after=`); without
/// either, from now on.
#[utoipa::path(get, path = "/api/v1/events", params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event; without it (and without `after`) the stream starts with what happens from now on"), ("after" = Option<String>, Query, description = "the same, as a query; `0-0` reads the whole retained feed first")), responses((status = 200, description = "server-sent events from the durable feed", content_type = "text/event-stream"), (status = 410, description = "the feed no longer holds what comes after that position")))]
async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Q(from): Q<EventsFrom>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Without a position to resume from, the stream is live: what happens from now on
    // (`after=0-0` reads the whole retained feed first).
    let after = match last.or(from.after) {
        Some(p) => parse::<FeedPosition>("feed position", &p)?,
        None => state.engine.feed_end().await?,
    };
    // Fails at once (410) when the feed no longer holds what comes after the position.
    let first = state.engine.feed_read(after, 100).await?;
    let feed = SseFeed {
        engine: state.engine.clone(),
        wake: state.engine.subscribe(),
        after,
        pending: first.into(),
        done: false,
        stopping: state.stopping(),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The state of one SSE stream: what is read and not sent yet, and where it is.
struct SseFeed {
    engine: Engine,
    wake: tokio::sync::broadcast::Receiver<channel_core::Event>,
    after: FeedPosition,
    pending: std::collections::VecDeque<FeedEvent>,
    done: bool,
    stopping: channel_watchdog::CancellationToken,
}

impl SseFeed {
    /// The next SSE event, waiting for the feed; an `error` event ends the stream (the
    /// client reconnects with its `Last-Event-ID`).
    async fn next(&mut self) -> Option<SseEvent> {
        if self.done || self.stopping.is_cancelled() {
            return None;
        }
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.after = e.position;
                let sse = SseEvent::default().id(e.position.to_string()).event(e.event.name());
                return Some(sse.json_data(&e).unwrap_or_else(|_| {
                    SseEvent::default().comment("an event could not be encoded")
                }));
            }
            match self.engine.feed_read(self.after, 100).await {
                Ok(more) if !more.is_empty() => self.pending = more.into(),
                Ok(_) => {
                    let every = self.engine.config().feed_poll_interval();
                    tokio::select! {
                        _ = self.wake.recv() => {}
                        _ = tokio::time::sleep(every) => {}
                        () = self.stopping.cancelled() => return None,
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(SseEvent::default().event("error").data(e.to_string()));
                }
            }
        }
    }
}
