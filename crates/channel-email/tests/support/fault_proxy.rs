//! A TCP proxy in front of Dovecot that breaks connections on purpose: resets, clean cuts in
//! the middle of a response (a FETCH, mostly), blackholes (the peer goes silent), refused
//! connections and slow links. Each connection gets one fault until the budget is spent;
//! after that it forwards faithfully.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The kinds of fault, counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Accept, then close at once.
    Refuse,
    /// Forward, then reset (RST) after some bytes from the server.
    Reset,
    /// Forward, then close cleanly after some bytes from the server (mid-response EOF).
    Cut,
    /// Forward, then forward nothing more, keeping the socket open.
    Blackhole,
    /// Forward with delays on every chunk, then cut after a while.
    Slow,
}

/// Counters of the faults injected.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub total: AtomicUsize,
    pub refuse: AtomicUsize,
    pub reset: AtomicUsize,
    pub cut: AtomicUsize,
    pub blackhole: AtomicUsize,
    pub slow: AtomicUsize,
}

impl FaultCounts {
    fn count(&self, f: Fault) {
        self.total.fetch_add(1, Ordering::SeqCst);
        let c = match f {
            Fault::Refuse => &self.refuse,
            Fault::Reset => &self.reset,
            Fault::Cut => &self.cut,
            Fault::Blackhole => &self.blackhole,
            Fault::Slow => &self.slow,
        };
        c.fetch_add(1, Ordering::SeqCst);
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} faults: {} refused, {} resets, {} cuts, {} blackholes, {} slow",
            self.total(),
            self.refuse.load(Ordering::SeqCst),
            self.reset.load(Ordering::SeqCst),
            self.cut.load(Ordering::SeqCst),
            self.blackhole.load(Ordering::SeqCst),
            self.slow.load(Ordering::SeqCst)
        )
    }
}

/// The proxy: listens on `port`, forwards to `upstream`.
pub struct FaultProxy {
    pub port: u16,
    pub counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy that injects `budget` faults.
    pub async fn start(upstream: u16, budget: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counts = Arc::new(FaultCounts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let fault = (c.total() < budget).then(|| {
                        let mut rng = rand::rng();
                        match rng.random_range(0..100) {
                            0..10 => Fault::Refuse,
                            10..35 => Fault::Reset,
                            35..75 => Fault::Cut,
                            75..85 => Fault::Blackhole,
                            _ => Fault::Slow,
                        }
                    });
                    let _ = serve(client, upstream, fault, &c).await;
                });
            }
        });
        Self { port, counts, task }
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: u16,
    fault: Option<Fault>,
    counts: &FaultCounts,
) -> std::io::Result<()> {
    if fault == Some(Fault::Refuse) {
        counts.count(Fault::Refuse);
        return Ok(());
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    // The server-to-client byte at which the fault strikes: anywhere from the greeting to
    // deep inside a FETCH of a batch.
    let strike_at: usize = rand::rng().random_range(1..12_000);
    let slow_until = Instant::now() + Duration::from_millis(rand::rng().random_range(100..400));
    // Faults also strike on time, so that a quiet connection (IDLE) is broken too.
    let strike_time = Instant::now() + Duration::from_millis(rand::rng().random_range(5..200));
    let mut sent = 0usize;
    let (mut cbuf, mut sbuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            r = client.read(&mut cbuf) => {
                let n = r?;
                if n == 0 { return Ok(()); }
                server.write_all(&cbuf[..n]).await?;
            }
            r = server.read(&mut sbuf) => {
                let n = r?;
                if n == 0 { return Ok(()); }
                let mut chunk = &sbuf[..n];
                if matches!(fault, Some(Fault::Reset | Fault::Cut | Fault::Blackhole)) && sent + n >= strike_at {
                    chunk = &sbuf[..strike_at.saturating_sub(sent).min(n)];
                    client.write_all(chunk).await?;
                    return strike(client, server, fault, counts).await;
                }
                if fault == Some(Fault::Slow) {
                    let pause = Duration::from_millis(rand::rng().random_range(0..25));
                    tokio::time::sleep(pause).await;
                }
                client.write_all(chunk).await?;
                sent += n;
            }
            _ = tokio::time::sleep_until(strike_time), if matches!(fault, Some(Fault::Reset | Fault::Cut | Fault::Blackhole)) => {
                return strike(client, server, fault, counts).await;
            }
            _ = tokio::time::sleep_until(slow_until), if fault == Some(Fault::Slow) => {
                counts.count(Fault::Slow);
                return Ok(());
            }
        }
    }
}

async fn strike(
    mut client: TcpStream,
    server: TcpStream,
    fault: Option<Fault>,
    counts: &FaultCounts,
) -> std::io::Result<()> {
    let f = fault.unwrap_or(Fault::Cut);
    counts.count(f);
    drop(server);
    match f {
        Fault::Reset => {
            let _ = client.set_zero_linger();
        }
        Fault::Blackhole => {
            // Swallow whatever the client says until it gives up.
            let mut sink = vec![0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(60);
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, client.read(&mut sink)).await {
                if n == 0 {
                    break;
                }
            }
        }
        _ => {}
    }
    Ok(())
}
