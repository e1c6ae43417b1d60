//! The one look at a JSON-RPC message and the id rewriting of the multiplexer. A child's line:
//! classified, its id replaced and put back gives the line again. A client body: validated;
//! each request as the child gets it is itself a valid message with the proxy id (and proxy
//! progress token) and the same routing fields, and restoring the client's id (as the child's
//! answer is restored) and token gives the original bytes; a `params.requestId` rewritten and
//! put back likewise.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_proxy::fuzz::{self, Item, Kind};

fuzz_target!(|data: &[u8]| {
    child_line(data);
    client_body(data);
});

fn child_line(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Some(probed) = fuzz::probe(line) else {
        return;
    };
    let Some(id) = probed.id.as_deref() else {
        return;
    };
    let client_id = r#""client-id""#;
    let restored = fuzz::splice_id(line, client_id).expect("the id found points into the line");
    let again = fuzz::probe(&restored).expect("a spliced id keeps the message an object");
    assert_eq!(again.kind, probed.kind);
    assert_eq!(again.id.as_deref(), Some(client_id));
    assert_eq!(fuzz::splice_id(&restored, id).as_deref(), Some(line));
}

fn client_body(data: &[u8]) {
    let Ok(body) = fuzz::client_message(data) else {
        return;
    };
    assert!(
        !body.line.contains(['\n', '\r']),
        "the child reads one line"
    );
    if !data.contains(&b'\n') && !data.contains(&b'\r') {
        assert_eq!(body.line.as_bytes(), data, "forwarded byte for byte");
    }
    for (index, item) in body.items.iter().enumerate() {
        match item.kind {
            Kind::Request => request(data, index, item),
            Kind::Notification if item.cancelled_id.is_some() => cancellation(data, index, item),
            _ => {}
        }
    }
}

fn request(data: &[u8], index: usize, item: &Item) {
    let original = item.id.as_deref().expect("a request has an id");
    let proxy_id = 1 + index as u64;
    let sent = fuzz::request_to_child(data, index, proxy_id).expect("a request");
    let seen = fuzz::client_message(sent.line.as_bytes()).expect("the child gets a valid message");
    let [child] = seen.items.as_slice() else {
        panic!("one message per line: {}", sent.line);
    };
    assert_eq!(child.kind, Kind::Request);
    assert_eq!(child.id.as_deref(), Some(proxy_id.to_string().as_str()));
    assert_eq!(
        (
            &child.method,
            &child.name,
            &child.uri,
            &child.protocol_version
        ),
        (&item.method, &item.name, &item.uri, &item.protocol_version)
    );
    let token = match (&sent.progress, &item.progress_token) {
        (None, None) => None,
        (Some((proxy_token, original_token)), Some(client_token)) => {
            assert_eq!(proxy_token, &format!("\"pt-{proxy_id}\""));
            assert_eq!(original_token, client_token, "the client's token is kept");
            assert_eq!(child.progress_token.as_ref(), Some(proxy_token));
            Some(original_token.as_str())
        }
        (sent, client) => panic!("progress token {client:?} sent as {sent:?}"),
    };
    // The child's answer carries the proxy id where the request had it; the client's id goes
    // back there. With the token put back too, every byte is the client's.
    let restored = fuzz::splice_id(&sent.line, original).expect("the proxy id is found");
    let restored = match token {
        None => restored,
        Some(token) => {
            fuzz::rewrite(restored.as_bytes(), 0, None, None, Some(token)).expect("a valid message")
        }
    };
    assert_eq!(restored, item.text, "only the id and the token change");
}

fn cancellation(data: &[u8], index: usize, item: &Item) {
    let original = item.cancelled_id.as_deref().expect("a requestId");
    let sent = fuzz::rewrite(data, index, None, Some("17"), None).expect("a message");
    let seen = fuzz::client_message(sent.as_bytes()).expect("the child gets a valid message");
    let [child] = seen.items.as_slice() else {
        panic!("one message per line: {sent}");
    };
    assert_eq!(child.cancelled_id.as_deref(), Some("17"));
    let back = fuzz::rewrite(sent.as_bytes(), 0, None, Some(original), None).expect("a message");
    assert_eq!(back, item.text, "restored byte for byte");
}
