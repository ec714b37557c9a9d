//! Configuration of a Telegram channel: app credentials, data centres, timeouts, liveness.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::Duration;

/// Settings of a [`TelegramChannel`](crate::TelegramChannel). Defaults follow the system this
/// replaces: resolve 15 s, send 30 s, media 60 s plus 2 s per MiB, a ping every 30 s with a
/// 10 s deadline.
///
/// ```
/// use std::time::Duration;
/// use channel_telegram::TelegramConfig;
///
/// let config = TelegramConfig::new(12345)
///     .ping_interval(Duration::from_secs(20))
///     .send_timeout(Duration::from_secs(20));
/// assert_eq!(config.api_id(), 12345);
/// ```
#[derive(Clone, Debug)]
pub struct TelegramConfig {
    pub(crate) api_id: i32,
    pub(crate) resolve_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) media_timeout: Duration,
    pub(crate) media_timeout_per_mib: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_deadline: Duration,
    pub(crate) sync_interval: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) updates_capacity: usize,
    pub(crate) max_upload_size: u64,
    pub(crate) max_download_size: u64,
    pub(crate) data_centres: BTreeMap<i32, SocketAddrV4>,
    pub(crate) home_dc: Option<i32>,
}

impl TelegramConfig {
    /// Defaults for the app with this `api_id` (from <https://my.telegram.org>).
    pub fn new(api_id: i32) -> Self {
        Self {
            api_id,
            resolve_timeout: Duration::from_secs(15),
            send_timeout: Duration::from_secs(30),
            media_timeout: Duration::from_secs(60),
            media_timeout_per_mib: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(20),
            ping_interval: Duration::from_secs(30),
            ping_deadline: Duration::from_secs(10),
            sync_interval: Duration::from_secs(30),
            reconnect_min: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(80),
            updates_capacity: 10_000,
            max_upload_size: 2000 * 1024 * 1024,
            max_download_size: 100 * 1024 * 1024,
            data_centres: BTreeMap::new(),
            home_dc: None,
        }
    }

    /// The app's api_id.
    pub fn api_id(&self) -> i32 {
        self.api_id
    }

    /// Limit for resolving a peer (default 15 s).
    pub fn resolve_timeout(mut self, d: Duration) -> Self {
        self.resolve_timeout = d;
        self
    }

    /// Limit for sending a text message or fetching a history page (default 30 s).
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.send_timeout = d;
        self
    }

    /// Limit for media: `base` plus `per_mib` for every MiB (default 60 s + 2 s/MiB).
    pub fn media_timeout(mut self, base: Duration, per_mib: Duration) -> Self {
        self.media_timeout = base;
        self.media_timeout_per_mib = per_mib;
        self
    }

    /// Limit for connecting and the first answer of a new connection (default 20 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How often the connection is pinged (default 30 s).
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = d;
        self
    }

    /// How long a pong may take before the connection counts as stalled and is rebuilt
    /// (default 10 s).
    pub fn ping_deadline(mut self, d: Duration) -> Self {
        self.ping_deadline = d;
        self
    }

    /// How often the update state and the peer cache are written when no message carried
    /// them (default 30 s).
    pub fn sync_interval(mut self, d: Duration) -> Self {
        self.sync_interval = d;
        self
    }

    /// Reconnect backoff bounds (default 2 s to 80 s, jittered).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// Capacity of grammers' updates channel, which drops updates when full (grammers'
    /// default is 100; ours 10 000).
    pub fn updates_capacity(mut self, n: usize) -> Self {
        self.updates_capacity = n.max(1);
        self
    }

    /// The largest attachment a send accepts (default 2000 MiB, Telegram's limit for
    /// accounts without Premium); a larger one is refused as invalid input before anything
    /// is uploaded.
    pub fn max_upload_size(mut self, bytes: u64) -> Self {
        self.max_upload_size = bytes;
        self
    }

    /// The largest received attachment that is downloaded (default 100 MiB: it is held in
    /// memory until the engine stores it); a larger one is delivered without its bytes.
    pub fn max_download_size(mut self, bytes: u64) -> Self {
        self.max_download_size = bytes;
        self
    }

    /// Where data centre `id` is reached, over the address Telegram's own configuration gives
    /// (a proxy, a test server, the loopback server of the `testing` feature): the auth key
    /// stays in the session, the address is this one.
    pub fn data_centre(mut self, id: i32, address: SocketAddrV4) -> Self {
        self.data_centres.insert(id, address);
        self
    }

    /// The data centre a new login starts at (default: Telegram's DC 2). Telegram moves the
    /// login to the account's home DC when it lives elsewhere.
    pub fn home_dc(mut self, id: i32) -> Self {
        self.home_dc = Some(id);
        self
    }

    /// The data centres set with [`TelegramConfig::data_centre`].
    pub fn data_centres(&self) -> &BTreeMap<i32, SocketAddrV4> {
        &self.data_centres
    }

    /// The media limit for `size` bytes.
    pub fn media_timeout_for(&self, size: u64) -> Duration {
        let mib = u32::try_from(size.div_ceil(1024 * 1024)).unwrap_or(u32::MAX);
        self.media_timeout.saturating_add(self.media_timeout_per_mib.saturating_mul(mib))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_timeout_scales_with_size() {
        let c = TelegramConfig::new(1);
        assert_eq!(c.media_timeout_for(0), Duration::from_secs(60));
        assert_eq!(c.media_timeout_for(10 * 1024 * 1024), Duration::from_secs(80));
    }
}
