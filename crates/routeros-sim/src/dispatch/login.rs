//! `/login` (6.43+ name and password, and the legacy MD5 challenge) and the per-session login
//! state.
//!
//! It deliberately does not end sessions: a failed login answers a trap and the connection
//! stays open, as on RouterOS.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use routeros_proto::login::challenge_response;

use crate::request::Request;
use crate::shared::{ActiveSession, Shared, Via};
use crate::writer::{End, ReplyWriter};

/// Per-session login state.
#[derive(Debug)]
pub(crate) struct SessionState {
    /// The session's number (its `/user/active` `.id`).
    id: u64,
    /// The client's address and port as the socket sees them.
    peer: SocketAddr,
    via: Via,
    /// The user this session logged in as.
    pub(crate) user: Option<String>,
    challenge: Option<String>,
    /// Commands received so far, this one included.
    pub(crate) commands: u64,
}

impl SessionState {
    pub(crate) fn new(id: u64, peer: SocketAddr, via: Via) -> Self {
        Self {
            id,
            peer,
            via,
            user: None,
            challenge: None,
            commands: 0,
        }
    }

    /// Whether the session has logged in.
    pub(crate) fn logged_in(&self) -> bool {
        self.user.is_some()
    }
}

fn random_challenge() -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = state.hash_one(n);
    let b = state.hash_one(a ^ 0x5DEE_CE66_D1CE_4E5B);
    format!("{a:016x}{b:016x}")
}

/// Answers `/login`.
pub(crate) async fn login(
    req: &Request,
    st: &mut SessionState,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    const BAD: &str = "invalid user name or password (6)";
    let fail = |shared: &Shared| {
        shared.stats.failed_logins.fetch_add(1, Ordering::Relaxed);
    };
    let succeed = |st: &mut SessionState, name: &str| {
        st.user = Some(name.to_owned());
        shared.stats.logins.fetch_add(1, Ordering::Relaxed);
        shared.session_logged_in(
            st.id,
            ActiveSession {
                user: name.to_owned(),
                address: shared
                    .settings
                    .session_address
                    .unwrap_or(st.peer.ip().to_canonical()),
                via: st.via,
                since: shared.clock.now(),
            },
        );
    };
    if shared.faults().refuse_logins {
        fail(shared);
        st.challenge = None;
        return w.trap_done(None, BAD).await;
    }
    let name = req.attr("name");
    let password_ok = |name: &str, password: &str| {
        shared
            .settings
            .users
            .iter()
            .any(|(u, p)| u == name && p == password)
    };
    if let Some(response) = req.attr("response") {
        let challenge = st.challenge.take();
        let ok = match (challenge, name) {
            (Some(ch), Some(name)) => shared.settings.users.iter().any(|(u, p)| {
                u == name
                    && challenge_response(p.as_bytes(), &ch)
                        .is_ok_and(|expected| expected.eq_ignore_ascii_case(response))
            }),
            _ => false,
        };
        if let (true, Some(name)) = (ok, name) {
            succeed(st, name);
            return w.done(None).await;
        }
        fail(shared);
        return w.trap_done(None, BAD).await;
    }
    let password = req.attr("password");
    if shared.settings.legacy_login || (name.is_none() && password.is_none()) {
        let challenge = random_challenge();
        st.challenge = Some(challenge.clone());
        return w.done(Some(&challenge)).await;
    }
    let name = name.unwrap_or("");
    if password_ok(name, password.unwrap_or("")) {
        succeed(st, name);
        w.done(None).await
    } else {
        fail(shared);
        w.trap_done(None, BAD).await
    }
}
