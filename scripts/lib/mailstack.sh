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
    command -v dovecot >/dev/null || missing+=(dovecot-imapd)
    [[ -x /usr/lib/dovecot/lmtp ]] || missing+=(dovecot-lmtpd)
    command -v smtpd >/dev/null || [[ -x /usr/sbin/smtpd ]] || missing+=(opensmtpd)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}" >/dev/null
    fi
}

# Writes a Dovecot configuration for a stack rooted at $1 with IMAP on $2 and LMTP on $3.
# Extra lines (for example `imap_capability = ...`) may follow as $4.
mailstack_dovecot_conf() {
    local dir="$1" imap_port="$2" lmtp_port="$3" extra="${4:-}"
    cat <<EOF
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
listen = 127.0.0.1
protocols = imap lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_location = maildir:$dir/mail/%u
mail_max_userip_connections = 1000
default_process_limit = 1000
default_client_limit = 10000
service anvil {
  chroot =
}
service stats {
  chroot =
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp_port
  }
  unix_listener lmtp {
    mode = 0666
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = 0
  }
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$dir/home/%u
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
}
$extra
EOF
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
    cat >"$dir/smtpd/smtpd.conf" <<EOF
table vusers file:$dir/smtpd/vusers
listen on 127.0.0.1 port $smtp_port
action "d" lmtp "127.0.0.1:$lmtp_port" rcpt-to virtual <vusers>
match from any for domain "example.org" action "d"
EOF
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
