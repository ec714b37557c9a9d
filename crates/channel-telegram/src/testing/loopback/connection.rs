//! One client connection of the loopback server: framing, decryption, dispatch, pushes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use grammers_crypto::DequeBuffer;
use grammers_mtproto::transport::{self, Full, Transport};
use grammers_tl_types as tl;
use tl::{Cursor, Deserializable, Serializable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::wire::{self, PlainMessage, ServerSession};
use super::{Fault, RecordedRequest, Reply, Shared};

/// What a connection task is asked to write.
pub(crate) enum Outgoing {
    /// An answer (an `rpc_result`, or a `pong`).
    Answer(Vec<u8>),
    /// A pushed update.
    Push(Vec<u8>),
    /// Close the connection.
    Close,
}

const PING: u32 = 0x7abe_77ec;
const PING_DELAY_DISCONNECT: u32 = 0xf342_7b8c;
const MSGS_ACK: u32 = 0x62d6_b459;
const INVOKE_WITH_LAYER: u32 = 0xda9b_0d0d;
const INIT_CONNECTION: u32 = 0xc1cd_5ea9;
const INVOKE_WITHOUT_UPDATES: u32 = 0xbf9459b7;
const INVOKE_AFTER_MSG: u32 = 0xcb9f_372d;
const READ_BUFFER: usize = 2 * 1024 * 1024;

/// The rest of a buffer, to deserialize generic wrappers (`invokeWithLayer`, `initConnection`).
struct RawQuery(Vec<u8>);

impl Deserializable for RawQuery {
    fn deserialize(buf: &mut Cursor<'_>) -> tl::deserialize::Result<Self> {
        let mut out = Vec::new();
        buf.read_to_end(&mut out)?;
        Ok(RawQuery(out))
    }
}

/// Strips `invokeWithLayer`, `initConnection` and similar wrappers; returns the inner query
/// and the api_id of an `initConnection`, if there was one.
fn unwrap_query(mut body: Vec<u8>) -> (Vec<u8>, Option<i32>) {
    let mut api_id = None;
    for _ in 0..8 {
        let Some(ctor) = body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) else {
            break;
        };
        let rest = &body[4..];
        let inner = match ctor {
            INVOKE_WITH_LAYER => {
                tl::functions::InvokeWithLayer::<RawQuery>::from_bytes(rest).map(|q| q.query.0)
            }
            INIT_CONNECTION => {
                tl::functions::InitConnection::<RawQuery>::from_bytes(rest).map(|q| {
                    api_id = Some(q.api_id);
                    q.query.0
                })
            }
            INVOKE_WITHOUT_UPDATES => {
                tl::functions::InvokeWithoutUpdates::<RawQuery>::from_bytes(rest).map(|q| q.query.0)
            }
            INVOKE_AFTER_MSG => {
                tl::functions::InvokeAfterMsg::<RawQuery>::from_bytes(rest).map(|q| q.query.0)
            }
            _ => break,
        };
        match inner {
            Ok(inner) => body = inner,
            Err(_) => break,
        }
    }
    (body, api_id)
}

pub(crate) struct Connection {
    pub id: u64,
    pub shared: Arc<Shared>,
    pub cancel: CancellationToken,
    pub tx: mpsc::UnboundedSender<Outgoing>,
    pub rx: mpsc::UnboundedReceiver<Outgoing>,
    pub fault: watch::Receiver<Fault>,
}

impl Connection {
    pub(crate) async fn serve(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let mut transport = Full::new();
        let mut session: Option<ServerSession> = None;
        let mut queued: VecDeque<Outgoing> = VecDeque::new();
        let mut buf = vec![0u8; READ_BUFFER];
        let mut tail = 0usize;
        loop {
            let fault = self.fault.borrow().clone();
            let reading = !matches!(fault, Fault::HalfOpen);
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                changed = self.fault.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                n = rd.read(&mut buf[tail..]), if reading => {
                    let n = match n {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    tail += n;
                    let mut offset = 0;
                    let mut close = false;
                    loop {
                        match transport.unpack(&mut buf[offset..tail]) {
                            Ok(unpacked) => {
                                let payload = buf[offset..tail][unpacked.data_range].to_vec();
                                offset += unpacked.next_offset;
                                if !matches!(fault, Fault::None | Fault::Delay(_)) {
                                    continue; // blackholed: read and forget
                                }
                                if !self.on_packet(&payload, &mut session) {
                                    close = true;
                                    break;
                                }
                            }
                            Err(transport::Error::MissingBytes) => break,
                            Err(_) => {
                                close = true;
                                break;
                            }
                        }
                    }
                    buf.copy_within(offset..tail, 0);
                    tail -= offset;
                    if close || tail == buf.len() {
                        break;
                    }
                    if session.is_some() {
                        while let Some(out) = queued.pop_front() {
                            if !self.write(&mut wr, &mut transport, &mut session, out).await {
                                return;
                            }
                        }
                    }
                }
                out = self.rx.recv() => {
                    let Some(out) = out else { break };
                    if matches!(out, Outgoing::Close) {
                        break;
                    }
                    if !matches!(fault, Fault::None | Fault::Delay(_)) {
                        continue; // a stalled server answers nothing
                    }
                    if session.is_none() {
                        queued.push_back(out);
                        continue;
                    }
                    if !self.write(&mut wr, &mut transport, &mut session, out).await {
                        break;
                    }
                }
            }
        }
        self.shared.forget_connection(self.id);
    }

    async fn write(
        &self,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
        transport: &mut Full,
        session: &mut Option<ServerSession>,
        out: Outgoing,
    ) -> bool {
        let Some(session) = session.as_mut() else {
            return true;
        };
        let payload = match out {
            Outgoing::Answer(body) => session.encrypt(&body, true, true),
            Outgoing::Push(body) => session.encrypt(&body, false, true),
            Outgoing::Close => return false,
        };
        let mut frame = DequeBuffer::with_capacity(payload.len() + 16, 8);
        frame.extend(payload.iter().copied());
        transport.pack(&mut frame);
        wr.write_all(frame.as_ref()).await.is_ok()
    }

    /// Handles one decrypted packet; false closes the connection.
    fn on_packet(&self, payload: &[u8], session: &mut Option<ServerSession>) -> bool {
        let packet = match wire::decrypt_client_packet(&self.shared.auth_key, payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "loopback: refusing a packet");
                return false;
            }
        };
        match session {
            Some(s) if s.session_id() != packet.session_id => {
                // A new client session on the same connection: start over with its id.
                *session = Some(ServerSession::new(self.shared.auth_key, &packet));
            }
            Some(_) => {}
            None => *session = Some(ServerSession::new(self.shared.auth_key, &packet)),
        }
        let mut messages = Vec::new();
        if wire::flatten(packet.message, &mut messages).is_err() {
            return false;
        }
        for m in messages {
            self.on_message(m);
        }
        true
    }

    fn on_message(&self, m: PlainMessage) {
        let Some(ctor) = m.constructor() else { return };
        if ctor == MSGS_ACK {
            return;
        }
        let (body, api_id) = unwrap_query(m.body);
        let Some(ctor) = body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) else {
            return;
        };
        let request = RecordedRequest {
            constructor_id: ctor,
            name: tl::name_for_id(ctor),
            body,
            msg_id: m.msg_id,
            connection: self.id,
            api_id,
        };
        let reply = self.shared.reply_for(&request);
        self.dispatch(&request, reply);
        // Recorded once its answer is queued: a test that waits for a request and then
        // pushes an update knows the answer goes out first.
        self.shared.record(request);
    }

    fn dispatch(&self, request: &RecordedRequest, reply: Reply) {
        let (mut delay, outs) = self.resolve(request, reply, Duration::ZERO);
        if let Fault::Delay(d) = &*self.fault.borrow() {
            delay += *d;
        }
        if delay.is_zero() {
            for out in outs {
                let _ = self.tx.send(out);
            }
        } else {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for out in outs {
                    let _ = tx.send(out);
                }
            });
        }
    }

    /// What to write for `reply`, and after how long.
    fn resolve(
        &self,
        request: &RecordedRequest,
        reply: Reply,
        delay: Duration,
    ) -> (Duration, Vec<Outgoing>) {
        let is_ping = matches!(request.constructor_id, PING | PING_DELAY_DISCONNECT);
        let answer = |result: Vec<u8>| {
            if is_ping {
                // pong travels on its own, not inside rpc_result.
                Outgoing::Answer(result)
            } else {
                Outgoing::Answer(wire::rpc_result(request.msg_id, &self.shared.maybe_gzip(result)))
            }
        };
        let error = |code: i32, message: &str| {
            Outgoing::Answer(wire::rpc_result(request.msg_id, &rpc_error(code, message)))
        };
        let outs = match reply {
            Reply::Default => {
                let result = if is_ping {
                    let ping_id = i64::from_bytes(request.body.get(4..12).unwrap_or_default())
                        .unwrap_or_default();
                    Ok(tl::enums::Pong::from(tl::types::Pong { msg_id: request.msg_id, ping_id })
                        .to_bytes())
                } else {
                    self.shared.world_answer(request)
                };
                match result {
                    Ok(bytes) => vec![answer(bytes)],
                    Err((code, message)) => vec![error(code, &message)],
                }
            }
            Reply::Result(bytes) => vec![answer(bytes)],
            Reply::RpcError { code, message } => vec![error(code, &message)],
            Reply::NoReply => Vec::new(),
            Reply::DropConnection => vec![Outgoing::Close],
            Reply::ProcessThenDrop => {
                let _ = self.shared.world_answer(request);
                vec![Outgoing::Close]
            }
            Reply::ProcessThenHold => {
                let _ = self.shared.world_answer(request);
                Vec::new()
            }
            Reply::Delayed(after, inner) => return self.resolve(request, *inner, delay + after),
        };
        (delay, outs)
    }
}

fn rpc_error(code: i32, message: &str) -> Vec<u8> {
    tl::enums::RpcError::from(tl::types::RpcError {
        error_code: code,
        error_message: message.to_owned(),
    })
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_are_stripped_down_to_the_query() {
        let q = tl::functions::InvokeWithLayer {
            layer: tl::LAYER,
            query: tl::functions::InitConnection {
                api_id: 42,
                device_model: "d".into(),
                system_version: "s".into(),
                app_version: "a".into(),
                system_lang_code: "en".into(),
                lang_pack: String::new(),
                lang_code: "en".into(),
                proxy: None,
                params: None,
                query: tl::functions::help::GetConfig {},
            },
        };
        let (inner, api_id) = unwrap_query(q.to_bytes());
        assert_eq!(api_id, Some(42));
        assert_eq!(inner, tl::functions::help::GetConfig {}.to_bytes());
    }
}
