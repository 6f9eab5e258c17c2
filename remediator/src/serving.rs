//! The gRPC client of the serving platform's `ServingControl` service:
//! a deadline on every call, retries only on `UNAVAILABLE` with backoff
//! within that deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use mlwatch_proto::v1::serving_control_client::ServingControlClient;
use mlwatch_proto::v1::{Deployment, GetDeploymentRequest, ScaleRequest, ScaleResponse};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

#[derive(Clone)]
pub struct Serving {
    client: ServingControlClient<Channel>,
    deadline: Duration,
}

impl Serving {
    /// A lazily connecting client of `endpoint` (e.g. `http://host:50051`).
    pub fn connect_lazy(endpoint: &str, deadline: Duration) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(deadline)
            .timeout(deadline)
            .connect_lazy();
        Ok(Self {
            client: ServingControlClient::new(channel),
            deadline,
        })
    }

    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(ServingControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match call(self.client.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) if status.code() == Code::Unavailable && started.elapsed() + backoff < self.deadline => {
                    tracing::debug!(%status, ?backoff, "serving platform unavailable, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(status) => return Err(status),
            }
        }
    }

    pub async fn get_deployment(&self, model: &str) -> Result<Deployment, Status> {
        let deadline = self.deadline;
        self.retrying(|mut c| {
            let mut req = tonic::Request::new(GetDeploymentRequest {
                model: model.to_string(),
            });
            req.set_timeout(deadline);
            async move { c.get_deployment(req).await }
        })
        .await
    }

    pub async fn scale(&self, request: ScaleRequest) -> Result<ScaleResponse, Status> {
        let deadline = self.deadline;
        self.retrying(|mut c| {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(deadline);
            async move { c.scale(req).await }
        })
        .await
    }
}
