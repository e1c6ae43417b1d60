//! The JWKS caches' counters: kept by `auth::jwks`, read and rendered at scrape time.

use super::{PREFIX, escape_label};

/// Counters of one cache, for logs and metrics. Monotonic except `keys` and `last_success_unix`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwksStats {
    /// Fetches that stored a new key set (start-up, background, unknown `kid`).
    pub fetches_ok: u64,
    /// Fetches (including discovery) that failed; the previous key set kept serving.
    pub fetches_failed: u64,
    /// Fetches caused by a token with an unknown `kid`.
    pub unknown_kid_refetches: u64,
    /// Unknown `kid`s answered from the cache because a refetch happened too recently.
    pub unknown_kid_throttled: u64,
    /// Keys in the current set.
    pub keys: u64,
    /// When the current set was fetched (seconds since the epoch); `None` before the first.
    pub last_success_unix: Option<u64>,
}

/// Appends the JWKS caches' own counters (kept by `auth::jwks`, read at scrape time).
pub(super) fn render(out: &mut String, jwks: &[(String, JwksStats)]) {
    use std::fmt::Write;
    if jwks.is_empty() {
        return;
    }
    /// Name, type, help, and the value of one issuer's stats.
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&JwksStats) -> Option<u64>,
    );
    let series: [Series; 5] = [
        (
            "jwks_fetches_total",
            "counter",
            "JWKS fetches per issuer that stored a new key set (start-up, refresh, unknown kid)",
            |s| Some(s.fetches_ok),
        ),
        (
            "jwks_fetch_failures_total",
            "counter",
            "JWKS or discovery fetches per issuer that failed (the last good key set kept serving)",
            |s| Some(s.fetches_failed),
        ),
        (
            "jwks_unknown_kid_refetches_total",
            "counter",
            "JWKS fetches per issuer caused by a token with an unknown kid",
            |s| Some(s.unknown_kid_refetches),
        ),
        (
            "jwks_keys",
            "gauge",
            "Keys in each issuer's current key set",
            |s| Some(s.keys),
        ),
        (
            "jwks_last_success_timestamp_seconds",
            "gauge",
            "When each issuer's current key set was fetched",
            |s| s.last_success_unix,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}.");
        let _ = writeln!(out, "# TYPE {PREFIX}_{name} {kind}");
        for (issuer, stats) in jwks {
            if let Some(v) = value(stats) {
                let _ = writeln!(
                    out,
                    "{PREFIX}_{name}{{issuer=\"{}\"}} {v}",
                    escape_label(issuer)
                );
            }
        }
    }
}
