//! The web console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/test`) driven over WebDriver against `inbox demo`
//! started as a process, over real HTTP. Every wait is a WebDriver wait on a condition (an
//! element matching a selector) with a timeout, or a line of the demo's output.
//!
//! The tests also make the screenshots in `docs/screenshots/` that the README shows.
//!
//! They run one at a time (each with its own demo and browser): two cores do not run several
//! Chromiums and demos at once in good time.

mod console_support;

use std::sync::Mutex;

use console_support::*;

/// One test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
}

#[test]
fn a_person_s_message_appears_in_the_open_chat_without_a_reload() {
    let _one = serial();
    let demo = Demo::start();
    let driver = Driver::start();
    runtime().block_on(async {
        let c = browser(&driver).await;
        sign_in(&c, &demo).await;
        // Everyone has written in once (the demo's four people, one every 1.5 s).
        css(&c, "#conversations li[data-conversation]:nth-child(4)").await;
        // The operator claims Carol's conversation; the filter "assigned to me" finds it.
        let carol = "//ul[@id='conversations']/li[a[contains(@class,'who')][starts-with(normalize-space(.), 'Carol')]]";
        xpath(&c, &format!("{carol}//button[contains(@class,'claim')]")).await.click().await.expect("claim");
        xpath(&c, &format!("{carol}//span[@class='assignee'][.='assigned to operator']")).await;
        screenshot(&c, "conversations").await;
        css(&c, "select[name=assignee]").await.select_by_value("me").await.expect("filter");
        xpath(&c, "//ul[@id='conversations'][count(li[@data-conversation])=1]/li[starts-with(normalize-space(a), 'Carol')]").await;
        open_chat(&c, "Carol").await;
        css(&c, "#claim").await;
        xpath(&c, "//span[@class='assignee'][.='assigned to operator']").await;
        let before = c
            .find_all(fantoccini::Locator::Css("#messages li.message.in"))
            .await
            .expect("messages")
            .len();
        // Carol writes again (every 6 s in the demo): her message comes over the event stream.
        xpath(&c, &format!("(//ol[@id='messages']/li[contains(@class,'in')])[{}]", before + 1))
            .await;
        assert!(not_reloaded(&c).await, "the page was not reloaded");
        // The demo's auto-reply to it turns sent in place.
        xpath(&c, &format!("(//ol[@id='messages']/li[contains(@class,'in')])[{}]/following-sibling::li[contains(@class,'out')][@data-status='sent']", before + 1)).await;
        screenshot(&c, "chat").await;

        // The stream drops; the page reconnects with Last-Event-ID and misses nothing.
        c.execute("window.inboxConsole.dropStream()", vec![]).await.expect("drop");
        css(&c, "#stream-state[data-state=reconnecting]").await;
        let now = c
            .find_all(fantoccini::Locator::Css("#messages li.message.in"))
            .await
            .expect("messages")
            .len();
        xpath(&c, &format!("(//ol[@id='messages']/li[contains(@class,'in')])[{}]", now + 1)).await;
        css(&c, "#stream-state[data-state=live]").await;
        assert!(not_reloaded(&c).await, "the page was not reloaded");

        // Narrow: the chat still reads.
        set_page_size(&c, 400, 800).await;
        css(&c, "#sendbox textarea").await;
        screenshot(&c, "chat-narrow").await;
        c.close().await.expect("close");
    });
}

#[test]
fn a_reply_typed_in_the_console_reaches_the_loopback_server_and_turns_sent() {
    let _one = serial();
    let mut demo = Demo::start();
    let driver = Driver::start();
    let text = format!("We are looking into it ({}).", std::process::id());
    runtime().block_on(async {
        let c = browser(&driver).await;
        sign_in(&c, &demo).await;
        open_chat(&c, "Carol").await;
        // A file goes with it.
        let file = std::env::temp_dir().join(format!("inbox-console-{}.txt", std::process::id()));
        std::fs::write(&file, "terms and conditions").expect("a file to attach");
        css(&c, "#sendbox input[type=file]").await.send_keys(&file.to_string_lossy()).await.expect("attach");
        let box_ = css(&c, "#sendbox textarea").await;
        box_.send_keys(&text).await.expect("type");
        // Ctrl+Enter sends, from the keyboard.
        let send = format!("{}{}", fantoccini::key::Key::Control, fantoccini::key::Key::Enter);
        box_.send_keys(&send).await.expect("Ctrl+Enter");
        let mine = format!(
            "//ol[@id='messages']/li[contains(@class,'out')][.//p[@class='text'][normalize-space(.)='{text}']]"
        );
        xpath(&c, &mine).await;
        xpath(&c, &format!("{mine}[@data-status='sent']")).await;
        let name = file.file_name().expect("name").to_string_lossy().into_owned();
        xpath(&c, &format!("{mine}//ul[@class='attachments']//button[starts-with(., '{name}')]")).await;
        let _ = std::fs::remove_file(&file);

        // The history of the chat, synced from the loopback server, with its progress.
        css(&c, "#sync-history").await.click().await.expect("sync");
        css(&c, "#sync-progress[data-state=done]").await;
        let done = css(&c, "#sync-progress").await.text().await.expect("text");
        assert!(done.starts_with("History synced:"), "{done}");
        let logs = logged(&c).await;
        assert!(!logs.iter().any(|l| l.contains(&text)), "message content in the console: {logs:?}");
        c.close().await.expect("close");
    });
    demo.command(&format!("check {text}"));
    let answer = demo.expect_line(|l| l.starts_with("check:"), WAIT);
    assert_eq!(answer, "check: the loopback server holds it, to Carol");
}

#[test]
fn a_send_that_fails_shows_its_attempts_and_goes_after_a_retry_from_the_dead_letter() {
    let _one = serial();
    let mut demo = Demo::start();
    let driver = Driver::start();
    demo.command("fail");
    demo.expect_line(|l| l.starts_with("fail:"), WAIT);
    runtime().block_on(async {
        let c = browser(&driver).await;
        sign_in(&c, &demo).await;
        open_chat(&c, "Frank").await;
        // The auto-reply to Frank: a server error (retried), then a refusal: failed.
        let failed = "//ol[@id='messages']/li[contains(@class,'out')][@data-status='failed']";
        xpath(&c, failed).await;
        xpath(&c, &format!("{failed}//a[normalize-space(.)='attempts']"))
            .await
            .click()
            .await
            .expect("open the audit");
        css(&c, "#attempts tr[data-attempt='2'][data-outcome=discarded]").await;
        let first = css(&c, "#attempts tr[data-attempt='1']").await;
        assert_eq!(first.attr("data-outcome").await.expect("attr").as_deref(), Some("retried"));
        assert!(first.text().await.expect("text").contains("INTERNAL_SERVER_ERROR"));
        let second = css(&c, "#attempts tr[data-attempt='2']").await.text().await.expect("text");
        assert!(second.contains("USER_PRIVACY_RESTRICTED"), "{second}");
        screenshot(&c, "send-audit").await;

        // The sends of the account, filtered to the failed ones.
        xpath(&c, "//a[normalize-space(.)='All sends of the account']")
            .await
            .click()
            .await
            .expect("sends");
        css(&c, "#sends tr[data-state=completed]").await;
        css(&c, "select[name=state]").await.select_by_value("discarded").await.expect("state");
        css(&c, "form.filters button[type=submit]").await.click().await.expect("filter");
        xpath(&c, "//table[@id='sends'][count(tbody/tr)=1]/tbody/tr[@data-state='discarded']")
            .await;
        screenshot(&c, "sends").await;

        // The dead letter lists it; a retry sends it (the loopback server takes it now).
        css(&c, "nav a[data-nav=dead-letter]").await.click().await.expect("dead letter");
        css(&c, "#dead-letter tr[data-job] button.retry").await;
        screenshot(&c, "dead-letter").await;
        let job = css(&c, "#dead-letter tr[data-job]")
            .await
            .attr("data-job")
            .await
            .expect("attr")
            .expect("id");
        css(&c, "#dead-letter tr[data-job] button.retry").await.click().await.expect("retry");
        xpath(&c, "//table[@id='dead-letter']//td[contains(., 'The dead letter is empty.')]").await;
        c.goto(&format!("{}#/job/{job}", demo.console())).await.expect("the audit");
        css(&c, "#attempts tr[data-attempt='3'][data-outcome=completed]").await;
        css(&c, "#job-summary [data-state=completed]").await;
        css(&c, "#job-summary [data-state=sent]").await;
        c.close().await.expect("close");
    });
}

#[test]
fn a_qr_login_completes_when_the_loopback_server_scans_it() {
    let _one = serial();
    let mut demo = Demo::start();
    let driver = Driver::start();
    runtime().block_on(async {
        let c = browser(&driver).await;
        sign_in(&c, &demo).await;
        css(&c, "nav a[data-nav=accounts]").await.click().await.expect("accounts");
        css(&c, "#accounts tr[data-account] .connection [data-state=connected]").await;
        screenshot(&c, "accounts").await;
        xpath(
            &c,
            "//table[@id='accounts']//tr[th[contains(., 'sales')]]//a[normalize-space(.)='Log in']",
        )
        .await
        .click()
        .await
        .expect("log in");
        css(&c, "button[data-flow=qr]").await.click().await.expect("QR code");
        let first = css(&c, "img#qr").await.attr("data-token").await.expect("attr").expect("token");
        // Telegram rotates the code: the page shows the new one.
        xpath(&c, &format!("//img[@id='qr'][@data-token != '{first}']")).await;
        screenshot(&c, "qr-login").await;
        demo.command("scan");
        // The account has a two-step password: asked for after the scan.
        let password = css(&c, "form[data-step=password] input[type=password]").await;
        password
            .send_keys(&format!("demo password{}", fantoccini::key::Key::Enter))
            .await
            .expect("password");
        css(&c, "#login-done").await;
        css(&c, "#login-connection [data-state=connected]").await;
        c.close().await.expect("close");
    });
    demo.expect_line(|l| l.starts_with("scan: the QR code was scanned"), WAIT);
}

#[test]
fn an_email_account_is_added_and_a_phone_login_goes_through_its_steps_from_the_keyboard() {
    let _one = serial();
    let demo = Demo::start();
    let driver = Driver::start();
    let enter = fantoccini::key::Key::Enter;
    runtime().block_on(async {
        let c = browser(&driver).await;
        sign_in(&c, &demo).await;
        css(&c, "nav a[data-nav=accounts]").await.click().await.expect("accounts");

        // An email account whose servers do not answer: added, and its login refused with
        // the reason (nothing listens on port 9 of the loopback address).
        for (field, value) in [
            ("name", "help desk"),
            ("address", "help@example.org"),
            ("imap_host", "127.0.0.1"),
            ("imap_port", "9"),
            ("smtp_host", "127.0.0.1"),
            ("smtp_port", "9"),
            ("password", "not-this-one"),
        ] {
            css(&c, &format!("#add-email input[name={field}]"))
                .await
                .send_keys(value)
                .await
                .expect("type");
        }
        css(&c, "#add-email select[name=security]")
            .await
            .select_by_value("plaintext")
            .await
            .expect("security");
        css(&c, "#add-email button[type=submit]").await.click().await.expect("add");
        xpath(&c, "//p[@role='alert'][contains(., 'help desk was added, but the login failed')]")
            .await;
        xpath(&c, "//table[@id='accounts']//tr[th[contains(., 'help desk')]]/td[.='email']").await;

        xpath(
            &c,
            "//table[@id='accounts']//tr[th[contains(., 'sales')]]//a[normalize-space(.)='Log in']",
        )
        .await
        .click()
        .await
        .expect("log in");
        css(&c, "button[data-flow=phone]").await.click().await.expect("phone");
        // Each step's field has the focus; Enter submits it.
        css(&c, "form[data-step=phone] input[type=tel]").await;
        let focused = c.active_element().await.expect("focus");
        focused.send_keys(&format!("+15550199{enter}")).await.expect("phone");
        css(&c, "form[data-step=code] input").await;
        c.active_element()
            .await
            .expect("focus")
            .send_keys(&format!("12345{enter}"))
            .await
            .expect("code");
        css(&c, "form[data-step=password] input[type=password]").await;
        screenshot(&c, "phone-login").await;
        c.active_element()
            .await
            .expect("focus")
            .send_keys(&format!("demo password{enter}"))
            .await
            .expect("password");
        css(&c, "#login-done").await;
        css(&c, "#login-connection [data-state=connected]").await;
        c.close().await.expect("close");
    });
}

#[test]
fn the_console_shows_a_loop_restarted_by_the_watchdog() {
    let _one = serial();
    let mut demo = Demo::start();
    let driver = Driver::start();
    runtime().block_on(async {
        let c = browser(&driver).await;
        sign_in(&c, &demo).await;
        css(&c, "nav a[data-nav=workers]").await.click().await.expect("workers");
        css(&c, "#workers tr[data-loop='demo-auto-reply'][data-restarts='0']").await;
        demo.command("stall");
        // Silent for 3 s, restarted; the worker's next heartbeat (every 15 s) says so.
        c.wait()
            .at_most(std::time::Duration::from_secs(45))
            .for_element(fantoccini::Locator::Css(
                "#workers tr[data-loop='demo-auto-reply']:not([data-restarts='0'])",
            ))
            .await
            .expect("the restart is shown within 45 s");
        screenshot(&c, "workers").await;
        c.close().await.expect("close");
    });
}
