//! What the console's browser tests share: `inbox demo` started as a process (its standard
//! input takes the demo's commands, its standard output is read line by line), Debian's
//! chromedriver with a headless Chromium, and waits on conditions with a timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The longest any one condition is waited for.
pub const WAIT: Duration = Duration::from_secs(30);

/// `inbox demo`, running until dropped.
pub struct Demo {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    /// The API's token.
    pub token: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the demo and waits for it to print its API's address and token.
    pub fn start() -> Demo {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_inbox"))
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("demo"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("inbox demo starts");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo =
            Demo { child, stdin, lines, origin: String::new(), token: String::new(), _dir: dir };
        let line = demo.expect_line(|l| l.starts_with("API: "), Duration::from_secs(60));
        // `API: http://127.0.0.1:PORT/api/v1   token: TOKEN`
        let mut words = line.trim_start_matches("API: ").split_whitespace();
        let base = words.next().expect("the address");
        demo.origin = base.trim_end_matches("/api/v1").to_owned();
        demo.token = words.nth(1).expect("the token").to_owned();
        demo
    }

    /// Types a command on the demo's standard input.
    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("the demo reads its commands");
        self.stdin.flush().expect("flush");
    }

    /// The next line of the demo's output that `matches`, within `timeout`.
    pub fn expect_line(&mut self, matches: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(e) => {
                    panic!("the demo did not print the line looked for within {timeout:?}: {e}")
                }
            }
        }
    }

    /// The console's address.
    pub fn console(&self) -> String {
        format!("{}/console/", self.origin)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's chromedriver on a free port, until dropped.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Driver {
    pub fn start() -> Driver {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: scripts/test installs Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // In a process group of its own, with the Chromiums it starts: a test that fails
        // before it closes its session leaves no browser behind (see `Drop`).
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // It says so on its standard output once it listens.
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).expect("chromedriver's output");
            assert!(n > 0, "chromedriver ended before it listened");
            if line.contains("started successfully") {
                break;
            }
        }
        std::thread::spawn(move || for _ in out.lines().map_while(Result::ok) {});
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browsers it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium at 1280x800.
pub async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--hide-scrollbars", "--lang=en-GB",
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    // The page itself gets 1280x800: the window is made larger by the browser's own bars.
    set_page_size(&client, 1280, 800).await;
    let inner: (u64, u64) = serde_json::from_value(
        client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("size"),
    )
    .expect("two numbers");
    assert_eq!(inner, (1280, 800), "the page's size");
    client
}

/// Sizes the window so that the page gets `width` x `height`.
pub async fn set_page_size(client: &Client, width: u32, height: u32) {
    let bars: (u32, u32) = serde_json::from_value(
        client
            .execute(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await
            .expect("size"),
    )
    .expect("two numbers");
    client.set_window_size(width + bars.0, height + bars.1).await.expect("window size");
}

/// Waits until an element matches the CSS selector.
pub async fn css(client: &Client, selector: &str) -> Element {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no element `{selector}` within {WAIT:?}: {e}"))
}

/// Waits until an element matches the XPath.
pub async fn xpath(client: &Client, path: &str) -> Element {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(path))
        .await
        .unwrap_or_else(|e| panic!("no element `{path}` within {WAIT:?}: {e}"))
}

/// Opens the console and signs in with the demo's token; waits for the live event stream.
pub async fn sign_in(client: &Client, demo: &Demo) {
    client.goto(&demo.console()).await.expect("the console loads");
    css(client, "#token").await.send_keys(&demo.token).await.expect("type the token");
    css(client, "#signin-form button[type=submit]").await.click().await.expect("sign in");
    css(client, "#stream-state[data-state=live]").await;
    // Everything the page writes to the browser's console is kept, to check it for content.
    client
        .execute(
            "window.__logged = [];
             for (const m of ['log', 'info', 'warn', 'error', 'debug']) {
               const orig = console[m].bind(console);
               console[m] = (...args) => { window.__logged.push(args.map(String).join(' ')); orig(...args); };
             }
             window.__notReloaded = true;",
            vec![],
        )
        .await
        .expect("script");
}

/// Whether the page is still the one `sign_in` marked (no reload happened).
pub async fn not_reloaded(client: &Client) -> bool {
    client.execute("return window.__notReloaded === true", vec![]).await.expect("script")
        == serde_json::Value::Bool(true)
}

/// What the page wrote to the browser's console since `sign_in`.
pub async fn logged(client: &Client) -> Vec<String> {
    let v = client.execute("return window.__logged || []", vec![]).await.expect("script");
    serde_json::from_value(v).expect("strings")
}

/// Saves a PNG of the page as `docs/screenshots/NAME.png` (shown in the README).
pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("docs/screenshots");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
}

/// Opens the chat with the person `name` from the conversations page (through the page's
/// own links: no reload).
pub async fn open_chat(client: &Client, name: &str) {
    css(client, "nav a[data-nav=conversations]").await.click().await.expect("conversations");
    xpath(
        client,
        &format!(
            "//ul[@id='conversations']/li/a[contains(@class,'who')][starts-with(normalize-space(.), '{name}')]"
        ),
    )
    .await
    .click()
    .await
    .expect("open the chat");
    css(client, "#messages li.message").await;
}
