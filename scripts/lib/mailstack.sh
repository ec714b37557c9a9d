# A private mail stack for the email tests: Dovecot (IMAP + LMTP) and OpenSMTPD delivering into
# it through LMTP, both from Debian's packages, on free loopback ports, in a temporary
# directory. Sourced after scripts/lib/harness.sh, not run.
#
# `start_mailstack` installs what is missing, starts both servers, and exports:
#   TEST_IMAP_PORT      Dovecot's IMAP port (plaintext, loopback only)
#   TEST_LMTP_PORT      Dovecot's LMTP port
#   TEST_SMTP_PORT      OpenSMTPD's port; it accepts mail for any address @example.org
#   TEST_MAIL_DIR       the directory of the stack (passwd file, maildirs, logs)
#   TEST_DOVECOT_CONF   Dovecot's configuration file
#   TEST_DOVECOT_PASSWD the passwd-file: tests append `user:{PLAIN}password` lines to it
#                       (Dovecot re-reads it on every login, so each test has its own users)
# Users are addresses such as `alice-1234@example.org`; their maildirs are created on first
# login or delivery.

mailstack_need() {
    local missing=()
    command -v dovecot >/dev/null && [[ -x /usr/lib/dovecot/imap ]] || missing+=(dovecot-imapd)
    [[ -x /usr/lib/dovecot/lmtp ]] || missing+=(dovecot-lmtpd)
    command -v smtpd >/dev/null || [[ -x /usr/sbin/smtpd ]] || missing+=(opensmtpd)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}" >/dev/null
    fi
}

# The configurations live in channel-email (its `testing` feature starts the same stack from
# the published crate alone, src/testing/launcher.rs): this script renders the same files.
MAILSTACK_CONF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../crates/channel-email/src/testing" && pwd)"

# Fills in the placeholders of the template $1: @DIR@ with $2, @IMAP_PORT@ with $3,
# @LMTP_PORT@ with $4, @SMTP_PORT@ with $5 and @EXTRA@ with $6.
mailstack_render() {
    local text
    text="$(<"$1")"
    text="${text//@DIR@/"$2"}"
    text="${text//@IMAP_PORT@/"$3"}"
    text="${text//@LMTP_PORT@/"$4"}"
    text="${text//@SMTP_PORT@/"$5"}"
    text="${text//@EXTRA@/"$6"}"
    printf '%s\n' "$text"
}

# Writes a Dovecot configuration for a stack rooted at $1 with IMAP on $2 and LMTP on $3.
# Extra lines (for example `imap_capability = ...`) may follow as $4.
mailstack_dovecot_conf() {
    mailstack_render "$MAILSTACK_CONF_DIR/dovecot.conf" "$1" "$2" "$3" "" "${4:-}"
}

start_mailstack() {
    mailstack_need
    local dir imap_port lmtp_port smtp_port
    dir="$HARNESS_DIR/mail"
    mkdir -p "$dir/run" "$dir/state" "$dir/mail" "$dir/home" "$dir/smtpd"
    imap_port="$(free_port)"
    lmtp_port="$(free_port)"
    smtp_port="$(free_port)"
    : >"$dir/passwd"
    chmod 755 "$HARNESS_DIR" "$dir"
    chmod 644 "$dir/passwd"
    chown nobody:nogroup "$dir/mail" "$dir/home"
    mailstack_dovecot_conf "$dir" "$imap_port" "$lmtp_port" >"$dir/dovecot.conf"
    dovecot -c "$dir/dovecot.conf" || { cat "$dir/dovecot.log" >&2 2>/dev/null; return 1; }
    HARNESS_CLEANUP+=("kill \$(cat $dir/run/master.pid)")

    # OpenSMTPD: one per machine (one control socket and spool).
    echo '@example.org nobody' >"$dir/smtpd/vusers"
    mailstack_render "$MAILSTACK_CONF_DIR/smtpd.conf" "$dir" "$imap_port" "$lmtp_port" "$smtp_port" "" \
        >"$dir/smtpd/smtpd.conf"
    if pgrep -x smtpd >/dev/null; then
        echo "an OpenSMTPD is already running on this machine; stop it first (only one can run)" >&2
        return 1
    fi
    smtpd -d -f "$dir/smtpd/smtpd.conf" >"$dir/smtpd/smtpd.log" 2>&1 &
    local smtpd_pid=$!
    HARNESS_CLEANUP+=("kill $smtpd_pid")
    local i
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null &&
            (exec 3<>"/dev/tcp/127.0.0.1/$imap_port") 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    ((i < 100)) || { cat "$dir/smtpd/smtpd.log" "$dir/dovecot.log" >&2; return 1; }

    TEST_IMAP_PORT="$imap_port"
    TEST_LMTP_PORT="$lmtp_port"
    TEST_SMTP_PORT="$smtp_port"
    TEST_MAIL_DIR="$dir"
    TEST_DOVECOT_CONF="$dir/dovecot.conf"
    TEST_DOVECOT_PASSWD="$dir/passwd"
    export TEST_IMAP_PORT TEST_LMTP_PORT TEST_SMTP_PORT TEST_MAIL_DIR TEST_DOVECOT_CONF TEST_DOVECOT_PASSWD
    echo "private Dovecot on 127.0.0.1:$imap_port (LMTP $lmtp_port), OpenSMTPD on 127.0.0.1:$smtp_port"
}
