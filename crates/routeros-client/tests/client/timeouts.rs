//! Timeouts: each names its `ClientConfig` setting and how long was waited, and a command
//! timeout (a call, a count, a pipelined call, a stream's gap) drops the connection, so every
//! command on it fails at once and the caller reconnects.
//!
//! Time is frozen with `tokio::time::pause()` at the moment the scripted server has gone
//! silent and the client has taken in everything sent before: from then on the clock only
//! moves when every task waits, so the timer under test fires at once, after exactly its
//! configured duration, and no test waits on the wall clock. The clock is not paused from the
//! start on purpose: loopback bytes can still be on their way in the kernel while every task
//! waits, and a paused clock would then jump past a timeout that must not fire.

use std::time::Duration;

use routeros_client::{Client, Command, Error};
use tokio::time::Instant;

use crate::support::{config, serve, serve_each, still_works};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// `elapsed` is `expected`, give or take the timer wheel's millisecond and the moments
/// between reading the clock and arming the timer.
fn assert_waited(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed < expected + Duration::from_millis(100),
        "waited {elapsed:?}, expected {expected:?}"
    );
}

/// `err` is a command timeout after the default 30 s, about one of `paths`.
fn assert_command_timeout(err: &Error, paths: &[&str]) {
    let Error::Timeout {
        router,
        what,
        setting,
        after,
    } = err
    else {
        panic!("expected a timeout, got {err:?}")
    };
    assert_eq!(router, "test-router");
    assert_eq!(*setting, "command_timeout");
    assert_eq!(*after, COMMAND_TIMEOUT);
    assert!(paths.iter().any(|p| what.contains(p)), "{what}");
    let text = err.to_string();
    assert!(text.contains("after 30s"), "{text}");
    assert!(text.contains("raise command_timeout"), "{text}");
    assert!(text.contains("connection was dropped"), "{text}");
    assert!(err.is_connection_lost());
}

/// After the drop: closed, nothing in flight, new commands fail fast with `Closed`.
async fn assert_dropped(client: &Client) {
    assert!(client.is_closed());
    assert_eq!(client.in_flight(), 0);
    let err = client
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}

/// Two calls in flight, the router answers neither: after one command timeout (not two in
/// a row) both fail, the socket is closed (the server reads EOF, not a `/cancel`), and a new
/// connection works.
#[tokio::test]
async fn command_timeout_drops_the_connection_and_a_new_one_works() {
    let server = serve_each(2, |i, mut c| async move {
        c.login().await;
        if i == 0 {
            let mut paths = vec![
                c.recv().await.unwrap().path().to_owned(),
                c.recv().await.unwrap().path().to_owned(),
            ];
            paths.sort();
            assert_eq!(
                paths,
                ["/ip/firewall/connection/print", "/system/resource/print"]
            );
            // Both commands are in, their timers armed, nothing else will come.
            tokio::time::pause();
            let after = c.recv().await;
            assert!(after.is_none(), "the client kept the connection: {after:?}");
        } else {
            c.answer_done("/system/identity/print", &[]).await;
        }
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let started = Instant::now();
    let (a, b) = tokio::join!(
        client.call(Command::new("/ip/firewall/connection/print")),
        client.call(Command::new("/system/resource/print")),
    );
    assert_waited(started.elapsed(), COMMAND_TIMEOUT);
    let paths = ["/ip/firewall/connection/print", "/system/resource/print"];
    assert_command_timeout(&a.unwrap_err(), &paths);
    assert_command_timeout(&b.unwrap_err(), &paths);
    assert_dropped(&client).await;

    tokio::time::resume();
    let again = Client::connect(config(server.addr)).await.unwrap();
    still_works(&again).await;
    server.join().await;
}

#[tokio::test]
async fn count_timeout_drops_the_connection() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/ip/firewall/connection/print").await;
        assert!(cmd.has("=count-only="));
        tokio::time::pause();
        assert!(c.recv().await.is_none(), "the client kept the connection");
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let started = Instant::now();
    let err = client
        .count(Command::new("/ip/firewall/connection/print"))
        .await
        .unwrap_err();
    assert_waited(started.elapsed(), COMMAND_TIMEOUT);
    assert_command_timeout(&err, &["/ip/firewall/connection/print"]);
    assert_dropped(&client).await;
    server.join().await;
}

/// Pipelined: `a` and `c` are answered, `b` never, `d` gets a row but no `!done`. `b` times
/// out and drops the connection; `c`, complete before that, keeps its result; `d` reports
/// the timeout that ended the connection.
#[tokio::test]
async fn call_many_timeout_drops_the_connection_and_keeps_finished_results() {
    let server = serve(|mut c| async move {
        c.login().await;
        let mut tags = Vec::new();
        for _ in 0..4 {
            tags.push(c.expect("/echo").await.tag().unwrap().to_owned());
        }
        c.send_tagged(&tags[2], &["!done", "=ret=c"]).await;
        c.send_tagged(&tags[3], &["!re", "=n=d"]).await;
        c.send_tagged(&tags[0], &["!done", "=ret=a"]).await;
        assert!(c.recv().await.is_none(), "the client kept the connection");
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let cmds = ["a", "b", "c", "d"].map(|n| Command::new("/echo").attr("n", n));
    let (results, ()) = tokio::join!(client.call_many(cmds), async {
        // `a` came last on the wire: once it and `c` are done (`b` and `d` left), the
        // client has taken in everything the server will send.
        while client.in_flight() != 2 {
            tokio::task::yield_now().await;
        }
        tokio::time::pause();
    });
    assert_eq!(results[0].as_ref().unwrap().ret.as_deref(), Some("a"));
    assert_command_timeout(results[1].as_ref().unwrap_err(), &["/echo"]);
    assert_eq!(results[2].as_ref().unwrap().ret.as_deref(), Some("c"));
    assert_command_timeout(results[3].as_ref().unwrap_err(), &["/echo"]);
    assert_dropped(&client).await;
    server.join().await;
}

/// The gap timeout: a row, then silence for longer than `command_timeout`.
#[tokio::test]
async fn stream_gap_timeout_drops_the_connection() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/ip/firewall/connection/print").await;
        c.send_tagged(cmd.tag().unwrap(), &["!re", "=.id=*1"]).await;
        assert!(c.recv().await.is_none(), "the client kept the connection");
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let mut s = client
        .stream(Command::new("/ip/firewall/connection/print").flag("follow"))
        .await
        .unwrap();
    assert!(s.next().await.unwrap().is_ok());
    // The one row the server sends is in: silence from here on.
    tokio::time::pause();
    let started = Instant::now();
    let err = s.next().await.unwrap().unwrap_err();
    assert_waited(started.elapsed(), COMMAND_TIMEOUT);
    assert_command_timeout(&err, &["the next reply to /ip/firewall/connection/print"]);
    assert!(s.next().await.is_none());
    assert_dropped(&client).await;
    server.join().await;
}

#[tokio::test]
async fn login_timeout_names_login_timeout() {
    let server = serve(|mut c| async move {
        c.expect("/login").await;
        tokio::time::pause();
        // Never answers; wait for the client to hang up.
        assert!(c.recv().await.is_none());
    })
    .await;
    let started = Instant::now();
    let err = Client::connect(config(server.addr)).await.unwrap_err();
    assert_waited(started.elapsed(), Duration::from_secs(10));
    let Error::Timeout {
        what,
        setting,
        after,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*setting, "login_timeout");
    assert_eq!(*after, Duration::from_secs(10));
    assert!(what.contains("login as \"admin\""), "{what}");
    let text = err.to_string();
    assert!(
        text.contains("after 10s") && text.contains("raise login_timeout"),
        "{text}"
    );
    assert!(!text.contains(crate::support::PASSWORD));
    server.join().await;
}

/// A listener whose accept queue is full drops new SYNs, so a connect neither succeeds nor
/// fails: only `connect_timeout` ends it. Linux queues `backlog + 1` connections that were
/// never accepted, so with a backlog of 1 the third connect hangs.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn tcp_connect_timeout_names_connect_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap(); // never accepts
    let addr = listener.local_addr().unwrap();
    let _queued = [
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    ];
    // The queue is full: the SYN below is dropped, nothing can arrive.
    tokio::time::pause();
    let mut cfg = config(addr);
    cfg.connect_timeout = Duration::from_secs(7);
    let started = Instant::now();
    let err = Client::connect(cfg).await.unwrap_err();
    assert_waited(started.elapsed(), Duration::from_secs(7));
    let Error::Timeout {
        what,
        setting,
        after,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*setting, "connect_timeout");
    assert_eq!(*after, Duration::from_secs(7));
    assert!(
        what.contains(&format!("TCP connection to {addr}")),
        "{what}"
    );
    assert!(err.to_string().contains("after 7s"), "{err}");
    drop(listener);
}
