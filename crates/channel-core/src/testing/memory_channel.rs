//! [`MemoryChannel`]: a scriptable [`Channel`] for tests.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::channel::{
    Capabilities, Channel, ChannelError, HistoryRequest, Inbound, PreparedSend, SendReceipt,
};
use crate::model::*;
use crate::store::IngestOutcome;

/// What the next `send` call does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendScript {
    /// Accept it under a provider id derived from the client key, `mem-<client_key>`:
    /// unique across processes (client keys come from message ids) and the same on every
    /// attempt with the same key, as a provider that deduplicates by it would answer.
    Ok,
    /// Accept it under this provider id.
    OkWithId(String),
    /// Fail with [`ChannelError::Transient`].
    Transient(String),
    /// Fail with [`ChannelError::RateLimited`].
    RateLimited(Duration),
    /// Fail with [`ChannelError::Permanent`].
    Permanent(String),
    /// Fail with [`ChannelError::InvalidInput`].
    InvalidInput(String),
    /// Fail with [`ChannelError::NeedsLogin`].
    NeedsLogin(String),
    /// Never answer (the engine's timeout must end it).
    Hang,
}

#[derive(Default)]
struct Shared {
    send_script: VecDeque<SendScript>,
    thread_scripts: HashMap<String, VecDeque<SendScript>>,
    sends: Vec<PreparedSend>,
    history: Vec<InboundMessage>,
    history_errors: VecDeque<ChannelError>,
    history_requests: Vec<HistoryRequest>,
    deliveries: Vec<Result<IngestOutcome, ChannelError>>,
    run_errors: VecDeque<ChannelError>,
    runs: usize,
}

/// The kind of the in-memory test provider: `memory`.
pub const MEMORY_KIND: ChannelKind = ChannelKind::from_static("memory");

/// The in-memory test provider, a [`Provider`](crate::provider::Provider) like any other: each
/// account of kind [`MEMORY_KIND`] gets its own [`MemoryChannel`], made on first use and kept,
/// so that a test can script it and read what it sent ([`MemoryProvider::channel_of`]).
#[derive(Default)]
pub struct MemoryProvider {
    channels: Mutex<HashMap<AccountId, Arc<MemoryChannel>>>,
}

impl std::fmt::Debug for MemoryProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProvider").finish_non_exhaustive()
    }
}

impl MemoryProvider {
    /// A provider with no channels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel of `account` (made now if it has none yet).
    pub fn channel_of(&self, account: AccountId) -> Arc<MemoryChannel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(channels.entry(account).or_insert_with(|| Arc::new(MemoryChannel::new())))
    }
}

#[async_trait]
impl crate::provider::Provider for MemoryProvider {
    fn kind(&self) -> ChannelKind {
        MEMORY_KIND
    }

    fn capabilities(&self) -> Capabilities {
        MemoryChannel::new().capabilities()
    }

    async fn channel(
        &self,
        account: &Account,
        _engine: &crate::Engine,
    ) -> Result<Arc<dyn Channel>, ChannelError> {
        Ok(self.channel_of(account.id))
    }

    fn login_flows(&self) -> Vec<crate::provider::LoginFlow> {
        vec![crate::provider::LoginFlow {
            id: "token".to_owned(),
            name: "Token".to_owned(),
            description: format!("Type the token `{MEMORY_LOGIN_TOKEN}`."),
        }]
    }

    /// One input step: the token [`MEMORY_LOGIN_TOKEN`]; a wrong one can be retried.
    async fn login_step(
        &self,
        account: &Account,
        engine: &crate::Engine,
        flow: &str,
        input: crate::provider::LoginInput,
    ) -> Result<crate::provider::LoginStep, crate::provider::LoginError> {
        use crate::provider::{FieldKind, LoginError, LoginField, LoginStep};
        use secrecy::ExposeSecret;
        if flow != "token" {
            return Err(LoginError::UnknownFlow { flow: flow.to_owned() });
        }
        let Some(token) = input.get("token") else {
            return Ok(LoginStep::Input {
                name: "token".to_owned(),
                fields: vec![LoginField {
                    id: "token".to_owned(),
                    kind: FieldKind::Token,
                    label: "Token".to_owned(),
                }],
                hint: None,
            });
        };
        if token.expose_secret() != MEMORY_LOGIN_TOKEN {
            return Err(LoginError::InvalidInput {
                field: "token".to_owned(),
                message: "that is not the token; try again".to_owned(),
            });
        }
        engine
            .account_state(account.id)
            .put("memory/logged_in", b"yes")
            .await
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        Ok(LoginStep::Done { who: Some(account.display_name.clone()) })
    }
}

/// The token of [`MemoryProvider`]'s one login flow, `token`.
pub const MEMORY_LOGIN_TOKEN: &str = "letmein";

/// A channel driven by the test: inbound messages pushed by the test are delivered by its
/// `run`; sends follow a script and are all recorded (with their client key), so tests can
/// check at-most-once behaviour; history pages come from a list.
///
/// ```
/// use channel_core::testing::{MemoryChannel, SendScript};
/// use channel_core::Channel;
/// # use channel_core::{PreparedSend, MessageId, IdentityInfo};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let channel = MemoryChannel::new();
/// channel.script_sends([SendScript::Transient("flaky".into()), SendScript::OkWithId("p-1".into())]);
/// # let msg = PreparedSend { message_id: MessageId::new(), client_key: "k".into(), thread_key: "t".into(),
/// #     remote: IdentityInfo::new("a"), text: None, html: None, subject: None, reply_to: None, references: vec![], attachments: vec![] };
/// assert!(channel.send(&msg).await.is_err());
/// assert_eq!(channel.send(&msg).await.unwrap().provider_id, "p-1");
/// assert_eq!(channel.sends().len(), 2);
/// # });
/// ```
pub struct MemoryChannel {
    shared: Mutex<Shared>,
    inbound_tx: mpsc::UnboundedSender<InboundMessage>,
    inbound_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<InboundMessage>>,
    delivered: Notify,
    sent: Notify,
    capabilities: Capabilities,
}

impl std::fmt::Debug for MemoryChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("MemoryChannel")
            .field("sends", &s.sends.len())
            .field("deliveries", &s.deliveries.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryChannel {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryChannel {
    /// A channel that accepts every send.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            shared: Mutex::new(Shared::default()),
            inbound_tx: tx,
            inbound_rx: tokio::sync::Mutex::new(rx),
            delivered: Notify::new(),
            sent: Notify::new(),
            capabilities: Capabilities {
                edits: false,
                media: true,
                history: true,
                outgoing_capture: true,
            },
        }
    }

    /// The same channel declaring `capabilities` (by default media, history and outgoing
    /// capture, without edits).
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message for `run` to deliver.
    pub fn push_inbound(&self, message: InboundMessage) {
        // The receiver lives as long as the channel, so this cannot fail.
        let _ = self.inbound_tx.send(message);
    }

    /// Appends results for the next `send` calls, in order; when the script runs out, sends
    /// succeed. Sends to a thread with its own script ([`MemoryChannel::script_thread`]) use
    /// that first.
    pub fn script_sends(&self, script: impl IntoIterator<Item = SendScript>) {
        self.lock().send_script.extend(script);
    }

    /// Appends results for the next `send` calls to one thread (`PreparedSend::thread_key`),
    /// in order, whatever is sent elsewhere meanwhile: a test can fail one recipient's sends
    /// without caring how sends to others interleave. When the thread's script runs out, its
    /// sends follow the shared script of [`MemoryChannel::script_sends`].
    ///
    /// ```
    /// use channel_core::testing::{MemoryChannel, SendScript};
    /// use channel_core::Channel;
    /// # use channel_core::{PreparedSend, MessageId, IdentityInfo};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let to = |thread: &str| PreparedSend { message_id: MessageId::new(), client_key: "k".into(),
    /// #     thread_key: thread.into(), remote: IdentityInfo::new("a"), text: None, html: None, subject: None,
    /// #     reply_to: None, references: vec![], attachments: vec![] };
    /// let channel = MemoryChannel::new();
    /// channel.script_thread("chat-bob", [SendScript::Permanent("blocked".into())]);
    /// assert!(channel.send(&to("chat-alice")).await.is_ok());
    /// assert!(channel.send(&to("chat-bob")).await.is_err());
    /// assert!(channel.send(&to("chat-bob")).await.is_ok(), "the thread's script ran out");
    /// # });
    /// ```
    pub fn script_thread(
        &self,
        thread_key: impl Into<String>,
        script: impl IntoIterator<Item = SendScript>,
    ) {
        self.lock().thread_scripts.entry(thread_key.into()).or_default().extend(script);
    }

    /// Every `send` call so far, in order (with its client key).
    pub fn sends(&self) -> Vec<PreparedSend> {
        self.lock().sends.clone()
    }

    /// Sets the messages `fetch_history` pages through (oldest first).
    pub fn set_history(&self, messages: Vec<InboundMessage>) {
        self.lock().history = messages;
    }

    /// Makes the next `fetch_history` calls fail with these errors.
    pub fn fail_history(&self, errors: impl IntoIterator<Item = ChannelError>) {
        self.lock().history_errors.extend(errors);
    }

    /// Every `fetch_history` request so far.
    pub fn history_requests(&self) -> Vec<HistoryRequest> {
        self.lock().history_requests.clone()
    }

    /// Makes the next `run` calls fail with these errors (after reporting `Connecting`).
    pub fn fail_runs(&self, errors: impl IntoIterator<Item = ChannelError>) {
        self.lock().run_errors.extend(errors);
    }

    /// How many times `run` was started.
    pub fn runs(&self) -> usize {
        self.lock().runs
    }

    /// The results of every delivery `run` made, in order.
    pub fn deliveries(&self) -> Vec<Result<IngestOutcome, ChannelError>> {
        self.lock().deliveries.clone()
    }

    /// Waits until `run` has made at least `n` deliveries.
    pub async fn wait_for_deliveries(&self, n: usize) -> Vec<Result<IngestOutcome, ChannelError>> {
        loop {
            let notified = self.delivered.notified();
            {
                let s = self.lock();
                if s.deliveries.len() >= n {
                    return s.deliveries.clone();
                }
            }
            notified.await;
        }
    }

    /// Waits until `send` has been called at least `n` times.
    pub async fn wait_for_sends(&self, n: usize) -> Vec<PreparedSend> {
        loop {
            let notified = self.sent.notified();
            {
                let s = self.lock();
                if s.sends.len() >= n {
                    return s.sends.clone();
                }
            }
            notified.await;
        }
    }
}

#[async_trait]
impl Channel for MemoryChannel {
    fn kind(&self) -> ChannelKind {
        MEMORY_KIND
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn run(
        &self,
        inbound: Arc<dyn Inbound>,
        cancel: CancellationToken,
    ) -> Result<(), ChannelError> {
        let failure = {
            let mut s = self.lock();
            s.runs += 1;
            s.run_errors.pop_front()
        };
        inbound.report_state(ConnectionState::Connecting).await;
        if let Some(e) = failure {
            return Err(e);
        }
        inbound.report_state(ConnectionState::Connected).await;
        let mut rx = self.inbound_rx.lock().await;
        loop {
            inbound.alive();
            let message = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                m = rx.recv() => m,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            };
            let Some(message) = message else { return Ok(()) };
            let result = inbound.deliver(message).await;
            self.lock().deliveries.push(result);
            self.delivered.notify_waiters();
        }
    }

    async fn send(&self, message: &PreparedSend) -> Result<SendReceipt, ChannelError> {
        let step = {
            let mut s = self.lock();
            s.sends.push(message.clone());
            let own = s.thread_scripts.get_mut(&message.thread_key).and_then(VecDeque::pop_front);
            own.or_else(|| s.send_script.pop_front()).unwrap_or(SendScript::Ok)
        };
        self.sent.notify_waiters();
        let at = Timestamp::now();
        match step {
            SendScript::Ok => {
                Ok(SendReceipt { provider_id: format!("mem-{}", message.client_key), at })
            }
            SendScript::OkWithId(id) => Ok(SendReceipt { provider_id: id, at }),
            SendScript::Transient(e) => Err(ChannelError::transient(e)),
            SendScript::RateLimited(d) => Err(ChannelError::RateLimited { retry_after: d }),
            SendScript::Permanent(e) => Err(ChannelError::permanent(e)),
            SendScript::InvalidInput(e) => Err(ChannelError::InvalidInput(e)),
            SendScript::NeedsLogin(e) => Err(ChannelError::needs_login(e)),
            SendScript::Hang => futures::future::pending().await,
        }
    }

    async fn fetch_history(
        &self,
        request: &HistoryRequest,
    ) -> Result<Vec<InboundMessage>, ChannelError> {
        let mut s = self.lock();
        s.history_requests.push(request.clone());
        if let Some(e) = s.history_errors.pop_front() {
            return Err(e);
        }
        let in_thread: Vec<&InboundMessage> = s
            .history
            .iter()
            .filter(|m| request.thread_key.as_ref().is_none_or(|t| &m.thread_key == t))
            .collect();
        let position = |id: &str| in_thread.iter().position(|m| m.provider_id == id);
        let end = request.before.as_deref().and_then(position).unwrap_or(in_thread.len());
        let start = request.after.as_deref().and_then(position).map_or(0, |p| p + 1);
        let window = in_thread.get(start..end).unwrap_or_default();
        let skip = window.len().saturating_sub(request.page_size());
        Ok(window[skip..].iter().map(|m| (*m).clone()).collect())
    }
}
