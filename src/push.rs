//! Renewal push, the delivery side: the HTTP client that pushes a token (or
//! a removal) to an instance in its dialect, the address filter, and the
//! backoff. What is pushed, when, and what is recorded is the use case in
//! [`crate::licensing::push`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use tokio::sync::Mutex;

pub use crate::config::PushConfig;
use crate::domain::Dialect;
use crate::sealed::Credentials;

/// The pusher's own state: its HTTP client, its lease owner id, and a lock
/// so that runs of one process do not overlap.
pub struct Pusher {
    pub config: PushConfig,
    pub(crate) http: reqwest::Client,
    /// This process's name on the leases it takes.
    pub(crate) owner: String,
    /// Held by a run, so that runs of one process do not overlap.
    pub(crate) running: Mutex<()>,
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub delivered: usize,
    pub failed: usize,
}

impl Pusher {
    pub fn new(config: PushConfig) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("charter/", env!("CARGO_PKG_VERSION")));
        if config.refuse_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Pusher {
            http: builder.build()?,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            running: Mutex::new(()),
            config,
        })
    }

    /// Waits for a run in progress to finish (shutdown).
    pub async fn wait_idle(&self) {
        let _guard = self.running.lock().await;
    }
}

fn authorize(req: reqwest::RequestBuilder, c: Option<&Credentials>) -> reqwest::RequestBuilder {
    match c {
        Some(Credentials::Basic { username, password }) => req.basic_auth(username, Some(password)),
        Some(Credentials::Bearer { token }) => req.bearer_auth(token),
        None => req,
    }
}

pub(crate) async fn send_token(
    http: &reqwest::Client,
    d: Dialect,
    url: &str,
    token: &str,
    c: Option<&Credentials>,
) -> Result<(), Failure> {
    let req = match d {
        Dialect::Grafana => http
            .post(format!("{url}api/licensing/token"))
            .json(&json!({ "token": token })),
        Dialect::Consul => http
            .put(format!("{url}v1/operator/license"))
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(token.to_string()),
        Dialect::Redis => http
            .put(format!("{url}v1/license"))
            .json(&json!({ "license": token })),
    };
    send(authorize(req, c)).await
}

pub(crate) async fn send_removal(
    http: &reqwest::Client,
    d: Dialect,
    url: &str,
    c: Option<&Credentials>,
) -> Result<(), Failure> {
    let req = match d {
        Dialect::Grafana => http
            .request(Method::DELETE, format!("{url}api/licensing/token"))
            .json(&json!({ "instance": url })),
        Dialect::Consul => http.delete(format!("{url}v1/operator/license")),
        // Redis Enterprise has no call to remove a license.
        Dialect::Redis => return Ok(()),
    };
    send(authorize(req, c)).await
}

/// Why a delivery failed: the instance's answer status (its body is never
/// kept: it could be an internal service's answer, shown to Viewers), or a
/// connection error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: Option<u16>,
    pub message: String,
}

impl Failure {
    pub fn other(message: impl Into<String>) -> Failure {
        Failure {
            status: None,
            message: message.into(),
        }
    }

    /// The instance refused for good: a 4xx that a retry cannot change
    /// (not 408 Request Timeout, 425 Too Early or 429 Too Many Requests).
    pub fn is_permanent(&self) -> bool {
        self.status
            .is_some_and(|s| (400..500).contains(&s) && ![408, 425, 429].contains(&s))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<(), Failure> {
    let res = req.send().await.map_err(|e| Failure::other(describe(&e)))?;
    let status = res.status();
    if status.is_success() {
        return Ok(());
    }
    let message = format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    Err(Failure {
        status: Some(status.as_u16()),
        message: message.trim_end().to_string(),
    })
}

pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Exponential backoff with ±20% jitter: base, 2·base, 4·base... up to max.
pub fn backoff(c: &PushConfig, attempts: i64) -> i64 {
    let base = c.backoff_base.as_secs_f64().max(1.0);
    let exp = (attempts.clamp(1, 30) - 1) as i32;
    let delay = (base * 2f64.powi(exp)).min(c.backoff_max.as_secs_f64().max(base));
    let mut r = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut r);
    let jitter = 0.8 + 0.4 * (u32::from_le_bytes(r) as f64 / u32::MAX as f64);
    (delay * jitter).round().max(1.0) as i64
}

/// Whether an address is one a vendor deployment must not call: loopback,
/// private, shared (CGNAT), link-local, unspecified, "this network",
/// benchmarking, documentation, reserved, broadcast and multicast ranges,
/// IPv6 unique-local, site-local and documentation ranges, and any IPv6
/// address that carries an IPv4 one (mapped, compatible, SIIT, NAT64,
/// 6to4, Teredo) when that IPv4 address is one of these.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0 // 0.0.0.0/8, "this network"
                || (a == 100 && (b & 0xc0) == 64) // 100.64.0.0/10, shared address space
                || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24, IETF protocol assignments
                || (a == 192 && b == 0 && c == 2) // 192.0.2.0/24, documentation
                || (a == 198 && (b & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || (a == 198 && b == 51 && c == 100) // documentation
                || (a == 203 && b == 0 && c == 113) // documentation
                || a >= 240 // 240.0.0.0/4, reserved (and broadcast)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = embedded_ipv4(v6) {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
                || (s[0] & 0xffc0) == 0xfec0 // fec0::/10, site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32, documentation
                || (s[0] == 0x2001 && s[1] == 0) // 2001::/32, Teredo (hides an IPv4 peer)
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1) // 64:ff9b:1::/48, local NAT64
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // 100::/64, discard
        }
    }
}

/// The IPv4 address an IPv6 one carries, by the translations a network may
/// apply: IPv4-mapped `::ffff:a.b.c.d`, SIIT `::ffff:0:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4
/// `2002:aabb:ccdd::`.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let tail = std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        // SIIT (RFC 6145): ::ffff:0:a.b.c.d
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        // IPv4-compatible (deprecated): ::a.b.c.d, but not :: or ::1
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(tail),
        // NAT64 well-known prefix (RFC 6052): 64:ff9b::a.b.c.d
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 6to4 (RFC 3056): 2002:aabb:ccdd::/48
        [0x2002, hi, lo, ..] => Some(std::net::Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// A resolver that drops private addresses, so a name cannot point the
/// pusher inside the vendor's network (checked at connect time, after DNS).
pub(crate) struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a URL may be pushed to under `refuse_private` (IP literals skip DNS).
pub fn url_allowed(url: &str, refuse_private: bool) -> bool {
    if !refuse_private {
        return true;
    }
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => !is_private(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_private(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => d != "localhost" && !d.ends_with(".localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg() -> PushConfig {
        PushConfig {
            interval: Duration::from_secs(5),
            concurrency: 4,
            timeout: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
            refuse_private: true,
            batch: 100,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let c = cfg();
        for (attempt, nominal) in [(1, 10.0), (2, 20.0), (3, 40.0), (10, 3600.0), (50, 3600.0)] {
            for _ in 0..50 {
                let d = backoff(&c, attempt) as f64;
                assert!(
                    d >= nominal * 0.8 - 1.0 && d <= nominal * 1.2 + 1.0,
                    "attempt {attempt}: {d}"
                );
            }
        }
    }

    #[test]
    fn private_addresses_are_refused_when_asked() {
        for url in [
            "http://127.0.0.1:3000/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://169.254.169.254/",
            "http://[::1]/",
            "http://localhost:8080/",
            "http://[fd00::1]/",
            "http://100.64.0.1/",
            "http://0.1.2.3/",
            "http://198.18.0.1/",
            "http://240.0.0.1/",
            "http://224.0.0.1/",
            "http://[ff02::1]/",
            "http://[fec0::1]/",
            // IPv4 inside IPv6: mapped, SIIT, compatible, NAT64, 6to4.
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:0:10.0.0.1]/",
            "http://[::169.254.169.254]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:c0a8:101::1]/",
            "http://[2001:0:4136:e378::1]/",
        ] {
            assert!(!url_allowed(url, true), "{url}");
            assert!(url_allowed(url, false), "{url}");
        }
        for url in [
            "https://grafana.example.com/",
            "http://8.8.8.8/",
            "http://[2001:4860::8888]/",
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::1]/",
            "http://[::ffff:8.8.8.8]/",
        ] {
            assert!(url_allowed(url, true), "{url}");
        }
    }
}
