//! `[telemetry]`: OpenTelemetry traces exported over OTLP/HTTP (issue 14). Off unless
//! `otlp_endpoint` is set; off, nothing of it is built and the request path is as before.

use serde::Deserialize;

use super::ConfigError;

/// The service name spans are exported under, unless `telemetry.service_name` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "mcp-auth-proxy";
/// The path of the traces signal under an OTLP/HTTP collector's base URL.
const OTLP_TRACES_PATH: &str = "/v1/traces";

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP (protobuf) base URL, such as `http://otel-collector:4318`
    /// (`/v1/traces` is appended unless the URL already ends with it); empty: off.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// The share of new traces sampled, 0.0 to 1.0. Parent-based: a request whose incoming
    /// trace context is sampled is always traced, one that is not sampled never is.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sample_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// Whether traces are exported (`otlp_endpoint` is set).
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.is_empty()
    }

    /// The URL spans are POSTed to: the endpoint with `/v1/traces` appended unless present.
    pub fn traces_url(&self) -> String {
        let base = self.otlp_endpoint.trim_end_matches('/');
        if base.ends_with(OTLP_TRACES_PATH) {
            base.to_owned()
        } else {
            format!("{base}{OTLP_TRACES_PATH}")
        }
    }

    /// The checks of `check`, naming the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.sample_ratio.is_finite() && (0.0..=1.0).contains(&self.sample_ratio)) {
            return Err(ConfigError::new(
                "telemetry.sample_ratio",
                format!("`{}` is not a share between 0.0 and 1.0", self.sample_ratio),
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::new(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        if !self.enabled() {
            return Ok(());
        }
        let url = super::validate::parse_http_url(&self.otlp_endpoint)
            .map_err(|m| ConfigError::new("telemetry.otlp_endpoint", m))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new(
                "telemetry.otlp_endpoint",
                format!("`{}` names no host", self.otlp_endpoint),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::new(
                "telemetry.otlp_endpoint",
                "must not have a query or fragment",
            ));
        }
        // The exporter takes an `http::Uri`; what `url` accepts it may not.
        if self.traces_url().parse::<http::Uri>().is_err() {
            return Err(ConfigError::new(
                "telemetry.otlp_endpoint",
                format!("`{}` is not a URL the exporter can use", self.otlp_endpoint),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, env, load};

    #[test]
    fn telemetry_is_off_by_default_and_checked_when_set() {
        let c = load(MINIMAL, &env()).expect("valid");
        assert_eq!(c.telemetry, TelemetryConfig::default());
        assert!(!c.telemetry.enabled());
        let on = format!(
            "{MINIMAL}\n[telemetry]\notlp_endpoint = \"http://collector:4318\"\nsample_ratio = 0.25\n"
        );
        let c = load(&on, &env()).expect("valid");
        assert_eq!(c.telemetry.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(c.telemetry.sample_ratio, 0.25);
        let full = TelemetryConfig {
            otlp_endpoint: "https://c.example/otlp/v1/traces/".into(),
            ..TelemetryConfig::default()
        };
        assert_eq!(full.traces_url(), "https://c.example/otlp/v1/traces");
        for (section, key) in [
            (
                "otlp_endpoint = \"collector:4318\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"ftp://collector\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http://c:4318/?a=b\"",
                "telemetry.otlp_endpoint",
            ),
            ("sample_ratio = 1.5", "telemetry.sample_ratio"),
            ("sample_ratio = -0.1", "telemetry.sample_ratio"),
            ("sample_ratio = nan", "telemetry.sample_ratio"),
            ("service_name = \" \"", "telemetry.service_name"),
        ] {
            let text = format!("{MINIMAL}\n[telemetry]\n{section}\n");
            let e = load(&text, &env()).expect_err(section);
            assert_eq!(e.key, key, "{section}: {e}");
        }
    }

    #[test]
    fn telemetry_keys_have_environment_overrides() {
        let mut e = env();
        e.push((
            "MCP_PROXY__TELEMETRY__OTLP_ENDPOINT".into(),
            "http://127.0.0.1:4318".into(),
        ));
        e.push(("MCP_PROXY__TELEMETRY__SAMPLE_RATIO".into(), "0.5".into()));
        e.push(("MCP_PROXY__TELEMETRY__SERVICE_NAME".into(), "edge-1".into()));
        let c = load(MINIMAL, &e).expect("valid");
        assert_eq!(c.telemetry.otlp_endpoint, "http://127.0.0.1:4318");
        assert_eq!(c.telemetry.sample_ratio, 0.5);
        assert_eq!(c.telemetry.service_name, "edge-1");
    }
}
