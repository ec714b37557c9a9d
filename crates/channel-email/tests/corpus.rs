//! The corpus of malformed and hostile mail through parsing and the engine's checks, without
//! a server: every case gives a storable message with the defects it must have, and arbitrary
//! bytes never panic and always give a storable message. (`corpus_engine.rs` runs the same
//! corpus through Dovecot and the engine on SQLite and PostgreSQL.)

mod support;

use channel_core::InboundMessage;
use channel_core::blob::DEFAULT_MAX_BLOB_SIZE;
use channel_core::validate::{Limits, check_inbound, degrade_inbound};
use channel_email::testing::{FolderRole, to_inbound};
use proptest::prelude::*;
use support::corpus::{Case, Seen, cases};

/// What the engine stores of `raw`, found in INBOX.
fn stored(raw: &[u8]) -> InboundMessage {
    let m = to_inbound(raw, FolderRole::Inbox, None);
    let m = degrade_inbound(m, &Limits::DEFAULT, DEFAULT_MAX_BLOB_SIZE);
    check_inbound(&m, &Limits::DEFAULT).expect("a degraded message is always storable");
    m
}

fn seen(m: &InboundMessage) -> Seen {
    Seen {
        text: m.text.clone(),
        defects: m.defects.iter().map(|d| d.code.clone()).collect(),
        attachments: m
            .attachments
            .iter()
            .map(|a| (a.name.clone(), a.mime_type.clone(), a.data.len() as u64))
            .collect(),
    }
}

#[test]
fn every_case_of_the_corpus_is_storable_with_its_defects_and_nothing_lost() {
    for case in cases(true) {
        let m = stored(&case.raw);
        Case::check(&case, &seen(&m));
    }
}

#[test]
fn a_well_formed_mail_has_no_defect_and_no_raw_copy() {
    let (_, raw) = support::corpus::canary(0);
    let m = stored(&raw);
    assert!(m.defects.is_empty(), "{:?}", m.defects);
    assert!(m.attachments.is_empty());
}

#[test]
fn two_alerts_differing_only_in_their_body_get_two_ids() {
    let all = cases(false);
    let id = |name: &str| stored(&all.iter().find(|c| c.name == name).unwrap().raw).provider_id;
    let (a, b) =
        (id("alert-without-message-id-host-a.eml"), id("alert-without-message-id-host-b.eml"));
    assert_ne!(a, b);
}

#[test]
fn the_same_message_delivered_with_trace_fields_and_filed_by_append_has_one_id() {
    let filed = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/no-message-id-filed-in-two-folders.eml"),
    )
    .unwrap();
    let delivered = support::corpus::with_trace_fields(&filed);
    let inbox = to_inbound(&delivered, FolderRole::Inbox, None);
    let sent = to_inbound(&filed, FolderRole::Sent, None);
    assert_eq!(inbox.provider_id, sent.provider_id);
    assert_eq!(sent.client_key.as_deref(), Some(sent.provider_id.as_str()));
}

#[test]
fn the_2000_byte_message_id_is_stored_as_its_stable_shortened_form() {
    let m = stored(&support::corpus::long_message_id());
    assert_eq!(m.provider_id, channel_core::validate::shortened_id(&support::corpus::long_id()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_always_give_a_storable_message(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let m = stored(&raw);
        prop_assert!(!m.provider_id.is_empty());
    }

    #[test]
    fn arbitrary_mail_like_text_always_gives_a_storable_message(
        head in "([A-Za-z-]{1,12}: [ -~\u{80}-\u{10FFFF}\x00]{0,40}\r?\n){0,8}",
        sep in "(\r?\n)?",
        body in "[ -~\r\n\x00\u{80}-\u{3FF}=-]{0,400}",
        boundary in "[a-z]{1,5}",
    ) {
        let raw = format!(
            "{head}Content-Type: multipart/mixed; boundary={boundary}\r\n{sep}--{boundary}\r\n{body}\r\n--{boundary}\r\n{body}"
        );
        let m = stored(raw.as_bytes());
        prop_assert!(!m.provider_id.is_empty());
    }
}

#[test]
fn a_raw_message_over_the_blob_limit_is_left_out_and_recorded() {
    let raw = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/missing-boundary.eml"),
    )
    .unwrap();
    let m = to_inbound(&raw, FolderRole::Inbox, None);
    assert_eq!(m.attachments[0].name.as_deref(), Some("message.eml"));
    let m = degrade_inbound(m, &Limits::DEFAULT, 64);
    check_inbound(&m, &Limits::DEFAULT).expect("storable");
    assert!(m.attachments.iter().all(|a| a.name.as_deref() != Some("message.eml")));
    let left = m
        .defects
        .iter()
        .find(|d| d.code == channel_core::defect::ATTACHMENT_TOO_LARGE)
        .expect("the raw message left out is recorded");
    let what = left.left_out.as_ref().expect("what was left out");
    assert_eq!(
        (what.name.as_deref(), what.mime_type.as_str(), left.size),
        (Some("message.eml"), "message/rfc822", Some(raw.len() as u64))
    );
    assert!(m.defects.iter().any(|d| d.code == channel_email::defect::MISSING_BOUNDARY));
}
