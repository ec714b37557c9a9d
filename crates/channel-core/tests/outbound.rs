//! Outbound: send queues durably; the dispatcher sends with retries, snoozes and the dead
//! letter; every attempt uses the same client key and is audited.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use channel_core::dispatcher::Dispatcher;
use channel_core::retry::RetryPolicy;
use channel_core::send_policy::{RateLimitPolicy, SendContext, SendDecision, SendPolicy};
use channel_core::testing::{MemoryChannel, SendScript};
use channel_core::*;
use common::*;
use tokio_util::sync::CancellationToken;

/// Runs the dispatcher loop in the background until the returned token is cancelled.
fn spawn_dispatcher(engine: &Engine) -> CancellationToken {
    let cancel = CancellationToken::new();
    let d = Dispatcher::new(engine.clone());
    let c = cancel.clone();
    tokio::spawn(async move { d.run(c, || {}).await });
    cancel
}

fn is_final_for(id: MessageId) -> impl Fn(&Event) -> bool {
    move |e| match e {
        Event::MessageSent { message_id, .. } => *message_id == id,
        Event::MessageStatusChanged { message_id, status: MessageStatus::Failed, .. } => {
            *message_id == id
        }
        _ => false,
    }
}

#[tokio::test(start_paused = true)]
async fn an_outbound_message_reaches_sent_with_the_provider_id() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    h.channel.script_sends([SendScript::OkWithId("tg-msg-77".into())]);
    let id = h.engine.send(Some(h.account.id), reply(conversation, "hello")).await.unwrap();
    let pending = h.store.message(id).await.unwrap();
    assert_eq!(
        pending.status,
        MessageStatus::Pending,
        "send returns at once with a pending message"
    );
    let key = pending.client_key.clone().unwrap();

    let cancel = spawn_dispatcher(&h.engine);
    let e = h.wait_event(is_final_for(id)).await;
    cancel.cancel();
    assert_eq!(e, Event::MessageSent { account_id: h.account.id, message_id: id });
    let sent = h.store.message(id).await.unwrap();
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(sent.provider_id.as_deref(), Some("tg-msg-77"));
    let sends = h.channel.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].client_key, key);
    assert_eq!(sends[0].thread_key, "chat");
    assert_eq!(sends[0].remote.address, "tg:42");
    assert_eq!(sends[0].references, vec!["first-chat".to_owned()]);
    assert_eq!(h.job_of(id).await.state, JobState::Completed);
}

#[tokio::test(start_paused = true)]
async fn an_attachment_for_a_channel_without_media_is_refused_or_fails_the_send_never_dropped() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    let text_only =
        Arc::new(MemoryChannel::new().with_capabilities(h.channel.capabilities().media(false)));
    let mut message = reply(conversation, "see the file");
    message.attachments = vec![AttachmentData {
        name: Some("report.pdf".into()),
        mime_type: "application/pdf".into(),
        data: bytes::Bytes::from_static(b"%PDF-1.7"),
    }];
    // Queued while a channel with media was attached (here, or in another process).
    let id = h.engine.send(None, message.clone()).await.unwrap();
    channel_core::testing::attach_channel(&h.engine, h.account.id, text_only.clone());
    // With the text-only channel attached here, the same send is refused at once.
    let refused = h.engine.send(None, message).await;
    assert!(
        matches!(refused, Err(EngineError::Unsupported { capability: "media", .. })),
        "{refused:?}"
    );
    let text = h.engine.send(None, reply(conversation, "and a line of text")).await.unwrap();
    let cancel = spawn_dispatcher(&h.engine);
    h.wait_event(is_final_for(id)).await;
    h.wait_event(is_final_for(text)).await;
    cancel.cancel();
    let failed = h.store.message(id).await.unwrap();
    assert_eq!(failed.status, MessageStatus::Failed);
    assert!(failed.error.as_deref().unwrap_or_default().contains("attachments"), "{failed:?}");
    assert_eq!(h.store.message(text).await.unwrap().status, MessageStatus::Sent);
    let sends = text_only.sends();
    assert_eq!(sends.len(), 1, "only the text message went out");
    assert_eq!(sends[0].text.as_deref(), Some("and a line of text"));
}

#[tokio::test(start_paused = true)]
async fn a_send_wakes_the_idle_dispatcher_at_once_not_at_its_next_poll() {
    let poll = Duration::from_secs(600);
    let mut h = harness_with(|b| b.poll_interval(poll)).await;
    let conversation = h.conversation("chat").await;
    let cancel = spawn_dispatcher(&h.engine);
    // Let the dispatcher find nothing and go to sleep for its poll interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = tokio::time::Instant::now();
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    h.wait_event(is_final_for(id)).await;
    let took = start.elapsed();
    cancel.cancel();
    assert_eq!(h.channel.sends().len(), 1);
    // On the paused clock, a dispatcher that was not woken would only act once the clock had
    // jumped to its next poll, 599 s later.
    assert!(took < Duration::from_secs(1), "sent after {took:?} on the paused clock");
}

#[tokio::test(start_paused = true)]
async fn the_label_of_a_send_is_its_stored_origin() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    let mut message = reply(conversation, "typed by an agent");
    message.label = "chat_manual".to_owned();
    let id = h.engine.send(None, message).await.unwrap();
    let stored = h.store.message(id).await.unwrap();
    assert_eq!(stored.origin, Origin::Service("chat_manual".to_owned()));
    assert_eq!(stored.direction, Direction::Outbound);
}

#[tokio::test(start_paused = true)]
async fn by_default_a_failing_send_is_dead_lettered_after_ten_attempts() {
    let mut h = harness().await;
    assert_eq!(h.engine.config().retry().max_attempts, 10);
    let conversation = h.conversation("chat").await;
    h.channel.script_sends((0..10).map(|i| SendScript::Transient(format!("failure {i}"))));
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    let cancel = spawn_dispatcher(&h.engine);
    h.wait_event(is_final_for(id)).await;
    cancel.cancel();
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Failed);
    let job = h.job_of(id).await;
    assert_eq!((job.state, job.max_attempts), (JobState::Discarded, 10));
    let attempts = h.store.job_attempts(job.id).await.unwrap();
    assert_eq!(attempts.len(), 10);
    assert!(attempts[..9].iter().all(|a| a.outcome == AttemptOutcome::Retried));
    assert_eq!(attempts[9].outcome, AttemptOutcome::Discarded);
    assert_eq!(h.channel.sends().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_with_backoff_and_then_sent_with_the_same_client_key() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    h.channel.script_sends([
        SendScript::Transient("reset".into()),
        SendScript::Transient("reset".into()),
    ]);
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    let cancel = spawn_dispatcher(&h.engine);
    let e = h.wait_event(is_final_for(id)).await;
    cancel.cancel();
    assert!(matches!(e, Event::MessageSent { .. }));

    let sends = h.channel.sends();
    assert_eq!(sends.len(), 3);
    assert!(
        sends.iter().all(|s| s.client_key == sends[0].client_key),
        "one client key for every attempt"
    );
    let attempts = h.store.job_attempts(h.job_of(id).await.id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(
        outcomes,
        vec![
            (1, AttemptOutcome::Retried),
            (2, AttemptOutcome::Retried),
            (3, AttemptOutcome::Completed)
        ]
    );
    // Backoff: between half and all of 2 s, then of 4 s.
    let gap = |i: usize| attempts[i].started_at.since(attempts[i - 1].finished_at.unwrap());
    assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&gap(1)), "{:?}", gap(1));
    assert!((Duration::from_secs(2)..=Duration::from_secs(4)).contains(&gap(2)), "{:?}", gap(2));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_snoozes_without_spending_an_attempt() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    h.channel.script_sends([SendScript::RateLimited(Duration::from_secs(30))]);
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    let d = Dispatcher::new(h.engine.clone());
    assert_eq!(d.run_once().await.unwrap(), 1);
    let job = h.job_of(id).await;
    assert_eq!(job.attempt, 0, "the attempt is given back");
    assert_eq!(job.run_at, h.engine.now().plus(Duration::from_secs(30)));
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Pending);

    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(d.run_once().await.unwrap(), 0, "not before the provider's wait is over");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Sent);
    let attempts = h.store.job_attempts(job.id).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.attempt, a.outcome)).collect::<Vec<_>>(),
        vec![(1, AttemptOutcome::Snoozed), (1, AttemptOutcome::Completed)]
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_attempts_failure_ends_failed_in_the_dead_letter_with_every_attempt_audited() {
    let mut h =
        harness_with(|b| b.retry(RetryPolicy { max_attempts: 4, ..RetryPolicy::DEFAULT })).await;
    let conversation = h.conversation("chat").await;
    h.channel.script_sends((0..4).map(|i| SendScript::Transient(format!("failure {i}"))));
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    let cancel = spawn_dispatcher(&h.engine);
    let e = h.wait_event(is_final_for(id)).await;
    cancel.cancel();
    assert_eq!(
        e,
        Event::MessageStatusChanged {
            account_id: h.account.id,
            message_id: id,
            status: MessageStatus::Failed
        }
    );
    let failed = h.store.message(id).await.unwrap();
    assert_eq!(failed.status, MessageStatus::Failed);
    assert!(failed.error.as_deref().unwrap().contains("failure 3"), "{failed:?}");
    let job = h.job_of(id).await;
    assert_eq!(job.state, JobState::Discarded);
    assert!(
        h.store
            .jobs_in_state(JobState::Discarded, 10)
            .await
            .unwrap()
            .iter()
            .any(|j| j.id == job.id)
    );
    let attempts = h.store.job_attempts(job.id).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.attempt, a.outcome)).collect::<Vec<_>>(),
        vec![
            (1, AttemptOutcome::Retried),
            (2, AttemptOutcome::Retried),
            (3, AttemptOutcome::Retried),
            (4, AttemptOutcome::Discarded)
        ]
    );
    assert!(attempts.iter().all(|a| a.error.is_some() && a.finished_at.is_some()));
    assert_eq!(h.channel.sends().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_fails_the_message_at_once() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    h.channel.script_sends([SendScript::Permanent("user is deactivated".into())]);
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    let m = h.store.message(id).await.unwrap();
    assert_eq!(m.status, MessageStatus::Failed);
    assert!(m.error.unwrap().contains("deactivated"));
    assert_eq!(h.job_of(id).await.state, JobState::Discarded);
    assert_eq!(h.channel.sends().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_send_times_out_and_is_retried() {
    let mut h = harness_with(|b| b.send_timeout(Duration::from_secs(30))).await;
    let conversation = h.conversation("chat").await;
    h.channel.script_sends([SendScript::Hang]);
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    let started = h.engine.now();
    let cancel = spawn_dispatcher(&h.engine);
    let e = h.wait_event(is_final_for(id)).await;
    cancel.cancel();
    assert!(matches!(e, Event::MessageSent { .. }));
    let attempts = h.store.job_attempts(h.job_of(id).await.id).await.unwrap();
    assert_eq!(attempts[0].outcome, AttemptOutcome::Retried);
    assert!(attempts[0].error.as_deref().unwrap().contains("timed out"), "{:?}", attempts[0].error);
    assert_eq!(
        attempts[0].finished_at.unwrap().since(started),
        Duration::from_secs(30),
        "ended by the send timeout"
    );
    assert_eq!(attempts[1].outcome, AttemptOutcome::Completed);
    let sends = h.channel.sends();
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[0].client_key, sends[1].client_key);
}

#[tokio::test(start_paused = true)]
async fn needs_login_snoozes_the_job_and_reports_the_account_state() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    h.drain_events();
    h.channel.script_sends([SendScript::NeedsLogin("AUTH_KEY_UNREGISTERED".into())]);
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    let job = h.job_of(id).await;
    assert_eq!(job.attempt, 0, "no attempt spent");
    assert_eq!(job.run_at, h.engine.now().plus(h.engine.config().needs_login_snooze()));
    let account = h.store.account(h.account.id).await.unwrap();
    assert!(matches!(account.connection, ConnectionState::NeedsLogin { .. }));
    assert!(h.drain_events().iter().any(|e| matches!(e, Event::AccountStateChanged { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_message_of_an_account_connected_elsewhere_waits_without_spending_attempts() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    channel_core::testing::detach_channel(&h.engine, h.account.id);
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    let d = Dispatcher::new(h.engine.clone());
    // Not this process's account: left to the worker that runs it for a while...
    assert_eq!(d.run_once().await.unwrap(), 0, "another worker's account is not claimed at once");
    // ...then claimed and put back, without spending an attempt.
    tokio::time::advance(h.engine.config().others_claim_after()).await;
    assert_eq!(d.run_once().await.unwrap(), 1);
    let job = h.job_of(id).await;
    assert_eq!((job.attempt, job.state), (0, JobState::Available));
    assert!(job.run_at > h.engine.now());
    channel_core::testing::attach_channel(&h.engine, h.account.id, h.channel.clone());
    tokio::time::advance(Duration::from_secs(4)).await;
    d.run_once().await.unwrap();
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Sent);
}

struct Scripted(Vec<SendDecision>, std::sync::Mutex<usize>);

#[async_trait]
impl SendPolicy for Scripted {
    async fn check(&self, _ctx: &SendContext<'_>) -> SendDecision {
        let mut i = self.1.lock().unwrap();
        *i += 1;
        self.0.get(*i - 1).cloned().unwrap_or(SendDecision::Allow)
    }
}

#[tokio::test(start_paused = true)]
async fn the_send_policy_runs_first_and_can_delay_or_reject() {
    let later = START.plus(Duration::from_secs(3600));
    let policy = Scripted(
        vec![SendDecision::DelayUntil(later), SendDecision::Reject("opted out".into())],
        Default::default(),
    );
    let h = harness_with(|b| b.send_policy(Arc::new(policy))).await;
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    let d = Dispatcher::new(h.engine.clone());
    d.run_once().await.unwrap();
    let job = h.job_of(id).await;
    assert_eq!((job.attempt, job.run_at), (0, later), "delayed without spending an attempt");
    assert!(h.channel.sends().is_empty(), "the policy runs before the channel");
    tokio::time::advance(Duration::from_secs(3600)).await;
    d.run_once().await.unwrap();
    let m = h.store.message(id).await.unwrap();
    assert_eq!(m.status, MessageStatus::Failed);
    assert!(m.error.unwrap().contains("opted out"));
    assert!(h.channel.sends().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_default_rate_limits_space_out_sends_in_one_chat() {
    let h = harness_with(|b| b.send_policy(Arc::new(RateLimitPolicy::default()))).await;
    let conversation = h.conversation("chat").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(h.engine.send(None, reply(conversation, &format!("m{i}"))).await.unwrap());
    }
    let cancel = spawn_dispatcher(&h.engine);
    // Burst of 3, then one every 3 s.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.channel.sends().len(), 3);
    h.channel.wait_for_sends(5).await;
    let elapsed = h.engine.now().since(START);
    cancel.cancel();
    assert!(elapsed >= Duration::from_secs(6), "{elapsed:?}");
    for id in ids {
        let job = h.job_of(id).await;
        let attempts = h.store.job_attempts(job.id).await.unwrap();
        assert_eq!(attempts.last().unwrap().attempt, 1, "rate-limit waits spend no attempt");
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_of_a_crashed_worker_is_rescued_and_sent_exactly_once() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    // A worker claims the job and dies before sending.
    let ttl = h.engine.config().job_lease_ttl();
    let stale = h
        .store
        .claim("dead-worker", &[JobKind::Send], 1, ttl, h.engine.now())
        .await
        .unwrap()
        .remove(0);
    let d = Dispatcher::new(h.engine.clone());
    assert_eq!(d.run_once().await.unwrap(), 0, "a leased job is not claimed twice");
    tokio::time::advance(ttl + Duration::from_secs(1)).await;
    assert_eq!(h.store.rescue_expired(h.engine.now()).await.unwrap(), 1);
    d.run_once().await.unwrap();
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Sent);
    let late = h.store.complete(&stale, None, h.engine.now()).await;
    assert!(matches!(late, Err(StoreError::LeaseLost { .. })), "{late:?}");
    assert_eq!(h.channel.sends().len(), 1, "sent once");
}

#[tokio::test(start_paused = true)]
async fn bad_outbound_input_is_refused_before_anything_is_queued() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    let empty = OutboundMessage { text: None, ..reply(conversation, "") };
    assert!(matches!(h.engine.send(None, empty).await, Err(EngineError::Invalid(_))));
    let nul = reply(conversation, "a\0b");
    assert!(matches!(h.engine.send(None, nul).await, Err(EngineError::Invalid(_))));
    let unknown = ConversationId::new();
    assert!(matches!(
        h.engine.send(None, reply(unknown, "x")).await,
        Err(EngineError::UnknownConversation(c)) if c == unknown
    ));
    assert!(
        matches!(
            h.engine.send(Some(AccountId::new()), reply(conversation, "x")).await,
            Err(EngineError::UnknownConversation(_))
        ),
        "the conversation must belong to the given account"
    );
    assert!(h.store.jobs_in_state(JobState::Available, 10).await.unwrap().is_empty());
}

/// A provider defined here, outside the core, forms the idempotency keys of its accounts.
struct Sms;

#[async_trait::async_trait]
impl channel_core::provider::Provider for Sms {
    fn kind(&self) -> ChannelKind {
        ChannelKind::from_static("sms")
    }
    fn capabilities(&self) -> channel_core::Capabilities {
        channel_core::Capabilities::default()
    }
    fn client_key(&self, account: &Account, message_id: MessageId) -> String {
        format!("sms:{}:{}", account.display_name, message_id.as_uuid().simple())
    }
    async fn channel(
        &self,
        _account: &Account,
        _engine: &Engine,
    ) -> Result<Arc<dyn Channel>, ChannelError> {
        Err(ChannelError::permanent("not in this test"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_registered_provider_forms_the_client_keys_of_its_accounts() {
    let h = harness_with(|b| b.provider(Arc::new(Sms))).await;
    let sms = h
        .store
        .create_account(NewAccount::new(ChannelKind::from_static("sms"), "gw"), h.engine.now())
        .await
        .unwrap();
    let c = h.engine.deliver(sms.id, text("s-1", "+4912", "+4912", "hi")).await.unwrap();
    let id = h.engine.send(None, reply(c.conversation_id, "answer")).await.unwrap();
    let key = h.store.message(id).await.unwrap().client_key.unwrap();
    assert_eq!(key, format!("sms:gw:{}", id.as_uuid().simple()));
    // An account whose provider this process does not have gets the message id.
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "x")).await.unwrap();
    assert_eq!(h.store.message(id).await.unwrap().client_key, Some(id.to_string()));
}

/// The store's `complete` fails (database down) after the provider accepted the message.
fn store_down(h: &Harness, operation: &'static str, times: usize) {
    h.store.fail_next(
        operation,
        (0..times).map(|_| StoreError::Unavailable("database restarting (injected)".into())),
    );
}

#[tokio::test(start_paused = true)]
async fn a_sent_message_is_never_sent_again_when_recording_it_fails() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    h.channel.script_sends([SendScript::OkWithId("tg-1".into())]);
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    h.drain_events();
    // The database is down for 85 s right after the provider accepted the message.
    store_down(&h, "complete", 10_000);
    let d = Dispatcher::new(h.engine.clone());
    let running = tokio::spawn(async move { d.run_once().await });
    tokio::time::sleep(Duration::from_secs(85)).await;
    assert_eq!(h.channel.sends().len(), 1, "never sent again while the store is down");
    let job = h.job_of(id).await;
    assert_eq!(job.state, JobState::Running);
    let claimed_lease_end = START.plus(h.engine.config().job_lease_ttl());
    assert!(
        job.lease_expires_at.unwrap() > claimed_lease_end,
        "the lease is extended while the record is retried: {:?}",
        job.lease_expires_at
    );
    h.store.clear_faults();
    assert_eq!(running.await.unwrap().unwrap(), 1);

    let m = h.store.message(id).await.unwrap();
    assert_eq!((m.status, m.provider_id.as_deref()), (MessageStatus::Sent, Some("tg-1")));
    assert_eq!(h.job_of(id).await.state, JobState::Completed);
    assert!(
        h.drain_events().contains(&Event::MessageSent { account_id: h.account.id, message_id: id })
    );
    // Nothing is left to run; later passes never send it again.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(h.engine.rescue_expired_jobs().await.unwrap(), 0);
    let d = Dispatcher::new(h.engine.clone());
    assert_eq!(d.run_once().await.unwrap(), 0);
    assert_eq!(h.channel.sends().len(), 1, "sent exactly once");
}

#[tokio::test(start_paused = true)]
async fn a_sent_message_whose_provider_id_is_refused_ends_sent_and_is_not_sent_again() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    // The provider reports an id the store already holds for another message.
    h.channel.script_sends([SendScript::OkWithId("first-chat".into())]);
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    h.drain_events();
    let d = Dispatcher::new(h.engine.clone());
    assert_eq!(d.run_once().await.unwrap(), 1);

    let m = h.store.message(id).await.unwrap();
    assert_eq!(m.status, MessageStatus::Sent, "delivered is never shown as failed");
    assert_eq!(m.provider_id, None, "the id stays with the message that had it");
    let note = m.error.unwrap();
    assert!(note.starts_with(outbound::SENT_BUT_NOT_RECORDED), "{note}");
    assert!(note.contains("`first-chat`"), "{note}");
    assert_eq!(h.job_of(id).await.state, JobState::Completed, "not a dead letter to re-drive");
    assert_eq!(
        h.drain_events(),
        vec![Event::MessageSent { account_id: h.account.id, message_id: id }]
    );
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(h.engine.rescue_expired_jobs().await.unwrap(), 0);
    assert_eq!(d.run_once().await.unwrap(), 0);
    assert_eq!(h.channel.sends().len(), 1, "sent exactly once");
}

#[tokio::test(start_paused = true)]
async fn a_sent_message_unrecorded_past_the_lease_is_resent_only_with_the_same_client_key() {
    // The residual case: the store stays down longer than a job lease. The job is rescued and
    // the channel called again, with the same client key, so the provider deduplicates.
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    store_down(&h, "complete", 10_000);
    store_down(&h, "extend_job_lease", 10_000);
    let d = Dispatcher::new(h.engine.clone());
    assert_eq!(d.run_once().await.unwrap(), 1, "the job ends: nothing hangs");
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Pending);
    h.store.clear_faults();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(h.engine.rescue_expired_jobs().await.unwrap(), 1);
    assert_eq!(d.run_once().await.unwrap(), 1);
    let m = h.store.message(id).await.unwrap();
    assert_eq!(m.status, MessageStatus::Sent);
    let sends = h.channel.sends();
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[0].client_key, sends[1].client_key, "the provider deduplicates by it");
    assert_eq!(m.provider_id, Some(format!("mem-{}", sends[0].client_key)));
}

#[tokio::test(start_paused = true)]
async fn a_rescued_send_that_ran_out_of_attempts_publishes_its_failure() {
    let mut h =
        harness_with(|b| b.retry(RetryPolicy { max_attempts: 1, ..RetryPolicy::DEFAULT })).await;
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    let ttl = h.engine.config().job_lease_ttl();
    // A worker claims the last attempt and dies.
    h.store.claim("dead-worker", &[JobKind::Send], 1, ttl, h.engine.now()).await.unwrap();
    h.drain_events();
    tokio::time::advance(ttl + Duration::from_secs(1)).await;
    assert_eq!(h.engine.rescue_expired_jobs().await.unwrap(), 1);
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Failed);
    assert_eq!(h.job_of(id).await.state, JobState::Discarded);
    assert!(
        h.drain_events().contains(&Event::MessageStatusChanged {
            account_id: h.account.id,
            message_id: id,
            status: MessageStatus::Failed
        }),
        "the failure is published like any other"
    );
}

#[tokio::test(start_paused = true)]
async fn memory_channel_provider_ids_are_unique_across_processes() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    let first = h.engine.send(None, reply(conversation, "one")).await.unwrap();
    Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    // A second process on the same database: a fresh channel.
    let again = Arc::new(channel_core::testing::MemoryChannel::new());
    channel_core::testing::attach_channel(&h.engine, h.account.id, again.clone());
    let second = h.engine.send(None, reply(conversation, "two")).await.unwrap();
    Dispatcher::new(h.engine.clone()).run_once().await.unwrap();

    let (a, b) = (h.store.message(first).await.unwrap(), h.store.message(second).await.unwrap());
    assert_eq!((a.status, b.status), (MessageStatus::Sent, MessageStatus::Sent));
    assert_ne!(a.provider_id, b.provider_id);
    assert_eq!(b.provider_id, Some(format!("mem-{}", b.client_key.unwrap())));
    assert_eq!((h.channel.sends().len(), again.sends().len()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_threads_own_send_script_fails_only_that_recipient() {
    let h = harness().await;
    let alice = h.conversation("chat-alice").await;
    let bob = h.conversation("chat-bob").await;
    h.channel.script_thread("chat-bob", [SendScript::Permanent("blocked".into())]);
    // Whatever the order the dispatcher sends them in.
    let to_alice = h.engine.send(None, reply(alice, "hi alice")).await.unwrap();
    let to_bob = h.engine.send(None, reply(bob, "hi bob")).await.unwrap();
    let to_alice_2 = h.engine.send(None, reply(alice, "again")).await.unwrap();
    Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    for id in [to_alice, to_alice_2] {
        assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Sent);
    }
    let m = h.store.message(to_bob).await.unwrap();
    assert_eq!(m.status, MessageStatus::Failed);
    assert!(m.error.unwrap().contains("blocked"));
}

#[tokio::test(start_paused = true)]
async fn a_record_that_timed_out_but_committed_is_not_sent_again() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    h.drain_events();
    let d = Dispatcher::new(h.engine.clone());
    // The first record times out, yet another worker's view says the job is done: simulate
    // a commit that landed after the timeout by completing it behind the engine's back.
    h.store.fail_next(
        "complete",
        [StoreError::Timeout { operation: "complete", after: Duration::from_secs(10) }],
    );
    let store = h.store.clone();
    let running = tokio::spawn(async move { d.run_once().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let job = h.job_of(id).await;
    let lease = JobLease { attempt: job.attempt, worker: job.leased_by.clone().unwrap(), job };
    let key = h.channel.sends()[0].client_key.clone();
    let outcome = MessageOutcome::Sent { provider_id: format!("mem-{key}"), at: START };
    store.complete(&lease, Some(outcome), h.engine.now()).await.unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Sent);
    assert!(
        h.drain_events().contains(&Event::MessageSent { account_id: h.account.id, message_id: id })
    );
    assert_eq!(h.channel.sends().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_send_whose_echo_was_stored_first_as_a_stray_row_is_merged_and_ends_sent() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    // After a crash, the provider's copy of the send came back without our client key and
    // was stored as the owner's message from another app.
    let mut echo = text("tg-77", "chat", "tg:1", "hello");
    echo.direction = Direction::Outbound;
    let stray = h.engine.deliver(h.account.id, echo).await.unwrap();
    assert_eq!(stray.disposition, IngestDisposition::Stored);
    h.drain_events();
    // The retried send is recognised by the provider (same client key) and answers its id.
    h.channel.script_sends([SendScript::OkWithId("tg-77".into())]);
    assert_eq!(Dispatcher::new(h.engine.clone()).run_once().await.unwrap(), 1);

    let m = h.store.message(id).await.unwrap();
    assert_eq!((m.status, m.provider_id.as_deref()), (MessageStatus::Sent, Some("tg-77")));
    assert!(h.store.message(stray.message_id).await.is_err(), "the stray row is gone");
    assert_eq!(h.store.messages(conversation, 10).await.unwrap().len(), 2, "first and ours");
    assert_eq!(
        h.drain_events(),
        vec![
            Event::MessageMerged { account_id: h.account.id, kept: id, removed: stray.message_id },
            Event::MessageSent { account_id: h.account.id, message_id: id },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_idempotency_key_returns_the_same_message_and_queues_nothing_more() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    let first = reply(conversation, "your order shipped").idempotency_key("order-7-shipped");
    let id = h.engine.send(None, first.clone().subject("Order 7")).await.unwrap();
    let again = h.engine.send(None, first.clone().subject("Order 7")).await.unwrap();
    assert_eq!(again, id, "a retry after a crash gets the same message");
    let jobs = h.store.jobs_in_state(JobState::Available, 10).await.unwrap();
    assert_eq!(jobs.len(), 1, "and queues nothing more");
    assert_eq!(h.store.message(id).await.unwrap().subject.as_deref(), Some("Order 7"));

    let other = reply(conversation, "a different text").idempotency_key("order-7-shipped");
    match h.engine.send(None, other).await {
        Err(EngineError::IdempotencyConflict { key, message }) => {
            assert_eq!((key.as_str(), message), ("order-7-shipped", id))
        }
        r => panic!("the same key with other content is an error: {r:?}"),
    }
    let new_key = reply(conversation, "your order shipped").idempotency_key("order-8-shipped");
    assert_ne!(h.engine.send(None, new_key).await.unwrap(), id, "another key, another message");

    // Another account may use the same key for its own message.
    let other_account = h
        .store
        .create_account(NewAccount::new(testing::MEMORY_KIND, "b"), h.engine.now())
        .await
        .unwrap();
    let out = h.engine.deliver(other_account.id, text("b-1", "chat-b", "tg:9", "hi")).await;
    let theirs = reply(out.unwrap().conversation_id, "your order shipped");
    let theirs = h.engine.send(None, theirs.idempotency_key("order-7-shipped")).await.unwrap();
    assert_ne!(theirs, id, "keys are unique per account");

    // The subject reaches the channel.
    Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    let sent = h.channel.sends();
    let ours = sent.iter().find(|m| m.message_id == id).expect("sent");
    assert_eq!(ours.subject.as_deref(), Some("Order 7"));
}

#[tokio::test(start_paused = true)]
async fn a_subject_with_a_line_break_is_refused_and_nothing_is_queued() {
    let h = harness().await;
    let conversation = h.conversation("chat").await;
    let evil = reply(conversation, "x").subject("hi\r\nBcc: everyone@example.org");
    match h.engine.send(None, evil).await {
        Err(EngineError::Invalid(v)) => assert_eq!(v.field, "subject"),
        r => panic!("{r:?}"),
    }
    assert!(h.store.jobs_in_state(JobState::Available, 10).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_job_the_store_failed_before_the_send_goes_soon_after_the_store_answers_again() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "hello")).await.unwrap();
    h.drain_events();
    // The database goes down right after the claim: reading the message fails, and so do
    // the first two tries to put the job back.
    store_down(&h, "message", 1);
    store_down(&h, "retry", 2);
    Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    assert!(h.channel.sends().is_empty(), "nothing was sent");
    assert_eq!(h.job_of(id).await.state, JobState::Running, "still ours, not put back yet");
    // Back after a few seconds: the job is put back then, long before its lease would run
    // out, and goes with the next dispatch.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let job = h.job_of(id).await;
    assert_eq!(job.state, JobState::Retryable, "put back once the store answered: {job:?}");
    let lease_end = START.plus(h.engine.config().job_lease_ttl());
    assert!(h.engine.now() < lease_end, "well before the lease ran out");
    tokio::time::sleep(h.engine.config().retry().delay(job.attempt)).await;
    Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Sent);
    assert_eq!(h.channel.sends().len(), 1);
}
