//! A TCP proxy in front of the loopback MTProto server that breaks its connections on purpose,
//! as a bad network does: resets (RST), blackholes (nothing forwarded either way while the
//! sockets stay open, until the client's own ping or timeout gives up), cuts in the middle of
//! a server reply (part of a chunk of the server's answer forwarded, then a clean close in the
//! middle of an MTProto frame) and delays (every chunk held back for a while, the link still
//! up). Faults are drawn from a seeded generator: each connection gets its own generator,
//! seeded from the proxy's in the order connections are accepted, so that a seed replays the
//! same faults. While faulting is on, every connection gets faults one after another (a delay
//! is followed by the next fault) until one ends it; [`FaultProxy::heal`] stops that, and
//! from then on the proxy forwards faithfully.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection is reset (RST to the client), at once.
    Reset,
    /// Nothing is forwarded any more, either way; the sockets stay open until the client
    /// closes its own.
    Blackhole,
    /// The next chunk of the server's reply is forwarded in part, then the connection is
    /// closed cleanly: the client reads the start of a frame, then the end of the stream.
    CutMidReply,
    /// Every chunk, either way, is held back for a while; the connection goes on.
    Delay,
}

/// How the faults are drawn and timed.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Weights of reset, blackhole, cut mid-reply and delay.
    pub weights: [u32; 4],
    /// The time from a connection's start (or from the end of a delay) to its next fault.
    pub strike_after: (Duration, Duration),
    /// How long a delay lasts.
    pub delay_window: (Duration, Duration),
    /// How long each chunk is held back during a delay.
    pub delay_per_chunk: (Duration, Duration),
    /// How long a blackholed connection is kept before the proxy closes it itself (a client
    /// that never notices is counted: [`FaultCounts::blackholes_unnoticed`]).
    pub blackhole_limit: Duration,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            weights: [25, 25, 25, 25],
            strike_after: (Duration::from_millis(10), Duration::from_millis(400)),
            delay_window: (Duration::from_millis(100), Duration::from_millis(800)),
            delay_per_chunk: (Duration::from_millis(5), Duration::from_millis(400)),
            blackhole_limit: Duration::from_secs(20),
        }
    }
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct FaultCounts {
    connections: AtomicUsize,
    resets: AtomicUsize,
    blackholes: AtomicUsize,
    blackholes_noticed: AtomicUsize,
    blackholes_unnoticed: AtomicUsize,
    cuts: AtomicUsize,
    delays: AtomicUsize,
    delayed_chunks: AtomicUsize,
    /// Longest time from a blackhole to the client closing its socket, in milliseconds.
    longest_blackhole_ms: AtomicUsize,
}

impl FaultCounts {
    fn add(&self, fault: Fault) {
        let counter = match fault {
            Fault::Reset => &self.resets,
            Fault::Blackhole => &self.blackholes,
            Fault::CutMidReply => &self.cuts,
            Fault::Delay => &self.delays,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    /// Faults applied so far (a cut counts once a reply was cut, a blackhole once it
    /// started).
    pub fn total(&self) -> usize {
        self.resets() + self.blackholes() + self.cuts() + self.delays()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections reset.
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }

    /// Connections blackholed.
    pub fn blackholes(&self) -> usize {
        self.blackholes.load(Ordering::SeqCst)
    }

    /// Blackholed connections the client closed itself.
    pub fn blackholes_noticed(&self) -> usize {
        self.blackholes_noticed.load(Ordering::SeqCst)
    }

    /// Blackholed connections the client kept past [`FaultPlan::blackhole_limit`].
    pub fn blackholes_unnoticed(&self) -> usize {
        self.blackholes_unnoticed.load(Ordering::SeqCst)
    }

    /// Replies cut in the middle.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Delays started.
    pub fn delays(&self) -> usize {
        self.delays.load(Ordering::SeqCst)
    }

    /// The longest time a client took to give up on a blackholed connection.
    pub fn longest_blackhole(&self) -> Duration {
        Duration::from_millis(self.longest_blackhole_ms.load(Ordering::SeqCst) as u64)
    }

    /// One line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} faults on {} connections: {} resets, {} blackholes ({} noticed by the client, \
             the slowest after {:?}; {} never), {} replies cut in the middle, {} delays ({} \
             chunks held back)",
            self.total(),
            self.connections(),
            self.resets(),
            self.blackholes(),
            self.blackholes_noticed(),
            self.longest_blackhole(),
            self.blackholes_unnoticed(),
            self.cuts(),
            self.delays(),
            self.delayed_chunks.load(Ordering::SeqCst),
        )
    }
}

struct Shared {
    upstream: SocketAddr,
    plan: FaultPlan,
    rng: Mutex<StdRng>,
    faulting: AtomicBool,
    counts: FaultCounts,
}

/// The proxy. Dropping it stops accepting; open connections end with their peers.
pub struct FaultProxy {
    addr: SocketAddrV4,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of `upstream`, faulting from the
    /// start, its faults drawn from `seed`.
    pub async fn start(upstream: SocketAddr, seed: u64, plan: FaultPlan) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            upstream,
            plan,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            faulting: AtomicBool::new(true),
            counts: FaultCounts::default(),
        });
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    shared.counts.connections.fetch_add(1, Ordering::SeqCst);
                    let seed = shared.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let _ = serve(client, &shared, StdRng::seed_from_u64(seed)).await;
                    });
                }
            }
        });
        Self { addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), shared, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// What the proxy did so far.
    pub fn counts(&self) -> &FaultCounts {
        &self.shared.counts
    }

    /// No more faults: delays end, cuts that were waiting for a reply are called off, and
    /// every new connection is forwarded faithfully. A connection already blackholed stays
    /// so until its client gives up on it.
    pub fn heal(&self) {
        self.shared.faulting.store(false, Ordering::SeqCst);
    }

    fn faulting(shared: &Shared) -> bool {
        shared.faulting.load(Ordering::SeqCst)
    }
}

fn between(rng: &mut StdRng, (low, high): (Duration, Duration)) -> Duration {
    if high <= low { low } else { rng.random_range(low..high) }
}

fn draw(rng: &mut StdRng, plan: &FaultPlan) -> (Fault, Instant) {
    let total: u32 = plan.weights.iter().sum();
    let mut pick = rng.random_range(0..total.max(1));
    let mut fault = Fault::Delay;
    for (w, f) in
        plan.weights.iter().zip([Fault::Reset, Fault::Blackhole, Fault::CutMidReply, Fault::Delay])
    {
        if pick < *w {
            fault = f;
            break;
        }
        pick -= w;
    }
    (fault, Instant::now() + between(rng, plan.strike_after))
}

/// Forwards one connection, striking it with faults while the proxy is faulting.
async fn serve(mut client: TcpStream, shared: &Shared, mut rng: StdRng) -> std::io::Result<()> {
    let mut server = TcpStream::connect(shared.upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let plan = &shared.plan;
    let mut next = Some(draw(&mut rng, plan));
    let mut cut_armed = false;
    let mut delay_until: Option<Instant> = None;
    let (mut cbuf, mut sbuf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let strike_at = next.map(|(_, at)| at);
        let delaying =
            delay_until.is_some_and(|until| Instant::now() < until) && FaultProxy::faulting(shared);
        tokio::select! {
            r = client.read(&mut cbuf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                if delaying {
                    hold_back(&mut rng, shared).await;
                }
                server.write_all(&cbuf[..n]).await?;
            }
            r = server.read(&mut sbuf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                if cut_armed && FaultProxy::faulting(shared) {
                    // Part of this chunk, never all of it: the client is left inside a frame.
                    let part = if n > 1 { rng.random_range(1..n) } else { 0 };
                    client.write_all(&sbuf[..part]).await?;
                    shared.counts.add(Fault::CutMidReply);
                    client.shutdown().await?;
                    return Ok(());
                }
                if delaying {
                    hold_back(&mut rng, shared).await;
                }
                client.write_all(&sbuf[..n]).await?;
            }
            _ = tokio::time::sleep_until(strike_at.unwrap_or_else(Instant::now)),
                if strike_at.is_some() && FaultProxy::faulting(shared) =>
            {
                let Some((fault, _)) = next.take() else { continue };
                match fault {
                    Fault::Reset => {
                        shared.counts.add(Fault::Reset);
                        client.set_zero_linger()?;
                        return Ok(());
                    }
                    Fault::Blackhole => {
                        shared.counts.add(Fault::Blackhole);
                        return blackhole(client, server, shared).await;
                    }
                    Fault::CutMidReply => cut_armed = true,
                    Fault::Delay => {
                        shared.counts.add(Fault::Delay);
                        let window = between(&mut rng, plan.delay_window);
                        delay_until = Some(Instant::now() + window);
                        // The next fault comes after the delay.
                        let (f, at) = draw(&mut rng, plan);
                        next = Some((f, at + window));
                    }
                }
            }
        }
    }
}

async fn hold_back(rng: &mut StdRng, shared: &Shared) {
    shared.counts.delayed_chunks.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(between(rng, shared.plan.delay_per_chunk)).await;
}

/// Forwards nothing more, either way, and keeps both sockets open until the client closes
/// its own (what the client sends is read and dropped, as a network that loses every
/// packet; the server's side is not read at all).
async fn blackhole(
    mut client: TcpStream,
    server: TcpStream,
    shared: &Shared,
) -> std::io::Result<()> {
    let started = Instant::now();
    let deadline = started + shared.plan.blackhole_limit;
    let mut sink = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, client.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                let took = started.elapsed().as_millis() as usize;
                shared.counts.blackholes_noticed.fetch_add(1, Ordering::SeqCst);
                shared.counts.longest_blackhole_ms.fetch_max(took, Ordering::SeqCst);
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => {
                shared.counts.blackholes_unnoticed.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    drop(server);
    Ok(())
}
