//! `Last-Event-ID` of a reconnecting GET stream (spec 2025-11-25 Transports §Resumability and
//! Redelivery). Input: one byte (twice it is the number of events buffered while no stream was
//! connected), then the header's value. Never panics; an id reads back from its decimal form;
//! the replay hands over contiguous ids after the resume point up to the newest, skipping some
//! only when the replay buffer is full.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcp_auth_proxy::fuzz;

/// `session::replay::REPLAY_BUFFER`: the events kept for a reconnecting stream.
const REPLAY_BUFFER: usize = 256;

fn headers(value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert("last-event-id", value);
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, value)) = data.split_first() else {
        return;
    };
    let resume = fuzz::last_event_id(&headers(value));
    if let Some(id) = resume {
        assert_eq!(
            fuzz::last_event_id(&headers(id.to_string().as_bytes())),
            Some(id)
        );
    }
    let buffered = usize::from(n) * 2;
    let ids = fuzz::replay(buffered, resume);
    let after = resume.unwrap_or(0);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous: {ids:?}"
    );
    assert!(
        ids.iter().all(|&id| id > after),
        "only after {after}: {ids:?}"
    );
    match ids.first() {
        None => assert!(after >= buffered as u64, "nothing missed after {after}"),
        Some(&first) => {
            assert_eq!(
                ids.last().copied(),
                Some(buffered as u64),
                "up to the newest"
            );
            if first != after + 1 {
                assert_eq!(ids.len(), REPLAY_BUFFER, "a gap only past the buffer");
            }
        }
    }
});
