//! People writing in: mail through OpenSMTPD (delivered into Dovecot over LMTP) and Telegram
//! messages through the loopback server, each carrying a token `chaos-in-N` that the checks
//! count in the store and at the recipients.

use std::sync::Arc;
use std::time::SystemTime;

use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::loopback::Loopback;

/// An account of the run.
#[derive(Clone, Debug)]
pub enum Account {
    /// A mailbox: its address; the customer who writes to it.
    Email { address: String, customer: String },
    /// Loopback server `k`; the user id who writes to it.
    Telegram { k: usize, user: i64 },
}

/// One message a person sent.
#[derive(Clone, Debug)]
pub struct Sent {
    /// Its token: `chaos-in-N`.
    pub n: u64,
    /// The account (index into the run's accounts).
    pub account: usize,
    /// When it was handed to the server.
    pub at: SystemTime,
}

/// Sends the people's messages.
pub struct Traffic {
    smtp: AsyncSmtpTransport<Tokio1Executor>,
    loopback: Arc<Loopback>,
    next: u64,
}

impl Traffic {
    /// Through OpenSMTPD on `smtp_port` and `loopback`.
    pub fn new(smtp_port: u16, loopback: Arc<Loopback>) -> Self {
        let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(smtp_port)
            .build();
        Self { smtp, loopback, next: 1 }
    }

    /// Sends the next message to `accounts[i]`.
    pub async fn send(&mut self, accounts: &[Account], i: usize) -> Result<Sent, String> {
        let n = self.next;
        self.next += 1;
        let at = SystemTime::now();
        match &accounts[i] {
            Account::Email { address, customer } => {
                let raw = format!(
                    "From: {customer}\r\nTo: {address}\r\nSubject: Question chaos-in-{n}\r\n\
Message-ID: <chaos-in-{n}@customers.example.org>\r\nDate: {date}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nHello, this is chaos-in-{n}.\r\n",
                    date = httpdate(at),
                );
                let envelope = Envelope::new(
                    Some(customer.parse().map_err(|e| format!("{customer}: {e}"))?),
                    vec![address.parse().map_err(|e| format!("{address}: {e}"))?],
                )
                .map_err(|e| format!("envelope: {e}"))?;
                // OpenSMTPD takes 100 mails per session, then answers 452 on the pooled
                // connection: a transient refusal is tried again on a new one.
                let mut tries = 0;
                while let Err(e) = self.smtp.send_raw(&envelope, raw.as_bytes()).await {
                    tries += 1;
                    if !e.is_transient() || tries == 3 {
                        return Err(format!("OpenSMTPD refused chaos-in-{n}: {e}"));
                    }
                }
            }
            Account::Telegram { k, user } => {
                self.loopback.command(*k, &format!("incoming {user} chaos-in-{n}")).await?;
            }
        }
        Ok(Sent { n, account: i, at })
    }
}

/// An RFC 5322 date (UTC).
fn httpdate(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::clock::civil_from_days(days as i64);
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{d} {} {y} {:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
