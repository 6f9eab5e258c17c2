//! A simulated serving platform: a real tonic `ServingControl` server that
//! keeps replicas, versions and traffic per model, a latency model that
//! depends on load and replicas (so that a scale-up visibly fixes an
//! overload) and an accuracy per version (so that a rollback visibly fixes
//! a bad release). Mutating calls are deduplicated by request id; a test
//! can make the next calls answer `UNAVAILABLE`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mlwatch_proto::v1::serving_control_server::{ServingControl, ServingControlServer};
use mlwatch_proto::v1::{
    Deployment, GetDeploymentRequest, RollbackRequest, RollbackResponse, ScaleRequest, ScaleResponse,
    SetTrafficRequest, SetTrafficResponse,
};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status};

/// One simulated model.
#[derive(Debug, Clone)]
pub struct ModelSim {
    pub deployment: Deployment,
    /// Offered load, requests per second.
    pub load_rps: f64,
    /// Requests per second one replica serves comfortably.
    pub capacity_per_replica: f64,
    /// Latency of an idle replica, in milliseconds.
    pub base_latency_ms: f64,
    /// Share of correct predictions per version (versions not listed:
    /// no labels are generated for them).
    pub version_accuracy: HashMap<String, f64>,
    /// Seconds between a prediction and its ground-truth label, drawn
    /// uniformly from this range (`(0, 0)`: at once).
    pub label_delay_secs: (f64, f64),
    /// Shape of the `amount` feature: `1 + 499 u^amount_exponent` for a
    /// uniform `u`; 1.0 is the reference (uniform on [1, 500]), below 1
    /// shifts the mass to large amounts (covariate drift).
    pub amount_exponent: f64,
}

impl ModelSim {
    pub fn new(model: &str, version: &str, replicas: u32, load_rps: f64) -> Self {
        let mut traffic = HashMap::new();
        traffic.insert(version.to_string(), 100.0);
        Self {
            deployment: Deployment {
                model: model.into(),
                active_version: version.into(),
                replicas,
                min_replicas: 1,
                max_replicas: 16,
                previous_versions: vec![],
                traffic_percent: traffic,
            },
            load_rps,
            capacity_per_replica: 60.0,
            base_latency_ms: 20.0,
            version_accuracy: HashMap::new(),
            label_delay_secs: (0.0, 0.0),
            amount_exponent: 1.0,
        }
    }

    /// Labels arrive this many seconds (uniform in the range) after their
    /// prediction.
    pub fn with_label_delay_secs(mut self, min: f64, max: f64) -> Self {
        self.label_delay_secs = (min.max(0.0), max.max(min).max(0.0));
        self
    }

    /// Draws one label delay, in milliseconds.
    pub fn sample_label_delay_ms(&self, rng: &mut impl Rng) -> i64 {
        let (lo, hi) = self.label_delay_secs;
        let secs = if hi > lo { rng.random_range(lo..hi) } else { lo };
        (secs * 1000.0).round() as i64
    }

    /// Draws one `amount` feature value.
    pub fn sample_amount(&self, rng: &mut impl Rng) -> f64 {
        let u: f64 = rng.random_range(0.0..1.0);
        let amount = 1.0 + 499.0 * u.powf(self.amount_exponent);
        (amount * 100.0).round() / 100.0
    }

    /// Versions that were active before, oldest first (rollback targets).
    pub fn with_previous_versions(mut self, versions: &[&str]) -> Self {
        self.deployment.previous_versions = versions.iter().map(|v| v.to_string()).collect();
        self
    }

    /// The share of correct predictions of `version`.
    pub fn with_accuracy(mut self, version: &str, accuracy: f64) -> Self {
        self.version_accuracy
            .insert(version.to_string(), accuracy.clamp(0.0, 1.0));
        self
    }

    /// Accuracy of the active version, when known.
    pub fn accuracy(&self) -> Option<f64> {
        self.version_accuracy.get(&self.deployment.active_version).copied()
    }

    /// Utilisation of the replicas (load / capacity), capped at 0.98.
    pub fn utilisation(&self) -> f64 {
        let cap = f64::from(self.deployment.replicas.max(1)) * self.capacity_per_replica;
        (self.load_rps / cap).min(0.98)
    }

    /// Draws one request's latency: an M/M/1-like queueing delay, so
    /// latency explodes as utilisation nears 1.
    pub fn sample_latency_ms(&self, rng: &mut impl Rng) -> f64 {
        let mean = self.base_latency_ms / (1.0 - self.utilisation());
        let u: f64 = rng.random_range(1e-9..1.0);
        // Exponential around the mean, plus the fixed service time.
        self.base_latency_ms * 0.5 + (-u.ln()) * mean * 0.5
    }
}

/// Every mutating call the platform received, for assertions and display.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: &'static str,
    pub request_id: String,
    pub model: String,
    pub detail: String,
    pub duplicate: bool,
}

#[derive(Default)]
struct Inner {
    models: HashMap<String, ModelSim>,
    seen: HashSet<String>,
    calls: Vec<Call>,
    /// Mutating calls still to be answered `UNAVAILABLE`.
    fail_next: u32,
    /// Mutating calls answered `UNAVAILABLE` so far.
    unavailable_answers: u32,
    /// Mutating calls still to be applied at once but answered late.
    late_next: u32,
    late_by: std::time::Duration,
}

/// The simulated platform; cheap to clone.
#[derive(Clone, Default)]
pub struct SimPlatform {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::Notify>,
}

impl SimPlatform {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_model(&self, sim: ModelSim) {
        self.lock().models.insert(sim.deployment.model.clone(), sim);
    }

    pub fn model(&self, name: &str) -> Option<ModelSim> {
        self.lock().models.get(name).cloned()
    }

    pub fn set_load(&self, name: &str, load_rps: f64) {
        if let Some(m) = self.lock().models.get_mut(name) {
            m.load_rps = load_rps;
        }
    }

    /// Sets the share of correct predictions of `version` (a model
    /// version that starts predicting worse).
    pub fn set_accuracy(&self, name: &str, version: &str, accuracy: f64) {
        if let Some(m) = self.lock().models.get_mut(name) {
            m.version_accuracy.insert(version.to_string(), accuracy.clamp(0.0, 1.0));
        }
    }

    /// Sets the shape of the `amount` feature (see
    /// [`ModelSim::amount_exponent`]).
    pub fn set_amount_exponent(&self, name: &str, exponent: f64) {
        if let Some(m) = self.lock().models.get_mut(name) {
            m.amount_exponent = exponent;
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls that changed something (not answered as duplicates).
    pub fn applied_calls(&self) -> Vec<Call> {
        self.lock().calls.iter().filter(|c| !c.duplicate).cloned().collect()
    }

    /// The next `n` mutating calls are answered `UNAVAILABLE` (the platform
    /// is briefly away) without being applied.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// The next `n` mutating calls are applied at once but answered only
    /// after `by` (a platform slower than its client's deadline).
    pub fn answer_late(&self, n: u32, by: std::time::Duration) {
        let mut inner = self.lock();
        inner.late_next = n;
        inner.late_by = by;
    }

    /// Holds the answer of a call that must be late.
    async fn late(&self) {
        let wait = {
            let mut inner = self.lock();
            (inner.late_next > 0).then(|| {
                inner.late_next -= 1;
                inner.late_by
            })
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }

    /// How many mutating calls were answered `UNAVAILABLE`.
    pub fn unavailable_answers(&self) -> u32 {
        self.lock().unavailable_answers
    }

    /// Waits until a call arrives (or returns at once if `seen` < calls).
    pub async fn wait_for_calls(&self, seen: usize) {
        loop {
            let notified = self.changed.notified();
            if self.lock().calls.len() > seen {
                return;
            }
            notified.await;
        }
    }

    /// Serves `ServingControl` on `listen` until `shutdown`.
    pub async fn serve(&self, listen: SocketAddr, shutdown: CancellationToken) -> crate::Served {
        self.serve_with(listen, None, shutdown).await
    }

    /// [`Self::serve`] on a loopback port the OS picks; returns the address.
    pub async fn start(&self, shutdown: &CancellationToken) -> SocketAddr {
        crate::started(self.serve(crate::loopback(), shutdown.clone()).await)
    }

    /// Serves `ServingControl` over TLS (mutual TLS when `tls` names a
    /// client CA) on `listen` until `shutdown`.
    pub async fn serve_tls(
        &self,
        listen: SocketAddr,
        tls: ServerTlsConfig,
        shutdown: CancellationToken,
    ) -> crate::Served {
        self.serve_with(listen, Some(tls), shutdown).await
    }

    async fn serve_with(
        &self,
        listen: SocketAddr,
        tls: Option<ServerTlsConfig>,
        shutdown: CancellationToken,
    ) -> crate::Served {
        let (listener, addr) = crate::bind(listen).await?;
        let svc = ServingControlServer::new(self.clone());
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(error) = builder
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
                .await
            {
                tracing::error!(%error, "simulated serving platform failed");
            }
        });
        Ok((addr, task))
    }

    fn mutate(
        &self,
        method: &'static str,
        request_id: &str,
        model: &str,
        detail: String,
        apply: impl FnOnce(&mut ModelSim) -> Result<(), Status>,
    ) -> Result<(Deployment, bool), Status> {
        if request_id.is_empty() {
            return Err(Status::invalid_argument("request_id: required on mutating calls"));
        }
        let mut inner = self.lock();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            inner.unavailable_answers += 1;
            return Err(Status::unavailable("simulated platform briefly unavailable"));
        }
        let duplicate = inner.seen.contains(request_id);
        let Some(sim) = inner.models.get_mut(model) else {
            return Err(Status::not_found(format!("model: {model:?} is not deployed")));
        };
        if !duplicate {
            apply(sim)?;
        }
        let deployment = sim.deployment.clone();
        inner.seen.insert(request_id.to_string());
        inner.calls.push(Call {
            method,
            request_id: request_id.to_string(),
            model: model.to_string(),
            detail,
            duplicate,
        });
        drop(inner);
        self.changed.notify_waiters();
        Ok((deployment, duplicate))
    }
}

#[tonic::async_trait]
impl ServingControl for SimPlatform {
    async fn get_deployment(&self, request: Request<GetDeploymentRequest>) -> Result<Response<Deployment>, Status> {
        let model = request.into_inner().model;
        self.model(&model)
            .map(|m| Response::new(m.deployment))
            .ok_or_else(|| Status::not_found(format!("model: {model:?} is not deployed")))
    }

    async fn scale(&self, request: Request<ScaleRequest>) -> Result<Response<ScaleResponse>, Status> {
        let r = request.into_inner();
        let replicas = r.replicas;
        let (deployment, duplicate) =
            self.mutate("Scale", &r.request_id, &r.model, format!("replicas={replicas}"), |m| {
                let d = &mut m.deployment;
                if replicas < d.min_replicas || replicas > d.max_replicas {
                    return Err(Status::out_of_range(format!(
                        "replicas: {replicas} outside [{}, {}]",
                        d.min_replicas, d.max_replicas
                    )));
                }
                d.replicas = replicas;
                Ok(())
            })?;
        self.late().await;
        Ok(Response::new(ScaleResponse {
            deployment: Some(deployment),
            duplicate,
        }))
    }

    async fn rollback(&self, request: Request<RollbackRequest>) -> Result<Response<RollbackResponse>, Status> {
        let r = request.into_inner();
        let to = r.to_version.clone();
        let (deployment, duplicate) = self.mutate("Rollback", &r.request_id, &r.model, format!("to={to:?}"), |m| {
            let d = &mut m.deployment;
            let target = if to.is_empty() {
                d.previous_versions
                    .last()
                    .cloned()
                    .ok_or_else(|| Status::failed_precondition("no previous version to roll back to"))?
            } else if d.previous_versions.contains(&to) {
                to.clone()
            } else {
                return Err(Status::not_found(format!("to_version: {to:?} was never deployed")));
            };
            let current = std::mem::replace(&mut d.active_version, target.clone());
            d.previous_versions.retain(|v| v != &target);
            d.previous_versions.push(current);
            d.traffic_percent.clear();
            d.traffic_percent.insert(target, 100.0);
            Ok(())
        })?;
        self.late().await;
        Ok(Response::new(RollbackResponse {
            deployment: Some(deployment),
            duplicate,
        }))
    }

    async fn set_traffic(&self, request: Request<SetTrafficRequest>) -> Result<Response<SetTrafficResponse>, Status> {
        let r = request.into_inner();
        let total: f64 = r.traffic_percent.values().sum();
        if (total - 100.0).abs() > 1e-6 {
            return Err(Status::invalid_argument(format!(
                "traffic_percent: sums to {total}, not 100"
            )));
        }
        let split = r.traffic_percent.clone();
        let (deployment, duplicate) =
            self.mutate("SetTraffic", &r.request_id, &r.model, format!("{split:?}"), |m| {
                m.deployment.traffic_percent = split.clone();
                Ok(())
            })?;
        self.late().await;
        Ok(Response::new(SetTrafficResponse {
            deployment: Some(deployment),
            duplicate,
        }))
    }
}
