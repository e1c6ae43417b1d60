//! The multiplexer against an in-memory child: what it writes to the child's stdin is read
//! from a pipe, what the child "says" is handed to its sink. Time is paused and advanced for
//! the request timeout.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream, Lines};
use tokio_util::task::TaskTracker;

use super::*;
use crate::budget::Budget;
use crate::child::{ChildHandle, ChildSpec, LineSink};
use crate::protocol::jsonrpc::client_message;

struct Harness {
    mux: Arc<Mux>,
    sink: Sink,
    stdin: Lines<BufReader<DuplexStream>>,
    _tracker: TaskTracker,
}

pub(super) fn spec(timeout: Duration) -> ChildSpec {
    ChildSpec {
        command: "in-memory".into(),
        args: Vec::new(),
        env: Vec::new(),
        env_remove: Vec::new(),
        cwd: None,
        max_line_bytes: 1 << 20,
        request_timeout: timeout,
        max_queued_bytes: 8 << 20,
        max_pending_bytes: 8 << 20,
        metrics: ChildMetrics::default(),
        sandbox: None,
    }
}

fn harness(timeout: Duration, stream: Option<ItemTx>) -> Harness {
    let tracker = TaskTracker::new();
    let (child, stdin) = ChildHandle::in_memory(&tracker);
    let spec = spec(timeout);
    let shared = Mux::shared(&spec, stream);
    let sink = Sink(shared.clone());
    let mux = Mux::new(child, shared, &spec);
    mux.start_timer(&tracker);
    Harness {
        mux,
        sink,
        stdin: BufReader::new(stdin).lines(),
        _tracker: tracker,
    }
}

/// A stream's queue of `messages` items with a budget of its own of 8 MiB.
fn q(messages: usize) -> (ItemTx, ItemRx) {
    queue(messages, Budget::new(8 << 20))
}

fn dispatch(owner: Option<u64>, tx: &ItemTx, timeout: bool) -> Dispatch {
    Dispatch {
        owner,
        tx: tx.clone(),
        cancel_on_drop: owner.is_none(),
        timeout,
        finish: None,
        audit: None,
        trace: None,
    }
}

/// Sends one body as `owner` with answers to `tx`; panics when the mux refuses it.
async fn send(h: &Harness, v: Value, owner: Option<u64>, tx: &ItemTx, timeout: bool) -> Ticket {
    h.mux
        .send(&body(v), dispatch(owner, tx, timeout))
        .await
        .expect("sent")
}

fn body(v: Value) -> ClientMessage {
    client_message(v.to_string().as_bytes()).expect("valid body")
}

async fn next_stdin(h: &mut Harness) -> Value {
    let line = h.stdin.next_line().await.expect("read").expect("a line");
    serde_json::from_str(&line).expect("json")
}

fn final_of(item: Option<Item>) -> Value {
    match item {
        Some(Item::Final(line)) => serde_json::from_str(&line).expect("json"),
        other => panic!("expected a final answer, got {other:?}"),
    }
}

/// Two clients send the same id; the child sees two proxy ids and each client gets its own
/// answer back with its own id, exactly as it sent it (string vs number kept).
#[tokio::test]
async fn ids_are_rewritten_and_restored_without_cross_wiring() {
    let mut h = harness(Duration::from_secs(60), None);
    let (a_tx, mut a_rx) = q(8);
    let (b_tx, mut b_rx) = q(8);
    let _a = send(
        &h,
        json!({"jsonrpc":"2.0","id":"1","method":"ping"}),
        None,
        &a_tx,
        true,
    )
    .await;
    let _b = send(
        &h,
        json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
        None,
        &b_tx,
        true,
    )
    .await;
    let first = next_stdin(&mut h).await;
    let second = next_stdin(&mut h).await;
    assert_ne!(first["id"], second["id"], "proxy ids are unique");
    // The child answers in the other order.
    for seen in [&second, &first] {
        let answer = json!({"jsonrpc":"2.0","id":seen["id"],"result":{"n":seen["id"]}});
        assert!(h.sink.line(answer.to_string()).await);
    }
    let a = final_of(a_rx.recv().await);
    let b = final_of(b_rx.recv().await);
    assert_eq!(a["id"], json!("1"));
    assert_eq!(a["result"]["n"], first["id"]);
    assert_eq!(b["id"], json!(1));
    assert_eq!(b["result"]["n"], second["id"]);
    assert_eq!(h.mux.in_flight(), 0);
}

/// Within one session an id in flight cannot be reused; another session may use it.
#[tokio::test]
async fn duplicate_ids_are_refused_within_a_session_only() {
    let h = harness(Duration::from_secs(60), None);
    let (tx, _rx) = q(8);
    let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}});
    let _first = h
        .mux
        .send(&body(call.clone()), dispatch(Some(1), &tx, true))
        .await
        .expect("sent");
    let again = h
        .mux
        .send(&body(call.clone()), dispatch(Some(1), &tx, true))
        .await;
    assert!(matches!(again, Err(RouteError::DuplicateId)));
    let other = h.mux.send(&body(call), dispatch(Some(2), &tx, true)).await;
    assert!(other.is_ok());
    assert_eq!(h.mux.in_flight(), 2);
}

/// A session's `notifications/cancelled` names the client's id; the child gets the proxy id.
#[tokio::test]
async fn cancellations_are_translated_to_proxy_ids() {
    let mut h = harness(Duration::from_secs(60), None);
    let (tx, _rx) = q(8);
    let ticket = send(
        &h,
        json!({"jsonrpc":"2.0","id":"c","method":"tools/call","params":{}}),
        Some(3),
        &tx,
        true,
    )
    .await;
    let sent = next_stdin(&mut h).await;
    h.mux
        .send(
            &body(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c"}})),
            dispatch(Some(3), &tx, false),
        )
        .await
        .expect("sent");
    let cancel = next_stdin(&mut h).await;
    assert_eq!(cancel["params"]["requestId"], sent["id"]);
    drop(ticket);
}

/// A request past the timeout is answered with the timeout error (its own id), the child is
/// told `notifications/cancelled`, and the late answer reaches nobody.
#[tokio::test(start_paused = true)]
async fn a_request_past_its_deadline_gets_the_timeout_error_and_is_cancelled() {
    let mut h = harness(Duration::from_secs(2), None);
    let (tx, mut rx) = q(8);
    let _ticket = send(
        &h,
        json!({"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{}}),
        Some(1),
        &tx,
        true,
    )
    .await;
    let sent = next_stdin(&mut h).await;
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert!(rx.try_recv().is_none(), "not before the deadline");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let answer = final_of(rx.recv().await);
    assert_eq!(
        answer,
        json!({"jsonrpc":"2.0","id":"slow","error":{"code":-32001,"message":"request timed out"}})
    );
    let cancel = next_stdin(&mut h).await;
    assert_eq!(cancel["method"], "notifications/cancelled");
    assert_eq!(cancel["params"]["requestId"], sent["id"]);
    let late = json!({"jsonrpc":"2.0","id":sent["id"],"result":{}});
    assert!(h.sink.line(late.to_string()).await);
    assert!(rx.try_recv().is_none(), "the late answer is dropped");
    assert_eq!(h.mux.in_flight(), 0);
}

/// When the child exits, every request in flight gets -32603 "server process exited", and new
/// requests are refused.
#[tokio::test]
async fn child_exit_fails_every_request_in_flight() {
    let h = harness(Duration::from_secs(60), None);
    let (tx, mut rx) = q(8);
    let mut tickets = Vec::new();
    for id in [1, 2] {
        tickets.push(
            h.mux
                .send(
                    &body(json!({"jsonrpc":"2.0","id":id,"method":"ping"})),
                    dispatch(Some(9), &tx, true),
                )
                .await
                .expect("sent"),
        );
    }
    h.sink.closed(ExitReason::Exited).await;
    h.mux.child().exit_in_memory();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let answer = final_of(rx.recv().await);
        assert_eq!(answer["error"]["code"], -32603);
        assert_eq!(answer["error"]["message"], "server process exited");
        ids.push(answer["id"].as_i64().expect("id"));
    }
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
    let refused = h
        .mux
        .send(
            &body(json!({"jsonrpc":"2.0","id":3,"method":"ping"})),
            dispatch(Some(9), &tx, true),
        )
        .await;
    assert!(matches!(refused, Err(RouteError::Child(ChildError::Gone))));
}

/// A legacy SSE session's one stream gets answers and server messages alike, and a stream that
/// stays full stops the child (`false`) instead of growing.
#[tokio::test(start_paused = true)]
async fn a_legacy_stream_carries_everything_and_backs_up_into_the_child() {
    let (stream_tx, mut stream_rx) = q(1);
    let mut h = harness(Duration::from_secs(60), Some(stream_tx));
    let tx = h.mux.stream().expect("stream");
    let ticket = send(
        &h,
        json!({"jsonrpc":"2.0","id":5,"method":"ping"}),
        Some(1),
        &tx,
        true,
    )
    .await;
    ticket.detach();
    let sent = next_stdin(&mut h).await;
    let note = json!({"jsonrpc":"2.0","method":"notifications/message","params":{}});
    assert!(h.sink.line(note.to_string()).await);
    assert!(matches!(stream_rx.recv().await, Some(Item::Message(_))));
    let answer = json!({"jsonrpc":"2.0","id":sent["id"],"result":{}});
    assert!(h.sink.line(answer.to_string()).await);
    assert_eq!(final_of(stream_rx.recv().await)["id"], 5);
    // Nobody reads any more: the first line fills the stream, the second waits, then gives up.
    assert!(h.sink.line(note.to_string()).await);
    assert!(!h.sink.line(note.to_string()).await);
}

/// A response stream that lets its session's bytes (`sessions.max_pending_bytes`) fill loses
/// its route, long before its message count would, and what waited for it is dropped at once.
#[tokio::test]
async fn a_stream_past_its_byte_budget_loses_its_route() {
    let mut h = harness(Duration::from_secs(60), None);
    let budget = Budget::new(1000);
    let (tx, mut rx) = queue(ROUTE_QUEUE, budget.clone());
    let _ticket = send(
        &h,
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t"}}}),
        Some(1),
        &tx,
        true,
    )
    .await;
    let sent = next_stdin(&mut h).await;
    let token = sent["params"]["_meta"]["progressToken"].clone();
    let progress = json!({"jsonrpc":"2.0","method":"notifications/progress",
        "params":{"progressToken":token,"progress":1,"message":"x".repeat(300)}});
    for _ in 0..2 {
        assert!(h.sink.line(progress.to_string()).await);
        assert_eq!(h.mux.in_flight(), 1, "within the budget");
    }
    assert!(budget.used() > 800, "{} bytes wait", budget.used());
    assert!(h.sink.line(progress.to_string()).await, "the child goes on");
    assert_eq!(
        h.mux.in_flight(),
        0,
        "the third does not fit: the route ended"
    );
    assert_eq!(budget.used(), 0, "what waited is dropped at once");
    let answer = json!({"jsonrpc":"2.0","id":sent["id"],"result":{}});
    assert!(h.sink.line(answer.to_string()).await);
    assert!(rx.recv().await.is_none(), "the stream ends");
}

/// A legacy SSE stream waits for bytes as it waits for room: a line beyond the budget waits
/// until the client has taken enough, and one that waits for the stall time stops the child
/// and drops what waited.
#[tokio::test(start_paused = true)]
async fn a_legacy_stream_waits_for_bytes_then_gives_up() {
    let budget = Budget::new(1000);
    let (stream_tx, mut stream_rx) = queue(STREAM_QUEUE, budget.clone());
    let h = harness(Duration::from_secs(60), Some(stream_tx));
    let note =
        json!({"jsonrpc":"2.0","method":"notifications/message","params":{"data":"x".repeat(600)}})
            .to_string();
    assert!(h.sink.line(note.clone()).await);
    let (waited, taken) = tokio::join!(h.sink.line(note.clone()), async {
        tokio::task::yield_now().await;
        assert_eq!(budget.used(), note.len(), "the second line waits");
        stream_rx.recv().await
    });
    assert!(waited, "delivered once the first was taken");
    assert!(matches!(taken, Some(Item::Message(_))));
    assert_eq!(budget.used(), note.len());
    let started = tokio::time::Instant::now();
    assert!(
        !h.sink.line(note.clone()).await,
        "nobody reads: the child is stopped"
    );
    assert!(started.elapsed() >= crate::child::CONSUMER_STALL_TIMEOUT);
    assert_eq!(budget.used(), 0, "what waited is dropped at once");
    assert!(stream_rx.recv().await.is_none(), "the stream ends");
}

/// A child the OOM killer ended at its cgroup limit: its requests say so (issue 15).
#[tokio::test]
async fn an_oom_kill_is_reported_to_requests_in_flight() {
    let h = harness(Duration::from_secs(60), None);
    let (tx, mut rx) = q(8);
    let _ticket = h
        .mux
        .send(
            &body(json!({"jsonrpc":"2.0","id":"big","method":"tools/call"})),
            dispatch(Some(9), &tx, true),
        )
        .await
        .expect("sent");
    h.sink.closed(ExitReason::Oom).await;
    h.mux.child().exit_in_memory();
    let answer = final_of(rx.recv().await);
    assert_eq!(answer["id"], "big");
    assert_eq!(answer["error"]["code"], -32603);
    assert_eq!(
        answer["error"]["message"],
        "server process exceeded its memory limit"
    );
}
