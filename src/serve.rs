//! `charter serve` and `charter migrate`: start-up, and the server handle
//! the integration tests use.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, auth::AdminAuth, auth::AuthLimiter};
pub use crate::config::ServeArgs;
use crate::config::{Config, Secret};
use crate::db::{self, Store};

/// Flags of `charter migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// `sqlite://PATH` or `postgres://...` [default: sqlite://data/charter.db].
    #[arg(long, env = "CHARTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// The setting that keeps a generated admin password's hash.
const ADMIN_HASH_SETTING: &str = "admin_password_hash";

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::from_args(args)?;
    init_logging(config.json_logs);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (grace, drain) = (config.shutdown_grace, config.shutdown_drain);
        let server = start(config).await?;
        tracing::info!(addr = %server.addr, "charter issuer listening");
        shutdown_signal().await;
        if !drain.is_zero() {
            server
                .state
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                drain_secs = drain.as_secs(),
                "draining: health answers 503, still serving"
            );
            tokio::time::sleep(drain).await;
        }
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new connections, finishing requests in flight"
        );
        match tokio::time::timeout(grace, server.stop()).await {
            Ok(result) => {
                result?;
                tracing::info!("stopped");
            }
            Err(_) => {
                tracing::warn!("shutdown grace elapsed with requests still in flight; exiting")
            }
        }
        Ok(())
    })
}

pub fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    init_logging(false);
    let url = args
        .database_url
        .unwrap_or_else(|| "sqlite://data/charter.db".into());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = db::open(&url, true).await?;
        tracing::info!(database = %db::redact_url(&url), backend = store.backend(), "migrations applied");
        Ok(())
    })
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHARTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not take requests down: tracing would report
        // the failed write with eprintln!, which panics on a broken pipe.
        .log_internal_errors(false);
    // A second init (tests) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The admin's credentials: the configured password, or the one generated on
/// first start (printed once, kept only as a hash).
async fn admin_auth(config: &Config, store: &dyn Store) -> anyhow::Result<AdminAuth> {
    let hash = match &config.admin_password {
        Some(Secret(password)) => {
            let password = password.clone();
            tokio::task::spawn_blocking(move || AdminAuth::hash_password(&password)).await??
        }
        None => match store.get_setting(ADMIN_HASH_SETTING).await? {
            Some(hash) => hash,
            None => {
                let mut raw = [0u8; 18];
                aws_lc_rs::rand::fill(&mut raw).map_err(|_| anyhow::anyhow!("no randomness"))?;
                let password =
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
                let candidate = {
                    let p = password.clone();
                    tokio::task::spawn_blocking(move || AdminAuth::hash_password(&p)).await??
                };
                let stored = store.init_setting(ADMIN_HASH_SETTING, &candidate).await?;
                if stored == candidate {
                    // Printed once, to the terminal, never to the log.
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n  Generated admin password for user {:?}: {password}\n  \
                         It is shown only now; set CHARTER_ADMIN_PASSWORD to choose your own.\n",
                        config.admin_user
                    );
                }
                stored
            }
        },
    };
    Ok(AdminAuth::new(config.admin_user.clone(), hash))
}

/// A running issuer.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    scheduler: Option<tokio_cron_scheduler::JobScheduler>,
    key_schedule: JoinHandle<()>,
    /// The webhook delivery loop and the event scheduler.
    background: Vec<JoinHandle<()>>,
}

impl Server {
    /// Stops accepting, finishes in-flight requests, and returns.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.key_schedule.abort();
        for job in &self.background {
            job.abort();
        }
        if let Some(mut scheduler) = self.scheduler.take() {
            let _ = scheduler.shutdown().await;
        }
        self.task.await??;
        // A push run in progress finishes its deliveries.
        self.state.pusher.wait_idle().await;
        self.state.deliverer.wait_idle().await;
        Ok(())
    }
}

/// Runs the push job every `push_interval_secs` (none when 0), and the
/// prune job every `prune_interval_secs` (there is always something to do:
/// usage reports are rolled up after `--usage-retention-days`).
async fn start_push_job(
    state: &AppState,
) -> anyhow::Result<Option<tokio_cron_scheduler::JobScheduler>> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let interval = state.pusher.config.interval;
    let retention = state.config.retention;
    let scheduler = JobScheduler::new().await?;
    let job_state = state.clone();
    scheduler
        .add(Job::new_repeated_async(
            retention.every,
            move |_id, _lock| {
                let state = job_state.clone();
                Box::pin(async move {
                    if let Err(e) = crate::licensing::retention::run_once(&state).await {
                        tracing::warn!(error = %e, "prune run failed");
                    }
                })
            },
        )?)
        .await?;
    if interval.is_zero() {
        scheduler.start().await?;
        return Ok(Some(scheduler));
    }
    let job_state = state.clone();
    scheduler
        .add(Job::new_repeated_async(interval, move |_id, _lock| {
            let state = job_state.clone();
            Box::pin(async move {
                if let Err(e) = crate::licensing::push::run_once(&state).await {
                    tracing::warn!(error = %e, "push run failed");
                }
            })
        })?)
        .await?;
    scheduler.start().await?;
    tracing::info!(interval_secs = interval.as_secs(), "push job scheduled");
    Ok(Some(scheduler))
}

/// Re-reads the key set and runs its schedule every `--key-poll-secs`
/// (see [`crate::licensing::keys::maintain`]).
fn start_key_schedule(state: &AppState) -> JoinHandle<()> {
    let core = state.core.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(core.config.keys.poll);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = crate::licensing::keys::maintain(&core, charter_token::now()).await {
                tracing::warn!(error = %e, "the signing key schedule failed; retrying at the next poll");
            }
        }
    })
}

/// Delivers webhooks every `--webhook-interval-secs` (and at once when
/// this process queues a test), and announces expiries and checks usage
/// every `--events-interval-secs`; either is off at 0.
fn start_event_jobs(state: &AppState) -> Vec<JoinHandle<()>> {
    let mut jobs = Vec::new();
    let interval = state.deliverer.config.interval;
    if !interval.is_zero() {
        let core = state.core.clone();
        jobs.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = core.deliverer.wake.notified() => {}
                }
                match crate::licensing::webhooks::run_once(&core).await {
                    Ok(s) if s != crate::push::RunStats::default() => {
                        tracing::debug!(delivered = s.delivered, failed = s.failed, "webhook run");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "webhook run failed"),
                }
            }
        }));
    }
    let every = state.deliverer.config.events_interval;
    if !every.is_zero() {
        let core = state.core.clone();
        jobs.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                crate::licensing::webhooks::schedule_once(&core).await;
            }
        }));
    }
    jobs
}

/// Opens the store, loads the keys and starts serving on `config.listen`.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let store = db::open(&config.database_url.0, config.migrate)
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                db::redact_url(&config.database_url.0)
            )
        })?;
    tracing::info!(database = %db::redact_url(&config.database_url.0), backend = store.backend(), "database ready");
    let (sealer, keys) =
        crate::licensing::keys::bootstrap(&*store, &config.keys_dir, &config.keys).await?;
    {
        let ring = keys.get();
        tracing::info!(
            kid = ring.signing_key().kid(),
            alg = ring.signing_key().alg().as_str(),
            published = ring.public().len(),
            "signing keys loaded"
        );
    }
    let admin = admin_auth(&config, &*store).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let pusher = Arc::new(crate::push::Pusher::new(config.push.clone())?);
    let renew_limiter = Arc::new(crate::ratelimit::RenewLimiter::new(config.renew_limits));
    let deliverer = Arc::new(crate::licensing::webhooks::Deliverer::new(
        config.webhooks.clone(),
    )?);
    let state = AppState {
        core: crate::licensing::Licensing {
            pusher,
            sealer,
            store,
            keys: Arc::new(keys),
            config: Arc::new(config),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            renew_limiter,
            locks: Default::default(),
            deliverer,
        },
        admin: Arc::new(admin),
        draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        auth_limiter: Arc::new(AuthLimiter::default()),
        revocations: Default::default(),
    };
    let app = api::router_with(state.clone(), crate::portal::router());
    let (stop, mut stopped) = watch::channel(false);
    let limits = state.config.http;
    let task = tokio::spawn(crate::http::serve(listener, app, limits, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let scheduler = start_push_job(&state).await?;
    let key_schedule = start_key_schedule(&state);
    let background = start_event_jobs(&state);
    Ok(Server {
        addr,
        state,
        stop,
        task,
        scheduler,
        key_schedule,
        background,
    })
}
