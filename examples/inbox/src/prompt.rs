//! Questions on the terminal: answers typed in plain sight, and secrets that are not shown
//! (through `rpassword` when standard input is a terminal; one line of standard input
//! otherwise, so that scripts and tests can pipe them in).

use std::io::{BufRead, IsTerminal, Write};

use crate::error::Error;

/// One line typed after `question`, trimmed; an empty answer is refused.
pub fn ask(question: &str) -> Result<String, Error> {
    eprint!("{question}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::msg(format!("cannot read the answer: {e}")))?;
    let answer = line.trim().to_owned();
    if n == 0 || answer.is_empty() {
        return Err(Error::msg(format!("no answer to “{question}”: nothing was changed")));
    }
    Ok(answer)
}

/// A secret: the environment variable `env` when it is set, else typed after `question`
/// without being shown.
pub fn ask_secret(question: &str, env: &str) -> Result<String, Error> {
    if let Ok(v) = std::env::var(env)
        && !v.is_empty()
    {
        return Ok(v);
    }
    let secret = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{question} (not shown): "))
            .map_err(|e| Error::msg(format!("cannot read the {question}: {e}")))?
    } else {
        eprint!("{question}: ");
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::msg(format!("cannot read the {question}: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if secret.is_empty() {
        return Err(Error::msg(format!("no {question}: set {env} or type it")));
    }
    Ok(secret)
}

/// `data` (a QR code's content) drawn with Unicode half blocks, dark on light, with its
/// quiet zone, for a terminal.
pub fn qr(data: &str) -> Result<String, Error> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(data.as_bytes())
        .map_err(|e| Error::msg(format!("cannot draw the QR code: {e}")))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}
