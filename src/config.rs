//! Configuration of `charter serve`: defaults, then a TOML file (`--config`),
//! then `CHARTER_*` environment variables, then flags. Validated once at
//! start, with errors that name the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Flags of `charter serve`; each has a `CHARTER_*` variable and a TOML key
/// of the same name in snake case.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "CHARTER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CHARTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The issuer's public URL, written as `iss` in tokens [default: http://<listen>/].
    #[arg(long, env = "CHARTER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB` [default: sqlite://data/charter.db].
    #[arg(long, env = "CHARTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory of the master key (`master.key`) and of `*.pem` signing keys imported into the database on a first start [default: keys].
    #[arg(long, env = "CHARTER_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
    /// User name of the server admin (HTTP Basic) [default: admin].
    #[arg(long, env = "CHARTER_ADMIN_USER")]
    pub admin_user: Option<String>,
    /// Password of the server admin; when unset, one is generated on first start and printed once.
    #[arg(long, env = "CHARTER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// How long after expiry a token may still be renewed, in days [default: 30].
    #[arg(long, env = "CHARTER_RENEW_GRACE_DAYS")]
    pub renew_grace_days: Option<i64>,
    /// Token lifetime for licenses that do not set one, in days [default: 7].
    #[arg(long, env = "CHARTER_TOKEN_TTL_DAYS")]
    pub token_ttl_days: Option<i64>,
    /// Largest request body accepted, in bytes [default: 65536].
    #[arg(long, env = "CHARTER_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Longest a request may take, body included, before it gets 408 [default: 30].
    #[arg(long, env = "CHARTER_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Connections open at once; more wait to be accepted [default: 4096].
    #[arg(long, env = "CHARTER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// `text` or `json` [default: text].
    #[arg(long, env = "CHARTER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// On SIGTERM, how long in-flight requests may take before the process exits [default: 25].
    #[arg(long, env = "CHARTER_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// On SIGTERM, how long to keep serving while `/api/health` answers 503, so load balancers stop sending first [default: 0].
    #[arg(long, env = "CHARTER_SHUTDOWN_DRAIN_SECS")]
    pub shutdown_drain_secs: Option<u64>,
    /// How often the push job runs, in seconds; 0 turns pushing off [default: 5].
    #[arg(long, env = "CHARTER_PUSH_INTERVAL_SECS")]
    pub push_interval_secs: Option<u64>,
    /// Deliveries in flight at once [default: 32].
    #[arg(long, env = "CHARTER_PUSH_CONCURRENCY")]
    pub push_concurrency: Option<usize>,
    /// Time limit of one delivery, in seconds [default: 10].
    #[arg(long, env = "CHARTER_PUSH_TIMEOUT_SECS")]
    pub push_timeout_secs: Option<u64>,
    /// How long a claimed instance stays leased to a replica, in seconds [default: 120].
    #[arg(long, env = "CHARTER_PUSH_LEASE_SECS")]
    pub push_lease_secs: Option<u64>,
    /// First retry delay after a failed delivery, in seconds; doubles each time [default: 10].
    #[arg(long, env = "CHARTER_PUSH_BACKOFF_BASE_SECS")]
    pub push_backoff_base_secs: Option<u64>,
    /// Longest retry delay, in seconds [default: 3600].
    #[arg(long, env = "CHARTER_PUSH_BACKOFF_MAX_SECS")]
    pub push_backoff_max_secs: Option<u64>,
    /// Allow pushes to loopback, private, link-local and other special addresses (demos and tests only; refused by default).
    #[arg(
        long,
        env = "CHARTER_PUSH_ALLOW_PRIVATE",
        conflicts_with = "push_refuse_private"
    )]
    #[serde(default)]
    pub push_allow_private: bool,
    /// Deprecated: refusing private addresses is the default now.
    #[arg(long, env = "CHARTER_PUSH_REFUSE_PRIVATE")]
    #[serde(default)]
    pub push_refuse_private: bool,
    /// Renewals allowed per license per window, on each node; 0 turns the limit off [default: 120].
    #[arg(long, env = "CHARTER_RENEW_LIMIT_PER_LICENSE")]
    pub renew_limit_per_license: Option<u32>,
    /// Renewal requests allowed per client address per window, on each node; 0 turns the limit off [default: 600].
    #[arg(long, env = "CHARTER_RENEW_LIMIT_PER_ADDRESS")]
    pub renew_limit_per_address: Option<u32>,
    /// The window of the renewal limits, in seconds [default: 60].
    #[arg(long, env = "CHARTER_RENEW_LIMIT_WINDOW_SECS")]
    pub renew_limit_window_secs: Option<u64>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (comma-separated addresses or CIDRs); the client address keys the rate limits and the audit [default: none].
    #[arg(long, env = "CHARTER_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// The master key that seals signing keys and push credentials: 32 bytes or their base64 [default: <keys-dir>/master.key].
    #[arg(long, env = "CHARTER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Algorithm of new signing keys: `rs256` (RSA-2048) or `eddsa` (Ed25519) [default: rs256].
    #[arg(long, env = "CHARTER_KEY_ALG")]
    pub key_alg: Option<String>,
    /// How long a new signing key is published before it signs, in hours (fractions allowed) [default: 48].
    #[arg(long, env = "CHARTER_KEY_PREPUBLISH_HOURS")]
    pub key_prepublish_hours: Option<f64>,
    /// Rotate the signing key every this many days (fractions allowed); 0 turns scheduled rotation off [default: 0].
    #[arg(long, env = "CHARTER_KEY_ROTATION_DAYS")]
    pub key_rotation_days: Option<f64>,
    /// How often each replica re-reads the key set and runs the key schedule, in seconds [default: 5].
    #[arg(long, env = "CHARTER_KEY_POLL_SECS")]
    pub key_poll_secs: Option<u64>,
    /// Days of token history kept: older tokens are pruned unless an instance still holds them (its current or pending token); 0 keeps all [default: 400].
    #[arg(long, env = "CHARTER_TOKEN_HISTORY_DAYS")]
    pub token_history_days: Option<i64>,
    /// Days of audit events kept; older ones are pruned [default: keep forever].
    #[arg(long, env = "CHARTER_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<i64>,
    /// Days events are kept once no delivery waits for them; older ones are pruned with their deliveries; 0 keeps all [default: 30].
    #[arg(long, env = "CHARTER_EVENT_RETENTION_DAYS")]
    pub event_retention_days: Option<i64>,
    /// Days of usage reports kept as sent; older ones are rolled up into one report per instance and day with each counter's maximum [default: 400].
    #[arg(long, env = "CHARTER_USAGE_RETENTION_DAYS")]
    pub usage_retention_days: Option<i64>,
    /// How often the prune job runs, in seconds [default: 3600].
    #[arg(long, env = "CHARTER_PRUNE_INTERVAL_SECS")]
    pub prune_interval_secs: Option<u64>,
    /// How often the webhook delivery job looks for due deliveries, in seconds (new events of this replica wake it at once); 0 turns delivery off [default: 2].
    #[arg(long, env = "CHARTER_WEBHOOK_INTERVAL_SECS")]
    pub webhook_interval_secs: Option<u64>,
    /// Time limit of one webhook delivery, in seconds [default: 10].
    #[arg(long, env = "CHARTER_WEBHOOK_TIMEOUT_SECS")]
    pub webhook_timeout_secs: Option<u64>,
    /// Delays before each retry of a failed webhook delivery, in seconds, comma-separated (±20% jitter); after the last the delivery fails [default: 5,300,1800,7200,18000,36000,36000].
    #[arg(long, env = "CHARTER_WEBHOOK_RETRY_SCHEDULE")]
    pub webhook_retry_schedule: Option<String>,
    /// How often the scheduler announces expiring and expired licenses and checks usage against included counts, in seconds; 0 turns it off [default: 60].
    #[arg(long, env = "CHARTER_EVENTS_INTERVAL_SECS")]
    pub events_interval_secs: Option<u64>,
    /// Do not apply migrations at start (when `charter migrate` runs them).
    #[arg(long, env = "CHARTER_NO_MIGRATE")]
    #[serde(default)]
    pub no_migrate: bool,
}

/// A secret whose `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: String,
    pub database_url: Secret,
    pub keys_dir: PathBuf,
    pub admin_user: String,
    pub admin_password: Option<Secret>,
    pub renew_grace_days: i64,
    pub token_ttl_days: i64,
    pub max_body_bytes: usize,
    pub http: crate::http::Limits,
    pub json_logs: bool,
    pub migrate: bool,
    pub shutdown_grace: std::time::Duration,
    pub shutdown_drain: std::time::Duration,
    pub push: PushConfig,
    pub renew_limits: crate::ratelimit::RenewLimits,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub keys: KeyPolicy,
    /// What is pruned, and when.
    pub retention: Retention,
    pub webhooks: WebhookConfig,
}

/// The signing keys' settings.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub master_key_file: PathBuf,
    /// The algorithm of keys made from now on.
    pub alg: charter_token::KeyAlg,
    /// How long a new key is published before it signs.
    pub prepublish_secs: i64,
    /// Scheduled rotation: a new key signs this long after the last one did.
    pub rotation_secs: Option<i64>,
    /// How often the key set is re-read and its schedule run.
    pub poll: std::time::Duration,
}

impl KeyPolicy {
    fn from_args(a: &ServeArgs, keys_dir: &std::path::Path) -> anyhow::Result<KeyPolicy> {
        let alg = match a.key_alg.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("rs256") => charter_token::KeyAlg::Rs256,
            Some("eddsa") | Some("ed25519") => charter_token::KeyAlg::EdDsa,
            Some(other) => bail!("key_alg must be rs256 or eddsa, not {other:?}"),
        };
        let hours = a.key_prepublish_hours.unwrap_or(48.0);
        if !(0.0..=8760.0).contains(&hours) {
            bail!("key_prepublish_hours must be between 0 and 8760, not {hours}");
        }
        let prepublish_secs = (hours * 3600.0).round() as i64;
        let days = a.key_rotation_days.unwrap_or(0.0);
        if !(0.0..=3650.0).contains(&days) {
            bail!("key_rotation_days must be between 0 (off) and 3650, not {days}");
        }
        let rotation_secs = (days > 0.0).then(|| (days * 86_400.0).round() as i64);
        if rotation_secs.is_some_and(|r| r <= prepublish_secs) {
            bail!(
                "key_rotation_days ({days}) must be longer than key_prepublish_hours ({hours} h): a key is published that long before it signs"
            );
        }
        let poll = a.key_poll_secs.unwrap_or(5);
        if !(1..=300).contains(&poll) {
            bail!("key_poll_secs must be between 1 and 300, not {poll}");
        }
        Ok(KeyPolicy {
            master_key_file: a
                .master_key_file
                .clone()
                .unwrap_or_else(|| crate::sealed::default_path(keys_dir)),
            alg,
            prepublish_secs,
            rotation_secs,
            poll: std::time::Duration::from_secs(poll),
        })
    }
}

/// Retention of token history and audit events (`None`: kept forever),
/// and of usage reports as sent (older ones are rolled up, not dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub token_history_days: Option<i64>,
    pub audit_days: Option<i64>,
    /// Events no delivery waits for, kept this many days.
    pub event_days: Option<i64>,
    pub usage_days: i64,
    /// How often the prune job runs.
    pub every: std::time::Duration,
}

impl ServeArgs {
    /// Fills what flags and environment left unset from the TOML file.
    fn merge_file(mut self) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let file: ServeArgs =
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = file.$f; } )* };
        }
        fill!(
            listen,
            public_url,
            database_url,
            keys_dir,
            admin_user,
            admin_password,
            renew_grace_days,
            token_ttl_days,
            max_body_bytes,
            request_timeout_secs,
            max_connections,
            log_format,
            shutdown_grace_secs,
            shutdown_drain_secs,
            push_interval_secs,
            push_concurrency,
            push_timeout_secs,
            push_lease_secs,
            push_backoff_base_secs,
            push_backoff_max_secs,
            renew_limit_per_license,
            renew_limit_per_address,
            renew_limit_window_secs,
            trusted_proxies,
            master_key_file,
            key_alg,
            key_prepublish_hours,
            key_rotation_days,
            key_poll_secs,
            token_history_days,
            audit_retention_days,
            event_retention_days,
            usage_retention_days,
            prune_interval_secs,
            webhook_interval_secs,
            webhook_timeout_secs,
            webhook_retry_schedule,
            events_interval_secs
        );
        self.no_migrate |= file.no_migrate;
        self.push_refuse_private |= file.push_refuse_private;
        self.push_allow_private |= file.push_allow_private;
        Ok(self)
    }
}

impl Config {
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Self> {
        let a = args.merge_file()?;
        let keys_dir: PathBuf = a.keys_dir.clone().unwrap_or_else(|| "keys".into());
        let keys = KeyPolicy::from_args(&a, &keys_dir)?;
        let webhooks = WebhookConfig::from_args(&a, !a.push_allow_private)?;
        let listen = a
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let public_url = match a.public_url {
            Some(u) => charter_token::InstanceUrl::parse(&u)
                .map_err(|e| anyhow::anyhow!("public_url: {e}"))?
                .to_string(),
            None => format!("http://{listen}/"),
        };
        let renew_grace_days = a.renew_grace_days.unwrap_or(30);
        if !(0..=3650).contains(&renew_grace_days) {
            bail!("renew_grace_days must be between 0 and 3650, not {renew_grace_days}");
        }
        let token_ttl_days = a.token_ttl_days.unwrap_or(7);
        if !(1..=3650).contains(&token_ttl_days) {
            bail!("token_ttl_days must be between 1 and 3650, not {token_ttl_days}");
        }
        let json_logs = match a.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => bail!("log_format must be text or json, not {other:?}"),
        };
        let admin_user = a.admin_user.unwrap_or_else(|| "admin".into());
        if admin_user.is_empty() || admin_user.contains(':') {
            bail!("admin_user must be non-empty and contain no ':'");
        }
        if a.admin_password.as_deref().is_some_and(|p| p.len() < 8) {
            bail!("admin_password must have at least 8 characters");
        }
        let http = crate::http::Limits {
            request_timeout: std::time::Duration::from_secs(a.request_timeout_secs.unwrap_or(30)),
            max_connections: a.max_connections.unwrap_or(4096),
        };
        if !(1..=3600).contains(&http.request_timeout.as_secs()) {
            bail!(
                "request_timeout_secs must be between 1 and 3600, not {}",
                http.request_timeout.as_secs()
            );
        }
        if !(1..=1_000_000).contains(&http.max_connections) {
            bail!(
                "max_connections must be between 1 and 1000000, not {}",
                http.max_connections
            );
        }
        if a.push_allow_private && a.push_refuse_private {
            bail!("push_allow_private and push_refuse_private contradict each other");
        }
        let secs = std::time::Duration::from_secs;
        let push = PushConfig {
            interval: secs(a.push_interval_secs.unwrap_or(5)),
            concurrency: a.push_concurrency.unwrap_or(32),
            timeout: secs(a.push_timeout_secs.unwrap_or(10)),
            lease: secs(a.push_lease_secs.unwrap_or(120)),
            backoff_base: secs(a.push_backoff_base_secs.unwrap_or(10)),
            backoff_max: secs(a.push_backoff_max_secs.unwrap_or(3600)),
            refuse_private: !a.push_allow_private,
            batch: 0,
        };
        // Claim what can be delivered soon, so a claim never outlives its lease waiting.
        let mut push = push;
        push.batch = (push.concurrency as i64 * 2).max(8);
        if !(1..=1024).contains(&push.concurrency) {
            bail!(
                "push_concurrency must be between 1 and 1024, not {}",
                push.concurrency
            );
        }
        if push.timeout.is_zero() || push.lease <= push.timeout {
            bail!("push_timeout_secs must be at least 1 and push_lease_secs longer than it");
        }
        let defaults = crate::ratelimit::RenewLimits::default();
        let renew_limits = crate::ratelimit::RenewLimits {
            per_license: a.renew_limit_per_license.unwrap_or(defaults.per_license),
            per_address: a.renew_limit_per_address.unwrap_or(defaults.per_address),
            window: secs(
                a.renew_limit_window_secs
                    .unwrap_or(defaults.window.as_secs()),
            ),
        };
        if !(1..=86_400).contains(&renew_limits.window.as_secs()) {
            bail!(
                "renew_limit_window_secs must be between 1 and 86400, not {}",
                renew_limits.window.as_secs()
            );
        }
        let trusted_proxies = parse_proxies(a.trusted_proxies.as_deref().unwrap_or(""))?;
        let token_history_days = a.token_history_days.unwrap_or(400);
        if !(0..=36_500).contains(&token_history_days) {
            bail!(
                "token_history_days must be between 0 (keep all) and 36500, not {token_history_days}"
            );
        }
        if let Some(days) = a.audit_retention_days
            && !(1..=36_500).contains(&days)
        {
            bail!("audit_retention_days must be between 1 and 36500, not {days}");
        }
        let usage_days = a.usage_retention_days.unwrap_or(400);
        if !(1..=36_500).contains(&usage_days) {
            bail!("usage_retention_days must be between 1 and 36500, not {usage_days}");
        }
        let every = a.prune_interval_secs.unwrap_or(3600);
        if !(1..=86_400 * 7).contains(&every) {
            bail!("prune_interval_secs must be between 1 and 604800, not {every}");
        }
        let event_days = a.event_retention_days.unwrap_or(30);
        if !(0..=36_500).contains(&event_days) {
            bail!("event_retention_days must be between 0 and 36500, not {event_days}");
        }
        let retention = Retention {
            token_history_days: (token_history_days > 0).then_some(token_history_days),
            audit_days: a.audit_retention_days,
            event_days: (event_days > 0).then_some(event_days),
            usage_days,
            every: std::time::Duration::from_secs(every),
        };
        Ok(Config {
            listen,
            public_url,
            database_url: Secret(
                a.database_url
                    .unwrap_or_else(|| "sqlite://data/charter.db".into()),
            ),
            keys_dir,
            admin_user,
            admin_password: a.admin_password.map(Secret),
            renew_grace_days,
            token_ttl_days,
            max_body_bytes: a.max_body_bytes.unwrap_or(64 * 1024),
            http,
            json_logs,
            migrate: !a.no_migrate,
            shutdown_grace: std::time::Duration::from_secs(a.shutdown_grace_secs.unwrap_or(25)),
            shutdown_drain: std::time::Duration::from_secs(a.shutdown_drain_secs.unwrap_or(0)),
            push,
            renew_limits,
            trusted_proxies,
            keys,
            retention,
            webhooks,
        })
    }
}

/// `10.0.0.0/8, 192.168.1.7, ::1`: networks, a bare address meaning itself.
fn parse_proxies(list: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    anyhow::anyhow!("trusted_proxies: {s:?} is not an IP address or CIDR network")
                })
        })
        .collect()
}

/// Settings of webhook delivery and of the event scheduler.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// How often the delivery job runs; zero disables it.
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    /// How long a claimed delivery stays leased to a replica.
    pub lease: std::time::Duration,
    /// The delay before each retry, in seconds.
    pub retry_schedule: Vec<u64>,
    /// Refuse endpoints at loopback, private and other special addresses
    /// (the push setting: `--push-allow-private` allows both).
    pub refuse_private: bool,
    pub concurrency: usize,
    /// How often expiries are announced and usage checked; zero disables it.
    pub events_interval: std::time::Duration,
}

impl WebhookConfig {
    fn from_args(a: &ServeArgs, refuse_private: bool) -> anyhow::Result<Self> {
        let secs = std::time::Duration::from_secs;
        let timeout = a.webhook_timeout_secs.unwrap_or(10);
        if !(1..=300).contains(&timeout) {
            bail!("webhook_timeout_secs must be between 1 and 300, not {timeout}");
        }
        let retry_schedule = match &a.webhook_retry_schedule {
            None => vec![5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            Some(text) => text
                .split(',')
                .map(|p| p.trim().parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= 50 && v.iter().all(|d| (1..=604_800).contains(d)))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "webhook_retry_schedule must be 1 to 50 comma-separated delays of 1 to 604800 seconds, not {text:?}"
                    )
                })?,
        };
        Ok(WebhookConfig {
            interval: secs(a.webhook_interval_secs.unwrap_or(2)),
            timeout: secs(timeout),
            lease: secs(timeout * 2 + 5),
            retry_schedule,
            refuse_private,
            concurrency: 16,
            events_interval: secs(a.events_interval_secs.unwrap_or(60)),
        })
    }
}

/// Settings of the push job.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// How often the job runs; zero disables it.
    pub interval: std::time::Duration,
    pub concurrency: usize,
    pub timeout: std::time::Duration,
    pub lease: std::time::Duration,
    pub backoff_base: std::time::Duration,
    pub backoff_max: std::time::Duration,
    /// Refuse to deliver to loopback, private and link-local addresses.
    pub refuse_private: bool,
    /// Instances claimed per database round trip.
    pub batch: i64,
}

#[cfg(test)]
mod push_defaults {
    use super::*;

    #[test]
    fn private_push_targets_are_refused_unless_allowed() {
        let c = Config::from_args(ServeArgs::default()).expect("defaults");
        assert!(c.push.refuse_private, "refused by default");
        let c = Config::from_args(ServeArgs {
            push_allow_private: true,
            ..Default::default()
        })
        .expect("allowed");
        assert!(!c.push.refuse_private);
        let both = Config::from_args(ServeArgs {
            push_allow_private: true,
            push_refuse_private: true,
            ..Default::default()
        });
        assert!(both.is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_toml_key_reaches_the_config_and_flags_win() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("charter.toml");
        std::fs::write(
            &path,
            r#"
listen = "0.0.0.0:9000"
public_url = "https://license.example.com"
database_url = "postgres://charter@db/charter"
keys_dir = "/etc/charter/keys"
admin_user = "root"
admin_password = "from-the-file"
renew_grace_days = 10
token_ttl_days = 3
max_body_bytes = 1000
log_format = "json"
shutdown_grace_secs = 7
shutdown_drain_secs = 2
push_interval_secs = 9
push_concurrency = 3
push_timeout_secs = 4
push_lease_secs = 40
push_backoff_base_secs = 2
push_backoff_max_secs = 60
push_refuse_private = true
no_migrate = true
renew_limit_per_license = 11
renew_limit_per_address = 12
renew_limit_window_secs = 13
trusted_proxies = "10.0.0.0/8, 192.168.1.7"
token_history_days = 30
audit_retention_days = 90
usage_retention_days = 200
prune_interval_secs = 60
"#,
        )
        .expect("write");
        let c = Config::from_args(ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(c.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(c.public_url, "https://license.example.com/");
        assert_eq!(c.database_url.0, "postgres://charter@db/charter");
        assert_eq!(c.keys_dir, PathBuf::from("/etc/charter/keys"));
        assert_eq!(c.admin_user, "root");
        assert_eq!(c.admin_password, Some(Secret("from-the-file".into())));
        assert_eq!((c.renew_grace_days, c.token_ttl_days), (10, 3));
        assert_eq!(c.max_body_bytes, 1000);
        assert!(c.json_logs);
        assert_eq!(c.shutdown_grace, std::time::Duration::from_secs(7));
        assert_eq!(c.shutdown_drain, std::time::Duration::from_secs(2));
        let p = &c.push;
        assert_eq!(
            (p.interval.as_secs(), p.concurrency, p.timeout.as_secs()),
            (9, 3, 4)
        );
        assert_eq!(
            (
                p.lease.as_secs(),
                p.backoff_base.as_secs(),
                p.backoff_max.as_secs()
            ),
            (40, 2, 60)
        );
        assert!(p.refuse_private);
        assert!(!c.migrate);
        assert_eq!(
            (
                c.renew_limits.per_license,
                c.renew_limits.per_address,
                c.renew_limits.window.as_secs()
            ),
            (11, 12, 13)
        );
        assert_eq!(
            c.trusted_proxies,
            vec![
                "10.0.0.0/8".parse::<ipnet::IpNet>().expect("net"),
                "192.168.1.7/32".parse().expect("net")
            ]
        );
        assert_eq!(
            c.retention,
            Retention {
                token_history_days: Some(30),
                audit_days: Some(90),
                event_days: Some(30),
                usage_days: 200,
                every: std::time::Duration::from_secs(60),
            }
        );
        assert_eq!(format!("{:?}", c.admin_password), "Some([redacted])");

        let c = Config::from_args(ServeArgs {
            config: Some(path),
            token_ttl_days: Some(5),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(c.token_ttl_days, 5, "a flag or variable wins over the file");
    }

    #[test]
    fn trusted_proxies_must_be_addresses_or_networks() {
        assert_eq!(
            parse_proxies(" ::1 , 172.16.0.0/12,").expect("valid"),
            vec![
                "::1/128".parse::<ipnet::IpNet>().expect("net"),
                "172.16.0.0/12".parse().expect("net")
            ]
        );
        // A host address with a prefix names its network.
        assert_eq!(
            parse_proxies("10.1.2.3/8").expect("valid"),
            vec!["10.0.0.0/8".parse::<ipnet::IpNet>().expect("net")]
        );
        let e = parse_proxies("10.0.0.0/8,proxy.local").expect_err("a name");
        assert!(e.to_string().contains("\"proxy.local\""), "{e}");
        assert!(parse_proxies("").expect("empty").is_empty());
    }
}
